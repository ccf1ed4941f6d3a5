//! Connections: TLS as libpq would do it in each `sslmode`, and errors that say where they went.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use postgres_native_tls::TlsStream;
use tokio_postgres::config::Host;
use tokio_postgres::error::{DbError, Severity};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};
use tokio_postgres::{AsyncMessage, Client, Connection, Socket};

use super::error::{During, StoreError};
use super::Store;
use crate::config::{DbTls, SslMode};
use crate::error_chain::error_chain;
use crate::tls::{self, TlsError};

/// SQLSTATE class 28, "invalid authorization specification": the server refused the login.
const INVALID_AUTHORIZATION: &str = "28";

/// Whether a connection failed in the TLS handshake (the certificate, most often).
fn is_tls_failure(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error).is_some_and(|cause| cause.is::<native_tls::Error>())
}

/// Opens connections with the configured TLS; built once, reused for every connection.
#[derive(Clone)]
pub struct Connector {
    tls: LazyTls,
    mode: SslMode,
}

impl Connector {
    /// Reads the root certificate file (every certificate of the bundle), so that a bad one fails
    /// here; the TLS itself is set up by the first connection that negotiates it.
    pub fn new(settings: &DbTls) -> Result<Self, StoreError> {
        let tls_error = |e: TlsError| StoreError::new("setting up TLS", e.0, None, None);
        let extra_roots = match &settings.root_cert {
            None => Vec::new(),
            Some(root_cert) => {
                let source = format!("{} {}", root_cert.setting, root_cert.path.display());
                let bundle = std::fs::read(&root_cert.path)
                    .map_err(|e| tls_error(TlsError(format!("{source}: {e}"))))?;
                tls::roots(&source, &bundle).map_err(tls_error)?
            }
        };
        // As libpq: the chain is verified in the verify modes, and in the others when a root
        // certificate is given; the host name only in verify-full.
        let verify_chain = match settings.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => {
                settings.root_cert.is_some()
            }
        };
        if let Some(warning) = &settings.warning {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            tls: LazyTls(Arc::new(TlsPolicy {
                extra_roots,
                verify_chain,
                verify_host: settings.mode == SslMode::VerifyFull,
                own: OnceLock::new(),
            })),
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

/// What TLS a mode trusts and checks. The OpenSSL setup is made at the first handshake, so a
/// process whose connections never negotiate TLS (sslmode=disable, a server without it) loads no
/// roots, and verify-full without a root file shares the process's verifying setup.
struct TlsPolicy {
    /// From the root certificate file, trusted besides the system's and the RDS roots.
    extra_roots: Vec<native_tls::Certificate>,
    verify_chain: bool,
    verify_host: bool,
    /// The setup of a mode that cannot share the process's one, once made.
    own: OnceLock<native_tls::TlsConnector>,
}

impl TlsPolicy {
    /// Whether it checks exactly what the process's verifying setup checks, against its roots.
    fn shares_the_process_setup(&self) -> bool {
        self.verify_chain && self.verify_host && self.extra_roots.is_empty()
    }

    fn connector(
        &self,
    ) -> Result<native_tls::TlsConnector, Box<dyn std::error::Error + Send + Sync>> {
        if self.shares_the_process_setup() {
            return Ok(tls::verifying()?);
        }
        if let Some(connector) = self.own.get() {
            return Ok(connector.clone());
        }
        let mut builder = native_tls::TlsConnector::builder();
        // Roots matter only to a verified chain: the unverified modes skip parsing them.
        if self.verify_chain {
            for root in tls::rds_roots()?
                .into_iter()
                .chain(self.extra_roots.iter().cloned())
            {
                builder.add_root_certificate(root);
            }
        }
        builder
            .danger_accept_invalid_certs(!self.verify_chain)
            .danger_accept_invalid_hostnames(!self.verify_host);
        let connector = builder.build()?;
        Ok(self.own.get_or_init(|| connector).clone())
    }
}

/// tokio-postgres's hook for TLS, handing each connection a [`Handshake`] with the policy.
#[derive(Clone)]
pub(super) struct LazyTls(Arc<TlsPolicy>);

impl MakeTlsConnect<Socket> for LazyTls {
    type Stream = TlsStream<Socket>;
    type TlsConnect = Handshake;
    type Error = Infallible;

    fn make_tls_connect(&mut self, domain: &str) -> Result<Handshake, Infallible> {
        Ok(Handshake {
            policy: self.0.clone(),
            domain: domain.to_string(),
        })
    }
}

/// One connection's TLS handshake; tokio-postgres starts it only once the server agreed to TLS.
pub(super) struct Handshake {
    policy: Arc<TlsPolicy>,
    domain: String,
}

impl TlsConnect<Socket> for Handshake {
    type Stream = TlsStream<Socket>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future = Pin<Box<dyn Future<Output = Result<TlsStream<Socket>, Self::Error>> + Send>>;

    fn connect(self, stream: Socket) -> Self::Future {
        Box::pin(async move {
            let connector = self.policy.connector()?;
            // A handshake failure stays a native_tls::Error, which is_tls_failure looks for.
            Ok(
                postgres_native_tls::TlsConnector::new(connector, &self.domain)
                    .connect(stream)
                    .await?,
            )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RootCert;

    #[test]
    fn only_verify_full_without_a_root_file_shares_the_process_setup() {
        let root_file = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/store/rds-global-bundle.pem"
        );
        for mode in [
            SslMode::Disable,
            SslMode::Allow,
            SslMode::Prefer,
            SslMode::Require,
            SslMode::VerifyCa,
            SslMode::VerifyFull,
        ] {
            for root_cert in [
                None,
                Some(RootCert {
                    path: root_file.into(),
                    setting: "DB_SSL_ROOT_CERT",
                }),
            ] {
                let with_root = root_cert.is_some();
                let settings = DbTls {
                    mode,
                    root_cert,
                    warning: None,
                };
                let connector = Connector::new(&settings).unwrap();
                assert_eq!(
                    connector.tls.0.shares_the_process_setup(),
                    mode == SslMode::VerifyFull && !with_root,
                    "{mode:?}, root file: {with_root}"
                );
                assert!(
                    connector.tls.0.own.get().is_none(),
                    "built before any handshake"
                );
            }
        }
    }
}
