//! End to end, the way a user tries the function: `cargo lambda watch` runs it, `cargo lambda invoke`
//! sends the payloads in `events/`, against a PostgreSQL with TLS and passwords, moto's Secrets
//! Manager (reached through the standard endpoint variable) and the CoinGecko stub.

mod common;

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture;
use common::moto;
use common::secure_postgres::{SecurePostgres, SUPERUSER_PASSWORD};
use serde_json::Value;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// `cargo lambda watch`, killed when dropped (it ignores SIGTERM); the function it started
/// then loses its Runtime API and exits by itself.
struct Watch(Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn require_cargo_lambda() {
    let found = Command::new("cargo")
        .args(["lambda", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "cargo-lambda is not installed: `pip install cargo-lambda` (see docs/operations.md, \"Run it as Lambda locally\")"
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn invoke(port: u16, event_file: &str) -> Result<Value, String> {
    let output = tokio::process::Command::new("cargo")
        .args(["lambda", "invoke", "--data-file", event_file])
        .args([
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
            &port.to_string(),
        ])
        .args(["--output-format", "json"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .await
        .expect("running cargo lambda invoke");
    if output.status.success() {
        Ok(serde_json::from_slice(&output.stdout).expect("the function returns JSON"))
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

async fn wait_until_listening(port: u16, watch: &mut Watch) {
    let deadline = Instant::now() + Duration::from_secs(300);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if let Some(status) = watch.0.try_wait().unwrap() {
            panic!("cargo lambda watch exited early: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "cargo lambda watch did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn watch_and_invoke_run_the_function_warm_and_across_a_secret_rotation() {
    require_cargo_lambda();
    let server = SecurePostgres::start();
    server.create_owner("ingest", "before-Rotation1").await;
    let stub = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/coins/markets"))
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("markets-2024-09-05.json")),
        )
        .mount(&stub)
        .await;

    let secrets = moto::secrets_manager().await;
    let secret_id =
        moto::create_secret(&secrets, &server.secret("ingest", "before-Rotation1")).await;

    let port = free_port();
    let mut watch = Watch(
        Command::new("cargo")
            .args(["lambda", "watch", "--bin", "bootstrap", "--ignore-changes"])
            .args([
                "--invoke-address",
                "127.0.0.1",
                "--invoke-port",
                &port.to_string(),
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .env("DB_SECRET_ID", &secret_id)
            .env("DB_SSLMODE", "require")
            .env("DB_SSL_ROOT_CERT", &server.ca_file)
            .env("COINGECKO_BASE_URL", stub.uri())
            .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", moto::endpoint())
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env_remove("DATABASE_URL")
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting cargo lambda watch"),
    );
    wait_until_listening(port, &mut watch).await;

    let cold = invoke(port, "events/scheduler-input.json").await.unwrap();
    assert_eq!(cold["status"], "succeeded", "{cold}");
    assert_eq!(cold["trigger_id"], "2026-11-27T15:00:00Z");
    assert_eq!(cold["history_inserted"], 100);

    let redelivered = invoke(port, "events/scheduler-input.json").await.unwrap();
    assert_eq!(redelivered["status"], "duplicate", "{redelivered}");
    assert_eq!(redelivered["run_id"], cold["run_id"]);

    server.set_password("ingest", "after-Rotation2").await;
    moto::put_secret(
        &secrets,
        &secret_id,
        &server.secret("ingest", "after-Rotation2"),
    )
    .await;
    server.disconnect("ingest").await;

    let rotated = invoke(port, "events/scheduler-envelope.json")
        .await
        .unwrap();
    assert_eq!(rotated["status"], "succeeded", "{rotated}");
    assert_eq!(rotated["unchanged"], 100);

    let migrated = invoke(port, "events/migrate.json").await.unwrap();
    assert_eq!(
        migrated,
        serde_json::json!({"status": "migrated", "applied": []}),
        "the runs had migrated already"
    );

    let bad = invoke(port, "Cargo.toml").await.unwrap_err();
    assert!(bad.contains("expected") || bad.contains("JSON"), "{bad}");

    let prices = common::connect(&server.url("postgres", SUPERUSER_PASSWORD, "ingest")).await;
    let runs: Vec<String> = common::column(
        &prices,
        "SELECT status FROM ingest_runs ORDER BY started_at",
    )
    .await;
    assert_eq!(runs, ["succeeded", "succeeded"]);
    let history: i64 = prices
        .query_one("SELECT count(*) FROM price_history", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(history, 100);
}
