//! RDS Proxy multiplexes a session's transactions over its pool of connections until the session
//! does something it lists as pinning. Every message a migration, a run, a backfill and `status`
//! send is recorded on the wire, through a proxy in front of the local PostgreSQL, and checked
//! against that list.

mod common;

use std::net::SocketAddr;

use common::market_chart::ChartBook;
use common::wire::{pinning, recording_proxy, Recording, Sent};
use common::{cli, fixture, fresh_database, spawn_app, stdout_json, TestApp};

/// The statements of the early migrations that pin, run once when a database is first migrated:
/// V3 and V6 keep the views and grants they rebuild in `ON COMMIT DROP` tables, and V6 copies
/// grants with a function of its session. They cannot change without changing applied
/// migrations' checksums.
const FIRST_MIGRATION_ONLY: [&str; 4] = [
    "create temporary table saved_views…",
    "create temporary table saved_views…",
    "create function pg_temp.copy_grants(source regclass,…",
    "create temporary table saved_readers…",
];

/// A URL that reaches `database` through the recording proxy, in plain text so that it can read.
fn through(proxy: SocketAddr, database_url: &str) -> String {
    let mut url = url::Url::parse(database_url).unwrap();
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(proxy.port())).unwrap();
    url.set_query(Some("sslmode=disable"));
    url.to_string()
}

async fn proxy_for(app: &TestApp) -> (String, Recording) {
    let server = url::Url::parse(&app.database_url).unwrap();
    let upstream = format!(
        "{}:{}",
        server.host_str().unwrap(),
        server.port().unwrap_or(5432)
    );
    let upstream: SocketAddr = tokio::net::lookup_host(upstream)
        .await
        .unwrap()
        .next()
        .unwrap();
    let (proxy, recording) = recording_proxy(upstream).await;
    (through(proxy, &app.database_url), recording)
}

/// Each message that pins, with why.
fn pinned(sent: &[Sent]) -> Vec<String> {
    sent.iter().flat_map(pinning).collect()
}

#[test]
fn the_check_knows_what_pins() {
    let parse = |name: &str, sql: &str| Sent::Parse {
        name: name.into(),
        sql: sql.into(),
    };
    let query = |sql: &str| Sent::Query(sql.into());
    for pins in [
        parse("s0", "SELECT 1"),
        query("SET statement_timeout = 1000"),
        query("SELECT 1; set local jit = off"),
        parse("", "SELECT set_config('jit', 'off', true)"),
        parse("", "SELECT pg_advisory_lock($1)"),
        parse("", "SELECT pg_try_advisory_lock($1)"),
        query("CREATE TEMP TABLE t (x int)"),
        query("PREPARE p AS SELECT 1"),
        query("DISCARD ALL"),
        query("LISTEN prices"),
        parse("", "SELECT nextval('s')"),
        query(&format!("SELECT '{}'", "x".repeat(17 * 1024))),
    ] {
        assert!(!pinning(&pins).is_empty(), "{pins:?} pins");
    }
    for passes in [
        parse("", "SELECT pg_advisory_xact_lock($1)"),
        parse("", "SELECT pg_try_advisory_xact_lock($1)"),
        parse("", "UPDATE ingest_runs SET status = $2 WHERE run_id = $1"),
        query("CREATE FUNCTION f() RETURNS int LANGUAGE plpgsql AS $$ BEGIN EXECUTE 'x'; RETURN 1; END $$"),
        query("BEGIN"),
    ] {
        assert!(pinning(&passes).is_empty(), "{passes:?} does not pin");
    }
}

#[tokio::test]
async fn a_first_migration_pins_only_with_v3_and_v6_and_a_current_schema_check_not_at_all() {
    let database = fresh_database().await;
    let app = spawn_app().await; // for its stub and settings; migrated through the proxy below
    let (url, recording) = proxy_for(&app).await;
    let url = url.replace(
        app.database_url.rsplit('/').next().unwrap(),
        database.url.rsplit('/').next().unwrap(),
    );

    let first = cli(&app, &["migrate"], &[("DATABASE_URL", &url)]).await;
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let sent = recording.take();
    let again = cli(&app, &["migrate"], &[("DATABASE_URL", &url)]).await;
    assert!(again.status.success());

    assert_eq!(pinned(&sent), FIRST_MIGRATION_ONLY);
    assert!(sent.len() > 10, "recorded {} messages", sent.len());
    assert_eq!(pinned(&recording.take()), Vec::<String>::new());
}

#[tokio::test]
async fn a_run_publishing_its_changes_a_backfill_status_and_changes_pin_nothing() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let (url, recording) = proxy_for(&app).await;
    let through_proxy = [("DATABASE_URL", url.as_str())];
    let (bus, _queue) =
        common::moto::bus_to_queue(serde_json::json!({"source": ["coingecko-cdc"]})).await;
    let moto = common::moto::endpoint();

    let run = cli(
        &app,
        &["run"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("EVENT_BUS_NAME", &bus),
            ("AWS_ENDPOINT_URL_EVENTBRIDGE", &moto),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ],
    )
    .await;
    let run_sent = recording.take();
    let status = cli(&app, &["status", "--json"], &through_proxy).await;
    let status_sent = recording.take();
    let changes = cli(&app, &["changes", "--since", "0"], &through_proxy).await;
    let changes_sent = recording.take();
    let chart = wiremock::MockServer::start().await;
    ChartBook::default().serve_on(&chart).await;
    let backfill = cli(
        &app,
        &["backfill", "--days", "30", "--coins", "bitcoin"],
        &[
            ("DATABASE_URL", url.as_str()),
            ("COINGECKO_BASE_URL", &chart.uri()),
        ],
    )
    .await;
    let backfill_sent = recording.take();

    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let summary = stdout_json(&run);
    assert!(summary["history_inserted"].as_u64().unwrap() > 0);
    assert_eq!(
        summary["events_published"], summary["history_inserted"],
        "{summary}"
    );
    assert!(changes.status.success() && !changes.stdout.is_empty());
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(
        backfill.status.success(),
        "{}",
        String::from_utf8_lossy(&backfill.stderr)
    );
    for (what, sent, at_least) in [
        ("run", &run_sent, 10),
        ("status", &status_sent, 4),
        ("changes", &changes_sent, 1),
        ("backfill", &backfill_sent, 10),
    ] {
        assert!(
            sent.len() >= at_least,
            "{what}: recorded {} messages",
            sent.len()
        );
        assert_eq!(pinned(sent), Vec::<String>::new(), "{what}");
    }
}
