//! Runs that die: a process killed before, during or after its apply is recorded `abandoned`
//! once its lease has run out, by the next run or by `status`, and a run that is still alive
//! (slow in its apply, or on another machine) is never touched. Real processes, `kill -9`, the
//! local PostgreSQL.

mod common;

use std::process::Stdio;
use std::time::Duration;

use chrono::{DateTime, Utc};
use coingecko_cdc::store::RunKind;
use common::{cli, coin, column, fixture, page, spawn_app, stdout_json, TestApp};
use tokio::process::{Child, Command};
use tokio_postgres::Client;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The settings of the runs these tests kill: a short fetch budget keeps their leases short
/// (2 s + 1 s for the run lock + 5 s of margin).
const SHORT_LEASE: &[(&str, &str)] = &[
    ("FETCH_BUDGET_SECS", "2"),
    ("DB_LOCK_TIMEOUT_SECS", "1"),
    ("DB_STATEMENT_TIMEOUT_SECS", "60"),
];

/// A CoinGecko that answers one page after `delay`.
async fn slow_coingecko(delay: Duration) -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/coins/markets"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(page(&[coin(
                    "bitcoin",
                    "64000.5",
                    "2026-12-02T10:00:00.000Z",
                )]))
                .set_delay(delay),
        )
        .mount(&stub)
        .await;
    stub
}

