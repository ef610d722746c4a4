//! Request authorization for Azure Blob Storage: every request is built here as a
//! [`Request`] — method, path, the `x-ms-*` headers (date and the pinned service version
//! included), conditional headers and body — and, with Shared Key, signed: an HMAC-SHA256 (the
//! `hmac` and `sha2` crates) of the canonical string Azure defines, keyed with the decoded
//! account key, in an `Authorization: SharedKey <account>:<signature>` header. The canonicalized
//! resource is `/<account><URL path>`, so a path-style (emulator) endpoint, whose path starts
//! with the account, names the account twice. With a SAS token nothing is signed here: the token
//! rides on the endpoint URL's query, which the HTTP client appends to every request.

use std::time::SystemTime;

use base64::Engine as _;
use hmac::{KeyInit, Mac};

use crate::providers::azure_blob::account::Credential;
use crate::providers::support::http::{Call, Method};

/// The Blob service REST version every request asks for (`x-ms-version`). Every operation used
/// here exists since 2012-02-12; 2021-12-02 is old enough for every Azurite of the last years
/// and still served by Azure. Its Shared Key rules sign a zero Content-Length as an empty
/// string (since 2015-02-21).
pub(crate) const VERSION: &str = "2021-12-02";

/// Signs requests (Shared Key) or leaves them to the SAS token in the endpoint URL.
pub(crate) struct Signer {
    /// The account name, for the Authorization header and the canonicalized resource.
    account: String,
    /// The decoded account key; `None` with a SAS token.
    key: Option<Vec<u8>>,
    /// The endpoint URL's path without a trailing `/` (`""`, or `/devstoreaccount1`).
    base_path: String,
}

impl Signer {
    pub(crate) fn new(account: &str, credential: &Credential, endpoint: &url::Url) -> Signer {
        Signer {
            account: account.to_owned(),
            key: match credential {
                Credential::SharedKey { key } => Some(key.clone()),
                Credential::Sas { .. } => None,
            },
            base_path: endpoint.path().trim_end_matches('/').to_owned(),
        }
    }
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("account", &self.account)
            .field("shared_key", &self.key.is_some())
            .finish_non_exhaustive()
    }
}

