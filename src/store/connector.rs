//! Connections: TLS as libpq would do it in each `sslmode`, and errors that say where they went.

use postgres_native_tls::{MakeTlsConnector, TlsStream};
use tokio_postgres::config::Host;
use tokio_postgres::error::{DbError, Severity};
use tokio_postgres::{AsyncMessage, Client, Connection, Socket};

use super::error::{During, StoreError};
use super::Store;
use crate::config::{DbTls, SslMode};
use crate::error_chain::error_chain;

/// SQLSTATE class 28, "invalid authorization specification": the server refused the login.
const INVALID_AUTHORIZATION: &str = "28";

/// Whether a connection failed in the TLS handshake (the certificate, most often).
fn is_tls_failure(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error).is_some_and(|cause| cause.is::<native_tls::Error>())
}

/// The Amazon RDS global CA bundle (all regions), as AWS publishes it at
/// https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem. Built in because
/// Amazon Linux's system store lacks these roots; refresh it when AWS rotates its CAs.
const RDS_ROOTS: &[u8] = include_bytes!("rds-global-bundle.pem");

/// Opens connections with the configured TLS; built once, reused for every connection.
#[derive(Clone)]
pub struct Connector {
    tls: MakeTlsConnector,
    mode: SslMode,
}

impl Connector {
    /// Reads the root certificate file (every certificate of the bundle) and builds the TLS setup.
    pub fn new(settings: &DbTls) -> Result<Self, StoreError> {
        let tls_error = |detail: String| StoreError::new("setting up TLS", detail, None, None);
        let mut builder = native_tls::TlsConnector::builder();
        let mut add_roots = |source: &str, bundle: &[u8]| -> Result<(), StoreError> {
            let certificates = pem::parse_many(bundle)
                .map_err(|e| tls_error(format!("{source}: not PEM ({e})")))?;
            if certificates.is_empty() {
                return Err(tls_error(format!("{source}: no certificate in the file")));
            }
            for certificate in certificates {
                let root = native_tls::Certificate::from_der(certificate.contents())
                    .map_err(|e| tls_error(format!("{source}: {e}")))?;
                builder.add_root_certificate(root);
            }
            Ok(())
        };
        add_roots("the built-in RDS bundle", RDS_ROOTS)?;
        if let Some(root_cert) = &settings.root_cert {
            let source = format!("{} {}", root_cert.setting, root_cert.path.display());
            let bundle =
                std::fs::read(&root_cert.path).map_err(|e| tls_error(format!("{source}: {e}")))?;
            add_roots(&source, &bundle)?;
        }
        // As libpq: the chain is verified in the verify modes, and in the others when a root
        // certificate is given; the host name only in verify-full.
        let verify_chain = match settings.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => {
                settings.root_cert.is_some()
            }
        };
        builder
            .danger_accept_invalid_certs(!verify_chain)
            .danger_accept_invalid_hostnames(settings.mode != SslMode::VerifyFull);
        let connector = builder.build().map_err(|e| tls_error(e.to_string()))?;
        if let Some(warning) = &settings.warning {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            tls: MakeTlsConnector::new(connector),
            mode: settings.mode,
        })
    }

    /// Connects as libpq does in this mode: `allow` tries without TLS first and `prefer` with TLS
    /// first, each trying the other way when the login fails (the server's `pg_hba.conf` may
    /// admit only one of them), `prefer` also when the TLS handshake fails.
    async fn open(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(Client, Connection<Socket, TlsStream<Socket>>), tokio_postgres::Error> {
        use tokio_postgres::config::SslMode as Wire;
        let attempt = |mode: Wire| {
            let mut config = config.clone();
            config.ssl_mode(mode);
            async move { config.connect(self.tls.clone()).await }
        };
        let login_refused = |e: &tokio_postgres::Error| {
            e.code()
                .is_some_and(|code| code.code().starts_with(INVALID_AUTHORIZATION))
        };
        match self.mode {
            SslMode::Disable => attempt(Wire::Disable).await,
            SslMode::Allow => match attempt(Wire::Disable).await {
                Err(e) if login_refused(&e) => attempt(Wire::Require).await,
                other => other,
            },
            SslMode::Prefer => match attempt(Wire::Prefer).await {
                Err(e) if login_refused(&e) || is_tls_failure(&e) => attempt(Wire::Disable).await,
                other => other,
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                attempt(Wire::Require).await
            }
        }
    }

    pub async fn connect(&self, config: &tokio_postgres::Config) -> Result<Store, StoreError> {
        let (client, mut connection) = self
            .open(config)
            .await
            .during("connecting")
            .map_err(|mut e| {
                let advice = if e.detail.contains("certificate") {
                    "; the server's certificate must lead to a trusted root (the RDS bundle is built in and the system's roots are trusted; add others with DB_SSL_ROOT_CERT or sslrootcert) and, with sslmode verify-full, match the host name"
                } else if e.sqlstate.is_none() {
                    "; is PostgreSQL running there and reachable from here? Check DATABASE_URL, or DB_HOST and DB_PORT (or the secret's host and port)"
                } else {
                    ""
                };
                e.detail = format!("to {}: {}{advice}", target(config), e.detail);
                e
            })?;
        tokio::spawn(async move {
            // Driven by hand rather than awaited, to log the server's notices by their severity.
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notice(notice)) => log_notice(&notice),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "PostgreSQL connection closed");
                        break;
                    }
                }
            }
        });
        Ok(Store {
            client,
            tls: self.tls.clone(),
        })
    }
}

/// Where a connection goes, for its errors: hosts and ports, database and user, never the password.
fn target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    // As tokio-postgres pairs them: one port for every host, or one port each.
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "no host".to_string()
    } else {
        hosts.join(", ")
    };
    // Unset, both are the name of the user running this program, as in libpq.
    let user = config.get_user().unwrap_or("(this system's user)");
    let dbname = config.get_dbname().unwrap_or(user);
    format!("{hosts}, database {dbname} as user {user}")
}

/// The server's messages that are not errors. Routine ones (such as "relation … already exists,
/// skipping" on every migration check) stay out of the default log; warnings stay in it.
fn log_notice(notice: &DbError) {
    let code = notice.code().code();
    match notice.parsed_severity() {
        Some(Severity::Notice | Severity::Info | Severity::Log | Severity::Debug) => {
            tracing::debug!(sqlstate = code, "PostgreSQL: {}", notice.message());
        }
        _ => tracing::warn!(
            sqlstate = code,
            "PostgreSQL {}: {}",
            notice.severity(),
            notice.message()
        ),
    }
}
