//! Credentials kept out of the text a person reads: a URL's user information. Pure: no I/O.

use std::borrow::Cow;

/// `url` as an error may show it: what lies between its `://` (or its start) and its last `@`,
/// a user name and password, becomes `***`. The last `@`, not the first: in a URL whose password
/// holds an unencoded `@`, the first would leave the password's end in sight.
pub fn url_for_errors(url: &str) -> Cow<'_, str> {
    let start = url.find("://").map_or(0, |scheme| scheme + 3);
    match url[start..].rfind('@') {
        Some(at) => Cow::Owned(format!("{}***{}", &url[..start], &url[start + at..])),
        None => Cow::Borrowed(url),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_user_information_is_hidden_however_it_is_written() {
        for (url, shown) in [
            ("http://user:secretpw@[bad", "http://***@[bad"),
            ("https://user:pa@ss@host/api", "https://***@host/api"),
            ("ftp://secretpw@host", "ftp://***@host"),
            ("user:secretpw@host", "***@host"),
            (
                "https://api.coingecko.com/api/v3",
                "https://api.coingecko.com/api/v3",
            ),
            ("not a url", "not a url"),
        ] {
            assert_eq!(url_for_errors(url), shown, "{url}");
        }
    }
}
