//! The query parameters of a connection URL given to [`crate::connect`]: each backend takes
//! the ones named like its builder methods, and whatever is left over is an error that names
//! the parameter (never its value, which could be a password someone put in the wrong place).
//! Durations are written the way people write them (`500ms`, `10s`, `2m`), parsed by
//! `humantime`.

use std::time::Duration;

use crate::error::{Error, Result};

/// The query parameters of one URL, consumed by name.
pub(crate) struct Params {
    backend: &'static str,
    pairs: Vec<(String, String)>,
}

impl Params {
    /// Parses an `a=1&b=2` query (percent-decoded). A parameter given twice is an error.
    pub(crate) fn parse(backend: &'static str, query: &str) -> Result<Params> {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            if pairs.iter().any(|(n, _)| *n == k) {
                return Err(Error::config(
                    "url",
                    format!("the {backend} URL parameter {k:?} is given twice"),
                ));
            }
            pairs.push((k.into_owned(), v.into_owned()));
        }
        Ok(Params { backend, pairs })
    }

    /// Removes and returns parameter `name`.
    pub(crate) fn take(&mut self, name: &str) -> Option<String> {
        let i = self.pairs.iter().position(|(k, _)| k == name)?;
        Some(self.pairs.remove(i).1)
    }

    /// Removes parameter `name` and parses it as a duration (`250ms`, `5s`, `1m 30s`).
    pub(crate) fn duration(&mut self, name: &'static str) -> Result<Option<Duration>> {
        self.take(name)
            .map(|v| {
                humantime::parse_duration(&v).map_err(|e| {
                    Error::config(
                        name,
                        format!("{v:?} is not a duration such as 500ms or 10s: {e}"),
                    )
                })
            })
            .transpose()
    }

    /// Removes parameter `name` and parses it as `true` or `false`.
    pub(crate) fn bool(&mut self, name: &'static str) -> Result<Option<bool>> {
        self.take(name)
            .map(|v| match v.as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(Error::config(name, format!("{v:?} is not true or false"))),
            })
            .transpose()
    }

    /// Removes parameter `name` and parses it as a whole number.
    pub(crate) fn u32(&mut self, name: &'static str) -> Result<Option<u32>> {
        self.take(name)
            .map(|v| {
                v.parse()
                    .map_err(|_| Error::config(name, format!("{v:?} is not a whole number")))
            })
            .transpose()
    }

    /// The TLS options: `tls` and `ca_file`.
    #[cfg(feature = "tls")]
    pub(crate) fn tls(&mut self) -> Result<crate::providers::support::tls::Tls> {
        let mode = self.take("tls");
        let ca = self.take("ca_file");
        crate::providers::support::tls::Tls::from_params(mode.as_deref(), ca.as_deref())
    }

    /// The parameters not taken, for a backend that passes them on to its client library.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn into_rest(self) -> Vec<(String, String)> {
        self.pairs
    }

    /// An error naming the first parameter not taken, if any; `known` lists the backend's.
    pub(crate) fn finish(self, known: &[&str]) -> Result<()> {
        match self.pairs.first() {
            None => Ok(()),
            Some((name, _)) => Err(Error::config(
                "url",
                format!(
                    "unknown {} URL parameter {name:?}; known are: {}",
                    self.backend,
                    known.join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_known_and_refuses_the_rest_without_values() {
        let mut p = Params::parse(
            "redis",
            "key_prefix=a%3Ab&command_timeout=250ms&passwd=s3cret",
        )
        .unwrap();
        assert_eq!(p.take("key_prefix").as_deref(), Some("a:b"));
        assert_eq!(
            p.duration("command_timeout").unwrap(),
            Some(Duration::from_millis(250))
        );
        let e = p.finish(&["key_prefix"]).unwrap_err().to_string();
        assert!(e.contains("passwd") && !e.contains("s3cret"), "{e}");
    }

    #[test]
    fn bad_values_name_the_parameter() {
        let mut p = Params::parse("x", "fail_fast=maybe&pool_size=-1&t=10").unwrap();
        assert!(
            p.bool("fail_fast")
                .unwrap_err()
                .to_string()
                .contains("fail_fast")
        );
        assert!(
            p.u32("pool_size")
                .unwrap_err()
                .to_string()
                .contains("pool_size")
        );
        assert!(
            p.duration("t")
                .unwrap_err()
                .to_string()
                .contains("duration")
        );
        assert!(Params::parse("x", "a=1&a=2").is_err());
    }
}