/// One request to the Blob service, ready to send: see [`Request::call`].
pub(crate) struct Request {
    method: Method,
    operation: &'static str,
    /// Below the endpoint: `/container/blob?comp=lease`.
    path_and_query: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Request {
    /// A request for `path` (`/container[/blob]`, already safe in a URL: container and blob
    /// names are validated to URL-safe characters) with an optional `query` (`comp=lease`).
    pub(crate) fn new(
        method: Method,
        path: &str,
        query: Option<&str>,
        operation: &'static str,
    ) -> Request {
        let path_and_query = match query {
            Some(q) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        Request {
            method,
            operation,
            path_and_query,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header (`x-ms-…`, `If-Match`, `If-None-Match` or `Content-Type`; names in lower
    /// case).
    pub(crate) fn header(mut self, name: &'static str, value: impl Into<String>) -> Request {
        self.headers.push((name, value.into()));
        self
    }

    /// Sets the body.
    pub(crate) fn body(mut self, body: Vec<u8>) -> Request {
        self.body = body;
        self
    }

    /// Adds the date and version headers and, with Shared Key, the signature.
    pub(crate) fn sign(mut self, signer: &Signer) -> Request {
        self.headers
            .push(("x-ms-date", httpdate::fmt_http_date(SystemTime::now())));
        self.headers.push(("x-ms-version", VERSION.to_owned()));
        if let Some(key) = &signer.key {
            let to_sign = self.string_to_sign(&signer.account, &signer.base_path);
            let signature = hmac_sha256(key, to_sign.as_bytes());
            self.headers.push((
                "authorization",
                format!("SharedKey {}:{signature}", signer.account),
            ));
        }
        self
    }

    /// The transport's view of this request.
    pub(crate) fn call(&self) -> Call<'_> {
        let mut call = Call::new(self.method, &self.path_and_query, self.operation);
        for (name, value) in &self.headers {
            call = call.header(name, value);
        }
        if !self.body.is_empty() || matches!(self.method, Method::Put) {
            call = call.body(&self.body);
        }
        call
    }

    fn get(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map_or("", |(_, v)| v.as_str())
    }

    /// Azure's Shared Key string-to-sign (service versions 2015-02-21 and later).
    fn string_to_sign(&self, account: &str, base_path: &str) -> String {
        let length = match self.body.len() {
            0 => String::new(),
            n => n.to_string(),
        };
        let mut s = format!(
            "{}\n\n\n{length}\n\n{}\n\n\n{}\n{}\n\n\n",
            self.method_name(),
            self.get("content-type"),
            self.get("if-match"),
            self.get("if-none-match"),
        );
        // Canonicalized headers: x-ms-*, lower case, sorted, whitespace folded.
        let mut ms: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(n, _)| n.to_ascii_lowercase().starts_with("x-ms-"))
            .map(|(n, v)| {
                let folded = v.split_whitespace().collect::<Vec<_>>().join(" ");
                (n.to_ascii_lowercase(), folded)
            })
            .collect();
        ms.sort();
        for (n, v) in ms {
            s.push_str(&format!("{n}:{v}\n"));
        }
        // Canonicalized resource: /account + the URL path, then each query parameter.
        let (path, query) = self
            .path_and_query
            .split_once('?')
            .unwrap_or((&self.path_and_query, ""));
        s.push_str(&format!("/{account}{base_path}{path}"));
        let mut params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.into_owned()))
            .collect();
        params.sort();
        let mut i = 0;
        while i < params.len() {
            let name = params[i].0.clone();
            let values: Vec<&str> = params[i..]
                .iter()
                .take_while(|(n, _)| *n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            i += values.len();
            s.push_str(&format!("\n{name}:{}", values.join(",")));
        }
        s
    }

    fn method_name(&self) -> &'static str {
        match self.method {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

/// Base64 of HMAC-SHA256(`key`, `data`).
fn hmac_sha256(key: &[u8], data: &[u8]) -> String {
    // HMAC takes keys of any length, so this never fails; an empty signature would only be
    // refused by the service.
    match hmac::Hmac::<sha2::Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_an_independent_implementation() {
        // python3 -c 'import hmac,hashlib,base64;print(base64.b64encode(hmac.new(
        //   base64.b64decode(KEY), b"PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Thu, 01 Jan 2026 00:00:00 GMT\nx-ms-version:2021-12-02\n/devstoreaccount1/devstoreaccount1/c1\nrestype:container", hashlib.sha256).digest()).decode())'
        let key = base64::engine::general_purpose::STANDARD
            .decode(crate::providers::azure_blob::account::DEV_KEY)
            .unwrap();
        let to_sign = "PUT\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:Thu, 01 Jan 2026 00:00:00 GMT\n\
                       x-ms-version:2021-12-02\n/devstoreaccount1/devstoreaccount1/c1\nrestype:container";
        assert_eq!(
            hmac_sha256(&key, to_sign.as_bytes()),
            "dHfAD7YbXIdUYqkvkelFwfaitTwQ285Y3fpJQIDbT+g="
        );
    }

    #[test]
    fn string_to_sign_path_style_with_conditions_and_body() {
        let r = Request::new(Method::Put, "/c1/le/g", Some("comp=lease"), "acquire")
            .header("x-ms-lease-action", "acquire")
            .header("if-match", "\"0x1\"")
            .header("x-ms-lease-duration", " 15 ")
            .header("x-ms-date", "Thu, 01 Jan 2026 00:00:00 GMT")
            .header("content-type", "application/json")
            .body(b"{}".to_vec());
        assert_eq!(
            r.string_to_sign("devstoreaccount1", "/devstoreaccount1"),
            "PUT\n\n\n2\n\napplication/json\n\n\n\"0x1\"\n\n\n\n\
             x-ms-date:Thu, 01 Jan 2026 00:00:00 GMT\nx-ms-lease-action:acquire\n\
             x-ms-lease-duration:15\n/devstoreaccount1/devstoreaccount1/c1/le/g\ncomp:lease"
        );
        let r = Request::new(Method::Get, "/c1/b", None, "leader");
        assert_eq!(
            r.string_to_sign("acct", ""),
            "GET\n\n\n\n\n\n\n\n\n\n\n\n/acct/c1/b"
        );
    }

    #[test]
    fn debug_shows_no_key_and_signatures_are_headers_only() {
        let cred = Credential::SharedKey {
            key: b"S3cr3t-k3y".to_vec(),
        };
        let url = url::Url::parse("https://acct.blob.core.windows.net").unwrap();
        let signer = Signer::new("acct", &cred, &url);
        assert!(!format!("{signer:?}").contains("S3cr3t"));
        let r = Request::new(Method::Get, "/c1/b", None, "leader").sign(&signer);
        let auth = r.get("authorization").to_owned();
        assert!(auth.starts_with("SharedKey acct:"), "{auth}");
        assert!(!format!("{:?}", r.call()).contains(&auth[15..]));
    }
}
