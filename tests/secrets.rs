//! Credentials from Secrets Manager (moto's server standing in for AWS), rotation, and
//! the promise that no secret value reaches a log line or an error.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use coingecko_cdc::secrets::{SecretError, SecretSource};
use common::moto::{create_secret, put_secret, secrets_manager};
use common::secure_postgres::SecurePostgres;
use common::{fixture, spawn_app, TestApp};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, ResponseTemplate};

/// Counts how often the secret source is read.
struct Counting {
    inner: aws_sdk_secretsmanager::Client,
    reads: Arc<AtomicUsize>,
}

impl SecretSource for Counting {
    async fn secret_string(&self, secret_id: &str) -> Result<String, SecretError> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.secret_string(secret_id).await
    }
}

fn test_dbname(app: &TestApp) -> String {
    let url: tokio_postgres::Config = app.database_url.parse().unwrap();
    url.get_dbname().unwrap().to_string()
}

#[tokio::test]
async fn both_secret_shapes_reach_the_database() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let client = secrets_manager().await;
    let dbname = test_dbname(&app);
    let master = create_secret(
        &client,
        r#"{"username":"postgres","password":"rds-managed"}"#,
    )
    .await;
    let full = create_secret(
        &client,
        &format!(r#"{{"engine":"postgres","host":"127.0.0.1","port":"5432","dbname":"{dbname}","username":"postgres","password":"x"}}"#),
    )
    .await;

    let from_master = app
        .app_with(
            &[
                ("DB_SECRET_ID", &master),
                ("DB_HOST", "127.0.0.1"),
                ("DB_NAME", &dbname),
            ],
            client.clone(),
        )
        .await;
    assert_eq!(
        from_master.run(None, None).await.unwrap().history_inserted,
        100
    );

    let from_full = app.app_with(&[("DB_SECRET_ID", &full)], client).await;
    assert_eq!(from_full.run(None, None).await.unwrap().unchanged, 100);
}

#[tokio::test]
async fn a_missing_secret_is_an_error_that_names_it() {
    let app = spawn_app().await;
    let client = secrets_manager().await;
    let function = app
        .app_with(
            &[
                ("DB_SECRET_ID", "cdc-test/does-not-exist"),
                ("DB_HOST", "127.0.0.1"),
            ],
            client,
        )
        .await;

    let error = function.run(None, None).await.unwrap_err().to_string();

    assert!(
        error.contains("cdc-test/does-not-exist")
            && error.contains("GetSecretValue failed: ResourceNotFoundException: "),
        "{error}"
    );
    assert!(
        error.len() < 400,
        "the service's answer, not a dump of it: {error}"
    );
}

#[tokio::test]
async fn the_api_key_can_come_from_secrets_manager() {
    let app = spawn_app().await;
    let client = secrets_manager().await;
    let key = create_secret(&client, "CG-from-secrets-manager").await;
    Mock::given(method("GET"))
        .and(path("/coins/markets"))
        .and(header("x-cg-demo-api-key", "CG-from-secrets-manager"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("markets-2024-09-05.json")),
        )
        .expect(1)
        .mount(&app.coingecko)
        .await;

    let function = app
        .app_with(&[("COINGECKO_API_KEY_SECRET_ID", &key)], client)
        .await;

    assert_eq!(function.run(None, None).await.unwrap().fetched, 100);
}

/// Everything the tracing subscriber writes, to search for leaked secrets.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn a_rotated_password_is_fetched_again_and_no_secret_reaches_logs_or_errors() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = SecurePostgres::start();
    server.create_owner("ingest", "first-Pa55word").await;
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let client = secrets_manager().await;
    let secret_id = create_secret(&client, &server.secret("ingest", "first-Pa55word")).await;
    let reads = Arc::new(AtomicUsize::new(0));
    let ca = server.ca_file.display().to_string();
    let function = app
        .app_with(
            &[
                ("DB_SECRET_ID", &secret_id),
                ("DB_SSLMODE", "require"),
                ("DB_SSL_ROOT_CERT", &ca),
            ],
            Counting {
                inner: client.clone(),
                reads: reads.clone(),
            },
        )
        .await;
    assert_eq!(
        function.run(None, None).await.unwrap().history_inserted,
        100
    );

    // Rotation: a new password in the database and in the secret, and the warm
    // connection gone (as after an idle timeout), so the cached password is stale.
    server.set_password("ingest", "second-Pa55word").await;
    put_secret(
        &client,
        &secret_id,
        &server.secret("ingest", "second-Pa55word"),
    )
    .await;
    server.disconnect("ingest").await;

    let after_rotation = function
        .run(None, None)
        .await
        .expect("reconnects with the rotated password");
    assert_eq!(after_rotation.unchanged, 100);
    assert_eq!(
        reads.load(Ordering::SeqCst),
        2,
        "cached once, fetched again on 28P01"
    );

    // A password the database refuses even after fetching again: a clear error without it.
    server.set_password("ingest", "third-Pa55word").await;
    server.disconnect("ingest").await;
    let error = function.run(None, None).await.unwrap_err().to_string();
    assert!(
        error.contains("28P01") && error.contains("ingest"),
        "{error}"
    );

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("fetching the secret again"), "{logs}");
    for password in ["first-Pa55word", "second-Pa55word", "third-Pa55word"] {
        assert!(!logs.contains(password), "{password} in the logs");
        assert!(!error.contains(password), "{password} in the error");
    }
}
