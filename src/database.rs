//! Reaching the database: from `DATABASE_URL`; from a Secrets Manager secret that is cached
//! across warm invocations and fetched again when the password was rotated; or with an RDS IAM
//! token, signed again before it expires and when it is refused.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use secrecy::{ExposeSecret, SecretString};

use crate::config::{DatabaseConfig, DatabaseSource, IamEndpoint};
use crate::error_chain::error_chain;
use crate::rds_token::{auth_token, TokenFor};
use crate::secrets::{
    parse_db_secret, AwsSigning, DbCredentials, SecretError, SecretSource, SigningContext,
    NO_CREDENTIALS,
};
use crate::store::{Connector, Store, StoreError};

/// How long a fetched secret is trusted before it is fetched again.
const SECRET_TTL: Duration = Duration::from_secs(15 * 60);
/// How long a signed IAM token is reused. RDS takes it for 15 minutes from its signing time:
/// the rest is a margin for a clock that disagrees with AWS's.
const TOKEN_TTL: Duration = Duration::from_secs(10 * 60);
/// PostgreSQL's "invalid_password": what a rotated secret looks like from a stale copy.
const INVALID_PASSWORD: &str = "28P01";
/// "invalid_authorization_specification": what else RDS may answer for a refused IAM token.
const INVALID_AUTHORIZATION: &str = "28000";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no database given: set DATABASE_URL, DB_SECRET_ID, libpq's PGHOST, PGUSER, PGDATABASE…, or DB_AUTH=iam with DB_HOST and DB_USER"
    )]
    NotConfigured,
    #[error("secret {0} has no \"host\": set DB_HOST (the template's DbHost parameter) or PGHOST to the database's host name")]
    NoHost(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("signing the IAM token for user {user} at {host}:{port}: {problem}")]
    Token {
        user: String,
        host: String,
        port: u16,
        problem: String,
    },
    #[error("{0}; a freshly signed IAM token was refused too: check that the user was granted rds_iam (GRANT rds_iam TO …), that the database has IAM authentication on, and that the function may rds-db:connect as this user (the template's DbResourceId and DbUser)")]
    TokenRefused(StoreError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Database<S, C = AwsSigning> {
    source: Option<DatabaseSource>,
    connector: Connector,
    secrets: S,
    signing: C,
    cached: Mutex<Option<(DbCredentials, Instant)>>,
    /// The IAM token and when it was signed (by `signing`'s clock).
    token: Mutex<Option<(SecretString, SystemTime)>>,
}

impl<S: SecretSource> Database<S> {
    /// IAM tokens are signed with the AWS configuration the secrets are read with.
    pub fn new(config: &DatabaseConfig, secrets: S) -> Result<Self, StoreError> {
        let signing = AwsSigning(secrets.aws_config());
        Self::with_signing(config, secrets, signing)
    }
}

impl<S: SecretSource, C: SigningContext> Database<S, C> {
    /// IAM tokens are signed with `signing`'s credentials, at its time.
    pub fn with_signing(
        config: &DatabaseConfig,
        secrets: S,
        signing: C,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            source: config.source.clone(),
            connector: Connector::new(&config.tls)?,
            secrets,
            signing,
            cached: Mutex::new(None),
            token: Mutex::new(None),
        })
    }

    /// A new connection. A refused password makes it fetch the secret again, or sign a new
    /// token, and retry once.
    pub async fn connect(&self) -> Result<Store, ConnectError> {
        let (secret_id, host, port, dbname, application_name) = match &self.source {
            None => return Err(ConnectError::NotConfigured),
            Some(DatabaseSource::Url(config)) => return Ok(self.connector.connect(config).await?),
            Some(DatabaseSource::Iam(endpoint)) => return self.connect_with_token(endpoint).await,
            Some(DatabaseSource::Secret {
                secret_id,
                host,
                port,
                dbname,
                application_name,
            }) => (secret_id, host, port, dbname, application_name),
        };
        let endpoint =
            |credentials: &DbCredentials| -> Result<tokio_postgres::Config, ConnectError> {
                let mut config = tokio_postgres::Config::new();
                config
                    .user(&credentials.username)
                    .password(credentials.password.expose_secret())
                    .host(
                        credentials
                            .host
                            .as_ref()
                            .or(host.as_ref())
                            .ok_or_else(|| ConnectError::NoHost(secret_id.clone()))?,
                    )
                    .port(credentials.port.or(*port).unwrap_or(5432))
                    .dbname(
                        credentials
                            .dbname
                            .as_ref()
                            .or(dbname.as_ref())
                            .map_or("postgres", |d| d),
                    )
                    .application_name(application_name)
                    .connect_timeout(Duration::from_secs(10));
                Ok(config)
            };
        let credentials = self.credentials(secret_id, false).await?;
        match self.connector.connect(&endpoint(&credentials)?).await {
            Err(e) if e.sqlstate.as_deref() == Some(INVALID_PASSWORD) => {
                tracing::warn!(secret_id = %secret_id, "the database refused the password: fetching the secret again");
                let fresh = self.credentials(secret_id, true).await?;
                Ok(self.connector.connect(&endpoint(&fresh)?).await?)
            }
            other => Ok(other?),
        }
    }

    async fn connect_with_token(&self, endpoint: &IamEndpoint) -> Result<Store, ConnectError> {
        let config = |token: &SecretString| {
            let mut config = tokio_postgres::Config::new();
            config
                .user(&endpoint.user)
                .password(token.expose_secret())
                .host(&endpoint.host)
                .port(endpoint.port)
                .dbname(&endpoint.dbname)
                .application_name(&endpoint.application_name)
                .connect_timeout(Duration::from_secs(10));
            config
        };
        let refused = |e: &StoreError| {
            matches!(
                e.sqlstate.as_deref(),
                Some(INVALID_PASSWORD | INVALID_AUTHORIZATION)
            )
        };
        let token = self.token(endpoint, false).await?;
        match self.connector.connect(&config(&token)).await {
            Err(e) if refused(&e) => {
                tracing::warn!(user = %endpoint.user, host = %endpoint.host, sqlstate = e.sqlstate.as_deref(), "the database refused the IAM token: signing a new one");
                let fresh = self.token(endpoint, true).await?;
                self.connector.connect(&config(&fresh)).await.map_err(|e| {
                    if refused(&e) {
                        ConnectError::TokenRefused(e)
                    } else {
                        ConnectError::Store(e)
                    }
                })
            }
            other => Ok(other?),
        }
    }

    /// The cached token while it is young enough, else a new one.
    async fn token(
        &self,
        endpoint: &IamEndpoint,
        refresh: bool,
    ) -> Result<SecretString, ConnectError> {
        let now = self.signing.now();
        if !refresh {
            if let Some((token, signed)) = self
                .token
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                // A clock that went back (an error here) signs anew.
                if now.duration_since(*signed).is_ok_and(|age| age < TOKEN_TTL) {
                    return Ok(token.clone());
                }
            }
        }
        let fail = |problem: String| ConnectError::Token {
            user: endpoint.user.clone(),
            host: endpoint.host.clone(),
            port: endpoint.port,
            problem,
        };
        let credentials = self.signing.credentials().await.map_err(|e| match e {
            CredentialsError::CredentialsNotLoaded(_) => fail(NO_CREDENTIALS.into()),
            other => fail(format!(
                "getting AWS credentials failed: {}",
                error_chain(&other)
            )),
        })?;
        let to = TokenFor {
            host: &endpoint.host,
            port: endpoint.port,
            user: &endpoint.user,
            region: &endpoint.region,
        };
        let token = auth_token(to, &credentials, now).map_err(|e| fail(e.to_string()))?;
        *self.token.lock().unwrap_or_else(|p| p.into_inner()) = Some((token.clone(), now));
        Ok(token)
    }

    async fn credentials(
        &self,
        secret_id: &str,
        refresh: bool,
    ) -> Result<DbCredentials, ConnectError> {
        if !refresh {
            if let Some((credentials, fetched)) = self
                .cached
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                if fetched.elapsed() < SECRET_TTL {
                    return Ok(credentials.clone());
                }
            }
        }
        let text = self.secrets.secret_string(secret_id).await?;
        let credentials = parse_db_secret(secret_id, &text)?;
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((credentials.clone(), Instant::now()));
        Ok(credentials)
    }
}
