//! The RDS IAM authentication token: a SigV4-presigned `connect` request for one database user,
//! which RDS (and RDS Proxy) takes as the password for 15 minutes. Pure: the credentials and the
//! time are given, so the token is the same for the same inputs.

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{
    sign, SignableBody, SignableRequest, SignatureLocation, SigningSettings,
};
use aws_sigv4::sign::v4;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use secrecy::SecretString;
use tracing::subscriber::NoSubscriber;

/// How long RDS accepts a token after it was signed: the most it allows.
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// SigV4's URI encoding: everything but the unreserved characters.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// What a token lets in: one user at one endpoint, in the endpoint's region.
#[derive(Debug, Clone, Copy)]
pub struct TokenFor<'a> {
    pub host: &'a str,
    pub port: u16,
    pub user: &'a str,
    pub region: &'a str,
}

/// Why a token could not be signed. Never carries the credentials.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SigningError(String);

/// The token for `to`, signed with `credentials` at `at`: `host:port/?Action=connect&DBUser=…&X-Amz-…`,
/// the presigned URL without its scheme, as botocore's `generate_db_auth_token` makes it.
pub fn auth_token(
    to: TokenFor<'_>,
    credentials: &Credentials,
    at: SystemTime,
) -> Result<SecretString, SigningError> {
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(to.region)
        .name("rds-db")
        .time(at)
        .settings(settings)
        .build()
        .map_err(|e| SigningError(e.to_string()))?
        .into();
    let url = format!(
        "https://{}:{}/?Action=connect&DBUser={}",
        to.host,
        to.port,
        encode(to.user)
    );
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::empty())
        .map_err(|e| {
            SigningError(format!(
                "{}:{} is not a host and port ({e})",
                to.host, to.port
            ))
        })?;
    // Unheard: aws-sigv4 traces the canonical request, and in it the session token.
    let signed =
        tracing::subscriber::with_default(NoSubscriber::default(), || sign(request, &params));
    let (instructions, _signature) = signed
        .map_err(|e| SigningError(e.to_string()))?
        .into_parts();
    let mut token = url["https://".len()..].to_string();
    // As botocore: the signature last (aws-sigv4 appends the session token after it).
    let (signature, others): (Vec<_>, Vec<_>) = instructions
        .params()
        .iter()
        .partition(|(name, _)| *name == "X-Amz-Signature");
    for (name, value) in others.into_iter().chain(signature) {
        token.push_str(&format!("&{name}={}", encode(value)));
    }
    Ok(SecretString::from(token))
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    const AT: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn keys(secret: &str, session: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            secret,
            session.map(str::to_string),
            None,
            "test",
        )
    }

    fn token(credentials: &Credentials, user: &str) -> String {
        let to = TokenFor {
            host: "db.abc.eu-west-1.rds.amazonaws.com",
            port: 5432,
            user,
            region: "eu-west-1",
        };
        auth_token(
            to,
            credentials,
            SystemTime::UNIX_EPOCH + Duration::from_secs(AT),
        )
        .unwrap()
        .expose_secret()
        .to_string()
    }

    #[test]
    fn the_token_is_the_presigned_connect_url_without_its_scheme() {
        let token = token(&keys("secret", None), "ingest");
        assert!(
            token.starts_with("db.abc.eu-west-1.rds.amazonaws.com:5432/?Action=connect&DBUser=ingest&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260101%2Feu-west-1%2Frds-db%2Faws4_request&X-Amz-Date=20260101T000000Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature="),
            "{token}"
        );
        assert!(!token.contains("secret"), "{token}");
    }

    #[test]
    fn a_session_token_goes_in_and_every_input_changes_the_signature() {
        let plain = keys("secret", None);
        let session = keys("secret", Some("session/+="));
        let with_session = token(&session, "ingest");
        assert!(
            with_session.contains(
                "&X-Amz-SignedHeaders=host&X-Amz-Security-Token=session%2F%2B%3D&X-Amz-Signature="
            ),
            "{with_session}"
        );
        let signature = |token: &str| token.rsplit_once("X-Amz-Signature=").unwrap().1.to_string();
        let base = signature(&token(&plain, "ingest"));
        assert_eq!(base.len(), 64);
        assert_ne!(signature(&with_session), base);
        assert_ne!(signature(&token(&plain, "reader")), base);
        assert_ne!(signature(&token(&keys("other", None), "ingest")), base);
    }
}
