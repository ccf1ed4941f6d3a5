//! libpq connection strings as users write them, `postgres://` URIs and `key=value` lists:
//! tokio-postgres parses them, once the parameters only libpq knows are taken out.
//!
//! Problems are described without the string itself, which may hold a password.

use std::borrow::Cow;
use std::error::Error as _;

use percent_encoding::percent_decode_str;

/// A URI with a second `@` was cut at its first one, inside the password or the user name (most
/// likely): its connection error would show the rest as the host.
const MIS_ENCODED: &str = "it looks mis-encoded: it holds more than one @, and the first one ends the user name and password, so an @ in them cut them short; percent-encode them: @ as %40, : as %3A, / as %2F, ? as %3F, # as %23, % as %25, a space as %20 (postgres://ingest:p%40ss@db.example:5432/prices), or give the password in PGPASSWORD";

/// A connection string, split into what tokio-postgres understands and libpq's TLS parameters.
#[derive(Debug)]
pub struct ConnInfo {
    pub config: tokio_postgres::Config,
    pub sslmode: Option<String>,
    pub sslrootcert: Option<String>,
}

/// Parses a `postgres://` (or `postgresql://`) URI or a `key=value` list.
pub fn parse(text: &str) -> Result<ConnInfo, String> {
    let mut libpq_only = LibpqOnly::default();
    let rest = match uri_parts(text) {
        Some(_) if text.matches('@').count() > 1 => return Err(MIS_ENCODED.into()),
        Some((base, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|pair| !pair.is_empty() && !libpq_only.take_uri_pair(pair))
                .collect();
            libpq_only.check()?;
            if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        }
        None => {
            let pairs = key_values(text)?;
            let kept: Vec<String> = pairs
                .into_iter()
                .filter(|(key, value)| !libpq_only.take(key, Some(value.clone())))
                .map(|(key, value)| {
                    format!(
                        "{key}='{}'",
                        value.replace('\\', "\\\\").replace('\'', "\\'")
                    )
                })
                .collect();
            libpq_only.check()?;
            kept.join(" ")
        }
    };
    let config = rest.parse::<tokio_postgres::Config>().map_err(|e| {
        // tokio-postgres names the option at fault, never its value, in the cause.
        match e.source() {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        }
    })?;
    Ok(ConnInfo {
        config,
        sslmode: libpq_only.sslmode,
        sslrootcert: libpq_only.sslrootcert,
    })
}

#[derive(Default)]
struct LibpqOnly {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    not_utf8: Option<&'static str>,
}

impl LibpqOnly {
    /// Takes `key=value` from a URI's query when it is one of libpq's TLS parameters.
    fn take_uri_pair(&mut self, pair: &str) -> bool {
        let Some((key, value)) = pair.split_once('=') else {
            return false;
        };
        self.take(
            &percent_decode_str(key).decode_utf8_lossy(),
            percent_decode_str(value)
                .decode_utf8()
                .ok()
                .map(Cow::into_owned),
        )
    }

    /// `value` is `None` when it is not UTF-8.
    fn take(&mut self, key: &str, value: Option<String>) -> bool {
        let (slot, name) = match key {
            "sslmode" => (&mut self.sslmode, "sslmode"),
            "sslrootcert" => (&mut self.sslrootcert, "sslrootcert"),
            _ => return false,
        };
        match value {
            // As in libpq, an empty value is no value, and a later one replaces an earlier one.
            Some(value) => *slot = Some(value).filter(|v| !v.is_empty()),
            None => self.not_utf8 = Some(name),
        }
        true
    }

    fn check(&self) -> Result<(), String> {
        match self.not_utf8 {
            Some(name) => Err(format!("{name} is not UTF-8 once percent-decoded")),
            None => Ok(()),
        }
    }
}

/// A URI's text before its query, and the query; as tokio-postgres reads URIs, the first `@`
/// ends the credentials, and the query starts at the first `?` after them.
fn uri_parts(text: &str) -> Option<(&str, &str)> {
    let after_scheme = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| text.strip_prefix(scheme))?;
    let credentials = after_scheme.find('@').map_or(0, |at| at + 1);
    let start = text.len() - after_scheme.len() + credentials;
    Some(match text[start..].find('?') {
        Some(question) => (&text[..start + question], &text[start + question + 1..]),
        None => (text, ""),
    })
}

