//! Reaching the database: from `DATABASE_URL`, or from a Secrets Manager secret that is
//! cached across warm invocations and fetched again when the password was rotated.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use secrecy::ExposeSecret;

use crate::config::{DatabaseConfig, DatabaseSource};
use crate::secrets::{parse_db_secret, DbCredentials, SecretError, SecretSource};
use crate::store::{Connector, Store, StoreError};

/// How long a fetched secret is trusted before it is fetched again.
const SECRET_TTL: Duration = Duration::from_secs(15 * 60);
/// PostgreSQL's "invalid_password": what a rotated secret looks like from a stale copy.
const INVALID_PASSWORD: &str = "28P01";

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(
        "no database given: set DATABASE_URL, DB_SECRET_ID or libpq's PGHOST, PGUSER, PGDATABASE…"
    )]
    NotConfigured,
    #[error("secret {0} has no \"host\": set DB_HOST (the template's DbHost parameter) or PGHOST to the database's host name")]
    NoHost(String),
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Database<S> {
    source: Option<DatabaseSource>,
    connector: Connector,
    secrets: S,
    cached: Mutex<Option<(DbCredentials, Instant)>>,
}

impl<S: SecretSource> Database<S> {
    pub fn new(config: &DatabaseConfig, secrets: S) -> Result<Self, StoreError> {
        Ok(Self {
            source: config.source.clone(),
            connector: Connector::new(&config.tls)?,
            secrets,
            cached: Mutex::new(None),
        })
    }

    /// A new connection. A refused password makes it fetch the secret again and retry once.
    pub async fn connect(&self) -> Result<Store, ConnectError> {
        let (secret_id, host, port, dbname, application_name) = match &self.source {
            None => return Err(ConnectError::NotConfigured),
            Some(DatabaseSource::Url(config)) => return Ok(self.connector.connect(config).await?),
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