/// `coingecko-cdc run` as a process of its own, as cron or another machine would start it.
fn start_run(app: &TestApp, stub: &MockServer, extra: &[(&str, &str)]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(app.env())
        .env("COINGECKO_BASE_URL", stub.uri())
        .envs(extra.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting coingecko-cdc run")
}

/// One run's row: status, lease and error.
struct Row {
    status: String,
    started_at: DateTime<Utc>,
    lease_until: Option<DateTime<Utc>>,
    error: Option<String>,
}

async fn runs(db: &Client) -> Vec<(Uuid, Row)> {
    db.query(
        "SELECT run_id, status, started_at, lease_until, error FROM ingest_runs ORDER BY started_at",
        &[],
    )
    .await
    .unwrap()
    .into_iter()
    .map(|r| {
        let row = Row {
            status: r.get(1),
            started_at: r.get(2),
            lease_until: r.get(3),
            error: r.get(4),
        };
        (r.get(0), row)
    })
    .collect()
}

async fn run_row(db: &Client, run_id: Uuid) -> Row {
    runs(db)
        .await
        .into_iter()
        .find(|(id, _)| *id == run_id)
        .unwrap_or_else(|| panic!("no run {run_id}"))
        .1
}

/// Waits until `ready` holds, polling; panics after `within`.
async fn wait_until<F, Fut>(within: Duration, what: &str, mut ready: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !ready().await {
        assert!(started.elapsed() < within, "waited {within:?} for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The id of the one `running` row, once there is one.
async fn running_run(db: &Client) -> Uuid {
    let started = std::time::Instant::now();
    loop {
        let running = runs(db)
            .await
            .into_iter()
            .find(|(_, row)| row.status == "running");
        if let Some((run_id, _)) = running {
            return run_id;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no running row"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sleeps until the database's clock has passed the run's lease.
async fn outlive_lease(db: &Client, run_id: Uuid) {
    let lease = run_row(db, run_id).await.lease_until.expect("a lease");
    wait_until(Duration::from_secs(30), "the lease to run out", || async {
        let now: DateTime<Utc> = db
            .query_one("SELECT clock_timestamp()", &[])
            .await
            .unwrap()
            .get(0);
        now > lease
    })
    .await;
}

async fn history_of_run(db: &Client, run_id: Uuid) -> i64 {
    db.query_one(
        "SELECT count(*) FROM price_history WHERE run_id = $1",
        &[&run_id],
    )
    .await
    .unwrap()
    .get(0)
}

/// The sessions of the ingest other than this test's.
async fn ingest_sessions(db: &Client) -> i64 {
    db.query_one(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
         AND pid <> pg_backend_pid() AND application_name = 'coingecko-cdc'",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

/// `status --json` and its exit code.
async fn status(app: &TestApp, args: &[&str]) -> (serde_json::Value, i32) {
    let mut all = vec!["status", "--json"];
    all.extend_from_slice(args);
    let output = cli(app, &all, &[]).await;
    (stdout_json(&output), output.status.code().unwrap())
}

#[tokio::test]
async fn a_run_killed_before_its_apply_is_abandoned_by_status_once_its_lease_ends() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let first = app.run().await;
    let stub = slow_coingecko(Duration::from_secs(30)).await;
    let mut killed = start_run(&app, &stub, SHORT_LEASE);
    let run_id = running_run(&app.db).await;
    killed.kill().await.unwrap();

    let row = run_row(&app.db, run_id).await;
    let lease = (row.lease_until.unwrap() - row.started_at).num_milliseconds();
    assert!(
        (8_000..8_100).contains(&lease),
        "lease of {lease} ms, not the fetch budget + the lock timeout + 5 s"
    );
    // Inside its lease, a killed run cannot be told from a slow one: left as it is.
    let (report, code) = status(&app, &[]).await;
    assert_eq!(report["runs"][0]["status"], "running", "{report}");
    assert_eq!(code, 0);

    outlive_lease(&app.db, run_id).await;
    let (report, code) = status(&app, &[]).await;

    assert_eq!(report["runs"][0]["status"], "abandoned", "{report}");
    assert_eq!(report["runs"][1]["status"], "succeeded", "{report}");
    assert_eq!(report["abandoned_in_a_row"], 1);
    assert_eq!(
        code, 0,
        "one abandoned run after a success is not unhealthy"
    );
    let row = run_row(&app.db, run_id).await;
    let error = row.error.unwrap();
    assert!(
        error.contains("lease ran out") && error.contains("nothing of it was applied"),
        "{error}"
    );
    let (report, code) = status(&app, &["--abandoned-in-a-row", "1"]).await;
    assert_eq!(
        (report["health"].as_str(), code),
        (Some("runs_abandoned"), 6)
    );
    // The run before it, also past its lease, finished: never touched.
    assert_eq!(run_row(&app.db, first.run_id).await.status, "succeeded");
}

#[tokio::test]
async fn a_run_killed_during_its_apply_is_left_while_its_session_lives_then_abandoned_by_the_next_run(
) {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let stub = slow_coingecko(Duration::ZERO).await;
    // The apply outlasts the 8 s lease.
    common::slow_applies(&app.db, 12).await;
    let mut killed = start_run(&app, &stub, SHORT_LEASE);
    let run_id = running_run(&app.db).await;
    wait_until(
        Duration::from_secs(20),
        "the apply to be in the slow trigger",
        || async {
            let applying: i64 = app
                .db
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()
                 AND wait_event = 'PgSleep'",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            applying == 1
        },
    )
    .await;
    killed.kill().await.unwrap();
    outlive_lease(&app.db, run_id).await;

    // Past its lease, but its session still holds its row in the apply: not touched.
    let (report, _) = status(&app, &[]).await;
    assert_eq!(report["runs"][0]["status"], "running", "{report}");

    // The server ends the session when it finds the client gone, and rolls the apply back.
    wait_until(
        Duration::from_secs(30),
        "the dead run's session to end",
        || async { ingest_sessions(&app.db).await == 0 },
    )
    .await;
    app.db
        .batch_execute("DROP TRIGGER slow_apply ON quotes")
        .await
        .unwrap();
    let next = app.run().await;

    assert_eq!(next.abandoned_runs, 1);
    assert_eq!(run_row(&app.db, run_id).await.status, "abandoned");
    assert_eq!(history_of_run(&app.db, run_id).await, 0);
    assert!(history_of_run(&app.db, next.run_id).await > 0);
}

#[tokio::test]
async fn a_run_slower_than_its_lease_in_its_apply_is_never_touched_and_finishes() {
    let app = spawn_app().await;
    let stub = slow_coingecko(Duration::ZERO).await;
    common::slow_applies(&app.db, 12).await;
    let slow = start_run(&app, &stub, SHORT_LEASE);
    let run_id = running_run(&app.db).await;
    outlive_lease(&app.db, run_id).await;

    // Past its lease, alive, applying: `status` and a run elsewhere leave it be.
    let (report, _) = status(&app, &[]).await;
    assert_eq!(report["runs"][0]["status"], "running", "{report}");
    let output = slow.wait_with_output().await.unwrap();

    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary = stdout_json(&output);
    assert_eq!(summary["run_id"], run_id.to_string());
    assert_eq!(run_row(&app.db, run_id).await.status, "succeeded");
    assert_eq!(history_of_run(&app.db, run_id).await, 1);
}

#[tokio::test]
async fn two_machines_a_dead_run_is_abandoned_while_a_live_one_fetching_elsewhere_is_not() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    // Machine A dies 0.3 s into its fetch; machine B fetches for 12 s with 30 s allowed.
    let mut machine_a = start_run(
        &app,
        &slow_coingecko(Duration::from_secs(30)).await,
        SHORT_LEASE,
    );
    let dead = running_run(&app.db).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    machine_a.kill().await.unwrap();
    let slow_stub = slow_coingecko(Duration::from_secs(12)).await;
    let machine_b = start_run(
        &app,
        &slow_stub,
        &[("FETCH_BUDGET_SECS", "30"), ("DB_LOCK_TIMEOUT_SECS", "5")],
    );
    wait_until(Duration::from_secs(20), "machine B's row", || async {
        runs(&app.db).await.len() == 2
    })
    .await;
    let alive = runs(&app.db).await[1].0;
    outlive_lease(&app.db, dead).await;

    // A third machine's run.
    let third = app.run().await;

    assert_eq!(third.abandoned_runs, 1);
    assert_eq!(run_row(&app.db, dead).await.status, "abandoned");
    assert_eq!(run_row(&app.db, alive).await.status, "running");
    let output = machine_b.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(run_row(&app.db, alive).await.status, "succeeded");
    assert_eq!(history_of_run(&app.db, dead).await, 0);
}

#[tokio::test]
async fn a_frozen_run_found_abandoned_applies_nothing_when_it_wakes() {
    let app = spawn_app().await;
    let mut frozen = app.store().await;
    let run_id = Uuid::now_v7();
    frozen
        .start_run(run_id, RunKind::Live, None, Duration::from_millis(50))
        .await
        .unwrap();
    outlive_lease(&app.db, run_id).await;
    let abandoned = app.store().await.abandon_dead_runs().await.unwrap();
    assert_eq!(
        abandoned.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        [run_id]
    );

    // It wakes, and reaches its apply.
    let apply = frozen
        .begin_apply(Duration::from_secs(1), Duration::from_secs(5))
        .await
        .unwrap();
    let error = apply.hold_run(run_id).await.unwrap_err().to_string();

    assert!(
        error.contains("abandoned") && error.contains("nothing of it is applied"),
        "{error}"
    );
    drop(apply);
    // Its failure does not overwrite the verdict.
    frozen.fail_run(run_id, "woke too late", 0).await.unwrap();
    let row = run_row(&app.db, run_id).await;
    assert_eq!(row.status, "abandoned");
    assert!(row.error.unwrap().contains("lease ran out"));
    let statuses = column::<String>(&app.db, "SELECT status FROM ingest_runs").await;
    assert_eq!(statuses, ["abandoned"]);
}