/// The pairs of a `key=value` list: values quoted with `'` or bare, `\` escaping the next character.
fn key_values(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(pairs);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| !c.is_whitespace() && *c != '=') {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if key.is_empty() || chars.next() != Some('=') {
            return Err(
                "not a URI (postgres://…) nor a list of key=value pairs such as host=… dbname=…"
                    .into(),
            );
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let quoted = chars.next_if_eq(&'\'').is_some();
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\'') if quoted => break,
                Some(c) if c.is_whitespace() && !quoted => break,
                Some('\\') => value.extend(chars.next()),
                Some(c) => value.push(c),
                None if quoted => {
                    return Err(format!("the value of {key} has no closing quote"));
                }
                None => break,
            }
        }
        pairs.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio_postgres::config::Host;

    fn tcp(hosts: &[&str]) -> Vec<Host> {
        hosts.iter().map(|h| Host::Tcp(h.to_string())).collect()
    }

    #[test]
    fn a_uri_with_every_parameter() {
        let info = parse(
            "postgresql://us%40er:p%40ss@db1:5433,db2:5434/my%20db?sslmode=verify-full&application_name=nightly&sslrootcert=%2Fetc%2Fssl%2Fmy%20ca.pem&connect_timeout=7&options=-c%20search_path%3Dcdc",
        )
        .unwrap();
        let config = &info.config;
        assert_eq!(config.get_user(), Some("us@er"));
        assert_eq!(config.get_password(), Some(&b"p@ss"[..]));
        assert_eq!(config.get_hosts(), tcp(&["db1", "db2"]));
        assert_eq!(config.get_ports(), [5433, 5434]);
        assert_eq!(config.get_dbname(), Some("my db"));
        assert_eq!(config.get_application_name(), Some("nightly"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(7)));
        assert_eq!(config.get_options(), Some("-c search_path=cdc"));
        assert_eq!(info.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(info.sslrootcert.as_deref(), Some("/etc/ssl/my ca.pem"));
    }

    #[test]
    fn a_key_value_list_with_quotes_and_escapes() {
        let info = parse(
            r"host=db.internal port = 6432 user=ingest password='it\'s a \\secret' dbname=prices sslmode=verify-ca sslrootcert='/etc/ssl/my ca.pem'",
        )
        .unwrap();
        assert_eq!(info.config.get_hosts(), tcp(&["db.internal"]));
        assert_eq!(info.config.get_ports(), [6432]);
        assert_eq!(info.config.get_password(), Some(&br"it's a \secret"[..]));
        assert_eq!(info.config.get_dbname(), Some("prices"));
        assert_eq!(info.sslmode.as_deref(), Some("verify-ca"));
        assert_eq!(info.sslrootcert.as_deref(), Some("/etc/ssl/my ca.pem"));
    }

    #[test]
    fn the_last_value_counts_and_an_empty_one_is_no_value() {
        let info =
            parse("postgres://h/db?sslmode=disable&sslmode=verify-full&sslrootcert=").unwrap();
        assert_eq!(info.sslmode.as_deref(), Some("verify-full"));
        assert_eq!(info.sslrootcert, None);
        let bare = parse("postgres://h/db?sslmode=require").unwrap();
        assert_eq!(bare.config.get_hosts(), tcp(&["h"]));
    }

    #[test]
    fn a_question_mark_in_the_password_does_not_start_the_query() {
        let info = parse("postgres://u:a?b@h/db?sslmode=verify-full").unwrap();
        assert_eq!(info.config.get_password(), Some(&b"a?b"[..]));
        assert_eq!(info.config.get_dbname(), Some("db"));
        assert_eq!(info.sslmode.as_deref(), Some("verify-full"));
    }

    #[test]
    fn problems_name_the_parameter_and_never_the_password() {
        for (text, expected) in [
            (
                "postgres://u:hunter2@h/db?sslcert=/c.pem",
                "unknown option `sslcert`",
            ),
            (
                "postgres://u:hunter2@h:port/db",
                "invalid value for option `port`",
            ),
            (
                "postgres://u:hunter2@h/db?sslrootcert=%FF",
                "sslrootcert is not UTF-8",
            ),
            ("host=h password='hunter2", "password has no closing quote"),
            ("hunter2", "not a URI"),
            ("postgres://u:hun@ter2@h/db", "mis-encoded"),
            ("postgres://u:hunter2@h/db?application_name=a@b", "%40"),
        ] {
            let problem = parse(text).unwrap_err();
            assert!(problem.contains(expected), "{text}: {problem}");
            assert!(!problem.contains("hunter2"), "{problem}");
        }
    }
}
