//! Deliberate faults: each run that meets one fails with an error naming it, leaves the price
//! tables exactly as they were, and the next run after the fault catches up.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use coingecko_cdc::app::Response;
use coingecko_cdc::lambda::handle;
use coingecko_cdc::secrets::SecretsManager;
use coingecko_cdc::summary::RunState;
use common::secure_postgres::SecurePostgres;
use common::{fixture, spawn_app};
use lambda_runtime::{Context, LambdaEvent};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const SEP5: &str = "markets-2024-09-05.json";
const SEP8: &str = "markets-2024-09-08.json";

#[tokio::test]
async fn postgres_restarting_between_warm_invocations_is_reconnected_to() {
    let server = SecurePostgres::start();
    server.create_owner("ingest", "ingest-password").await;
    let mut app = spawn_app().await;
    app.set(
        "DATABASE_URL",
        &server.url("ingest", "ingest-password", "ingest"),
    );
    app.serve(&[fixture(SEP5)]).await;
    let function = app.app_with(&[], SecretsManager::default()).await;
    let invoke = || {
        let event = LambdaEvent::new(serde_json::json!({}), Context::default());
        tokio::time::timeout(Duration::from_secs(30), handle(&function, event))
    };
    invoke().await.expect("first invocation").unwrap();

    server.restart();
    app.serve(&[fixture(SEP8)]).await;
    let second = invoke()
        .await
        .expect("the warm invocation hung on the connection the restart ended");

    let Response::Run(summary) = second.expect("the warm invocation reconnects") else {
        panic!("{{}} asks for a run");
    };
    assert_eq!(summary.status, RunState::Succeeded);
    assert!(summary.history_inserted > 50, "{summary:?}");
}

/// Serves `/coins/markets` with full headers, then the body `step` bytes at a time, one step
/// every `pause` (a pause of an hour: headers and then nothing).
async fn slow_body_server(step: usize, pause: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let body = fixture(SEP5);
    tokio::spawn(async move {
        loop {
            let (mut socket, _) = listener.accept().await.unwrap();
            let body = body.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                );
                socket.write_all(head.as_bytes()).await?;
                for chunk in body.as_bytes().chunks(step) {
                    socket.write_all(chunk).await?;
                    tokio::time::sleep(pause).await;
                }
                Ok::<_, std::io::Error>(())
            });
        }
    });
    uri
}

#[tokio::test]
async fn a_stalled_or_trickling_answer_ends_the_run_inside_its_budget() {
    let mut app = spawn_app().await;
    app.set("COINGECKO_TIMEOUT_SECS", "1");
    app.set("COINGECKO_MAX_ATTEMPTS", "2");
    app.set("FETCH_BUDGET_SECS", "5");
    for (fault, step, pause) in [
        ("headers then nothing", 1, Duration::from_secs(3600)),
        ("a trickling body", 64, Duration::from_millis(100)),
    ] {
        let stub = slow_body_server(step, pause).await;
        let started = Instant::now();

        let error = app.try_run_from(&stub, None).await.unwrap_err().to_string();

        let took = started.elapsed();
        assert!(
            error.contains("after 2 attempts") && error.contains("within 1s"),
            "{fault}: {error}"
        );
        // Two attempts of 1 s and a backoff, far inside the 5 s budget; the rest is slack for
        // recording the run on a loaded machine.
        assert!(
            took < Duration::from_secs(8),
            "{fault}: gave up after {took:?}"
        );
    }
    assert_eq!(app.count("current_prices").await, 0);
    assert_eq!(app.failed_runs().await.len(), 2);
}

#[tokio::test]
async fn a_read_only_database_fails_the_run_with_advice_and_changes_nothing() {
    let mut app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    app.run().await;
    let before = app.price_tables().await;
    let read_only = |on: bool| {
        format!(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = {on}', current_database()); END $$"
        )
    };
    app.db.batch_execute(&read_only(true)).await.unwrap();
    app.serve(&[fixture(SEP8)]).await;

    // A new connection (a cold start, or after a failover) lands on the read-only database:
    // with AUTO_MIGRATE on the migration meets it first, without it the run itself.
    let migrating = app.try_run(None).await.unwrap_err().to_string();
    app.set("AUTO_MIGRATE", "false");
    let running = app.try_run(None).await.unwrap_err().to_string();

    for error in [migrating, running] {
        assert!(
            error.contains("25006") && error.contains("primary"),
            "{error}"
        );
    }
    assert_eq!(app.price_tables().await, before, "nothing half-applied");
    app.db.batch_execute(&read_only(false)).await.unwrap();
    assert!(
        app.run().await.history_inserted > 50,
        "the next run catches up"
    );
}

/// A 4 MiB filesystem of the test's own, which it can fill; mounting needs root.
struct SmallDisk {
    dir: PathBuf,
}

impl SmallDisk {
    fn mount() -> Self {
        let dir =
            std::env::temp_dir().join(format!("cdc-small-disk-{}", uuid::Uuid::now_v7().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let dir_text = dir.to_str().unwrap();
        sh(&["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", dir_text]);
        sh(&["chown", "postgres:postgres", dir_text]);
        Self { dir }
    }

    fn filler(&self) -> PathBuf {
        self.dir.join("filler")
    }

    fn fill(&self) {
        let error = std::fs::write(self.filler(), vec![0u8; 8 << 20]).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(28), "ENOSPC: {error}");
    }

    fn free(&self) {
        std::fs::remove_file(self.filler()).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        let _ = std::fs::remove_dir(&self.dir);
    }
}

fn sh(args: &[&str]) {
    let output = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        output.status.success(),
        "{args:?} failed (this test must run as root to mount a small tmpfs): {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test]
async fn a_full_disk_fails_the_run_with_advice_and_changes_nothing() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    app.run().await;
    let disk = SmallDisk::mount();
    let tablespace = format!("cdc_small_disk_{}", uuid::Uuid::now_v7().simple());
    // DDL takes no parameters; the names are generated by the test.
    let move_tables = |to: &str| {
        format!(
            "ALTER TABLE coins SET TABLESPACE {to}; ALTER TABLE quotes SET TABLESPACE {to}; ALTER TABLE price_points_2024_w36 SET TABLESPACE {to};"
        )
    };
    app.db
        .batch_execute(&format!(
            "CREATE TABLESPACE {tablespace} LOCATION '{}'",
            disk.dir.display()
        ))
        .await
        .unwrap();
    app.db
        .batch_execute(&move_tables(&tablespace))
        .await
        .unwrap();
    let before = app.price_tables().await;
    disk.fill();
    app.serve(&[fixture(SEP8)]).await;

    let error = app.try_run(None).await.unwrap_err().to_string();

    assert!(
        error.contains("53100") && error.contains("disk is full"),
        "{error}"
    );
    assert_eq!(app.price_tables().await, before, "nothing half-applied");
    assert_eq!(app.failed_runs().await, [error]);
    disk.free();
    assert!(
        app.run().await.history_inserted > 50,
        "the next run catches up"
    );
    app.db
        .batch_execute(&move_tables("pg_default"))
        .await
        .unwrap();
    app.db
        .batch_execute(&format!("DROP TABLESPACE {tablespace}"))
        .await
        .unwrap();
}
