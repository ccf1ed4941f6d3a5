//! TLS to the database against a real PostgreSQL serving a certificate from the test's own CA.

mod common;

use coingecko_cdc::config::{DbTls, SslMode};
use coingecko_cdc::store::Connector;
use common::secure_postgres::{SecurePostgres, SUPERUSER_PASSWORD};

fn connector(mode: SslMode, root_cert: Option<&std::path::Path>) -> Connector {
    Connector::new(&DbTls {
        mode,
        root_cert: root_cert.map(Into::into),
    })
    .unwrap()
}

/// The RDS bundle with the test CA appended last: every certificate of a bundle must count.
fn bundle_with(server: &SecurePostgres) -> std::path::PathBuf {
    let rds = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/rds-global-bundle.pem"
    ))
    .unwrap();
    let ca = std::fs::read_to_string(&server.ca_file).unwrap();
    let path = server.ca_file.with_file_name("bundle.pem");
    std::fs::write(&path, format!("{rds}\n{ca}")).unwrap();
    path
}

fn config(server: &SecurePostgres, host: &str) -> tokio_postgres::Config {
    server
        .url("postgres", SUPERUSER_PASSWORD, "postgres")
        .replace("localhost", host)
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_certificate_from_a_trusted_root_in_the_bundle_connects_with_require() {
    let server = SecurePostgres::start();
    let bundle = bundle_with(&server);

    let store = connector(SslMode::Require, Some(&bundle))
        .connect(&config(&server, "localhost"))
        .await;

    let mut store = store.expect("a trusted certificate must connect");
    store.migrate().await.expect("a usable connection");
}

#[tokio::test]
async fn a_wrong_host_name_is_refused_with_a_clear_error() {
    let server = SecurePostgres::start();

    let error = connector(SslMode::Require, Some(&server.ca_file))
        .connect(&config(&server, "127.0.0.1"))
        .await
        .err()
        .expect("the certificate is for localhost, not 127.0.0.1");

    let text = error.to_string();
    assert!(
        text.contains("connecting") && text.contains("certificate"),
        "{text}"
    );
    assert!(
        text.contains("DB_SSL_ROOT_CERT"),
        "says what to check: {text}"
    );
}

#[tokio::test]
async fn an_unknown_ca_is_refused_with_a_clear_error() {
    let server = SecurePostgres::start();

    let error = connector(SslMode::Require, None)
        .connect(&config(&server, "localhost"))
        .await
        .err()
        .expect("the test CA is not trusted by default");

    let text = error.to_string();
    assert!(
        text.contains("certificate verify failed") || text.contains("certificate"),
        "{text}"
    );
}

/// How many client connections, other than `admin`'s, use TLS.
async fn encrypted_connections(admin: &tokio_postgres::Client) -> i64 {
    admin
        .query_one(
            "SELECT count(*) FILTER (WHERE s.ssl) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn prefer_encrypts_without_checking_the_certificate_and_disable_does_not_encrypt() {
    let server = SecurePostgres::start();
    let admin = server.admin().await;
    let preferred = connector(SslMode::Prefer, None)
        .connect(&config(&server, "127.0.0.1"))
        .await
        .expect("prefer accepts any certificate");
    assert_eq!(encrypted_connections(&admin).await, 1);
    drop(preferred);

    let _plain = connector(SslMode::Disable, None)
        .connect(&config(&server, "127.0.0.1"))
        .await
        .expect("disable connects without TLS");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(encrypted_connections(&admin).await, 0);
}
