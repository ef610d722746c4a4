//! An ODBC connection string, parsed once into its attributes so the driver name can be
//! checked and shown, the password (`PWD=`, `Password=`, and any other secret-looking
//! attribute) redacted from driver messages, and nothing but the driver, server, port, database
//! and user ever printed.

/// An ODBC connection string, parsed once. Holds the password: never printed; see
/// [`ConnString::describe`] and [`ConnString::redact`].
#[derive(Clone)]
pub(crate) struct ConnString {
    /// The string handed to the driver manager: the caller's, ending in `;` (MariaDB
    /// Connector/ODBC 3.1 reads past the end of a last attribute that has none).
    pub(crate) text: String,
    /// `(KEY in upper case, value)` pairs, braces removed; `None` if it did not parse.
    attrs: Option<Vec<(String, String)>>,
}

/// Attributes shown by [`ConnString::describe`]: where the server is and who logs in.
const SHOWN: &[&str] = &[
    "DRIVER", "DSN", "SERVER", "HOST", "ADDRESS", "PORT", "DATABASE", "DB", "UID", "USER",
];

impl ConnString {
    pub(crate) fn parse(s: &str) -> ConnString {
        let trimmed = s.trim_end();
        let text = if trimmed.is_empty() || trimmed.ends_with(';') {
            trimmed.to_owned()
        } else {
            format!("{trimmed};")
        };
        ConnString {
            attrs: parse_attributes(s),
            text,
        }
    }

    /// Whether the string parsed (balanced braces, `key=value` attributes).
    pub(crate) fn is_valid(&self) -> bool {
        self.attrs.as_ref().is_some_and(|a| !a.is_empty())
    }

    /// The value of attribute `key` (upper case).
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.attrs
            .as_ref()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The driver named by `Driver=`, if any.
    pub(crate) fn driver(&self) -> Option<&str> {
        self.get("DRIVER").filter(|d| !d.is_empty())
    }

    /// `Driver={…};Server=…;Port=…;Database=…;UID=…` — the attributes that say where and who,
    /// never a password or any other attribute.
    pub(crate) fn describe(&self) -> String {
        let Some(attrs) = &self.attrs else {
            return "<unparsable ODBC connection string>".into();
        };
        let shown: Vec<String> = attrs
            .iter()
            .filter(|(k, _)| SHOWN.contains(&k.as_str()))
            .map(|(k, v)| format!("{k}={{{v}}}"))
            .collect();
        shown.join(";")
    }

    /// `text` with every secret attribute's value replaced by `***`: for driver messages,
    /// which should never echo a password but might.
    pub(crate) fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.secrets() {
            out = out.replace(secret, "***");
        }
        out
    }

    /// The values of attributes that look secret: `PWD`, `PASSWORD`, and any key naming a
    /// password, secret, token or key password.
    fn secrets(&self) -> Vec<&str> {
        let Some(attrs) = &self.attrs else {
            return Vec::new();
        };
        let mut secrets: Vec<&str> = attrs
            .iter()
            .filter(|(k, v)| {
                !v.is_empty()
                    && (k.contains("PWD")
                        || k.contains("PASSWORD")
                        || k.contains("SECRET")
                        || k.contains("TOKEN"))
            })
            .map(|(_, v)| v.as_str())
            .collect();
        // Longest first, so a secret containing another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets
    }
}

/// Parses `key=value;key={va;lue}` attributes; `None` for unbalanced braces or a part
/// without `=`.
fn parse_attributes(s: &str) -> Option<Vec<(String, String)>> {
    let mut attrs = Vec::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_whitespace());
        if rest.is_empty() {
            return Some(attrs);
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_ascii_uppercase();
        if key.is_empty() || key.contains(';') {
            return None;
        }
        let after = rest[eq + 1..].trim_start();
        let (value, remaining) = if let Some(braced) = after.strip_prefix('{') {
            let mut value = String::new();
            let mut chars = braced.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    if chars.peek().map(|&(_, c)| c) == Some('}') {
                        chars.next();
                        value.push('}');
                    } else {
                        end = Some(i + 1);
                        break;
                    }
                } else {
                    value.push(c);
                }
            }
            let end = end?;
            (value, &braced[end..])
        } else {
            let end = after.find(';').unwrap_or(after.len());
            (after[..end].trim_end().to_owned(), &after[end..])
        };
        attrs.push((key, value));
        rest = remaining;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_braces_and_redaction() {
        let c = ConnString::parse(
            "Driver={ODBC Driver 18 for SQL Server};Server=tcp:db,1433;UID=app;\
             PWD={p;w}}d?};Encrypt=yes;AccessToken=tok3n",
        );
        assert!(c.is_valid());
        assert_eq!(c.driver(), Some("ODBC Driver 18 for SQL Server"));
        assert_eq!(c.get("PWD"), Some("p;w}d?"));
        let shown = c.describe();
        assert!(
            shown.contains("tcp:db,1433") && shown.contains("UID={app}"),
            "{shown}"
        );
        assert!(!shown.contains("p;w") && !shown.contains("tok3n") && !shown.contains("Encrypt"));
        assert_eq!(
            c.redact("login p;w}d? failed, token tok3n"),
            "login *** failed, token ***"
        );
        assert!(c.text.ends_with(';'));
        assert!(!ConnString::parse("Driver={x;PWD=y").is_valid());
        assert!(!ConnString::parse("garbage").is_valid());
        assert_eq!(ConnString::parse("DSN=x;").text, "DSN=x;");
    }
}
