//! The Lambda handler, called as the runtime calls it: with a `LambdaEvent`.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use coingecko_cdc::app::{Migrated, Response};
use coingecko_cdc::lambda::{backfill_metrics_record, handle, metrics_record};
use coingecko_cdc::secrets::{SecretError, SecretSource};
use coingecko_cdc::summary::{
    BackfillOutcome, BackfillSummary, Counts, Requests, RunState, Summary, Timings,
};
use common::{fixture, spawn_app};
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::{json, Value};
use uuid::Uuid;

/// Secrets held in memory, counting how often each is read.
#[derive(Default)]
struct MemorySecrets {
    values: Mutex<HashMap<String, String>>,
    reads: Mutex<usize>,
}

impl SecretSource for MemorySecrets {
    async fn secret_string(&self, secret_id: &str) -> Result<String, SecretError> {
        *self.reads.lock().unwrap() += 1;
        self.values
            .lock()
            .unwrap()
            .get(secret_id)
            .cloned()
            .ok_or_else(|| SecretError {
                secret_id: secret_id.into(),
                problem: "not found".into(),
            })
    }
}

fn event(file: &str) -> LambdaEvent<Value> {
    let text =
        std::fs::read_to_string(format!("{}/events/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    LambdaEvent::new(serde_json::from_str(&text).unwrap(), Context::default())
}

/// The summary of an invocation that asked for a run.
fn summary(response: Response) -> Summary {
    match response {
        Response::Run(summary) => summary,
        other => panic!("not a run: {other:?}"),
    }
}

/// The migrations shipped in migrations/, by name (`V1__initial`), in order.
fn shipped_migrations() -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
            .unwrap()
            .map(|entry| {
                let name = entry.unwrap().file_name().into_string().unwrap();
                name.trim_end_matches(".sql").to_string()
            })
            .collect();
    names.sort_by_key(|name| name[1..name.find("__").unwrap()].parse::<u32>().unwrap());
    names
}

#[tokio::test]
async fn each_event_in_events_does_what_it_asks_and_a_redelivery_is_a_duplicate() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let function = app.app_with(&[], MemorySecrets::default()).await;
    let runs = [
        (
            "eventbridge-rule.json",
            Some("7bf73129-1428-4cd3-a780-95db273d1602"),
        ),
        ("scheduler-input.json", Some("2026-11-27T15:00:00Z")),
        ("scheduler-envelope.json", Some("2026-11-27T15:05:00Z")),
        ("manual.json", None),
    ];
    let mut tested: Vec<&str> = runs.iter().map(|(file, _)| *file).collect();
    tested.extend(["migrate.json", "backfill.json"]);
    tested.sort();
    let mut present: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/events"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
    present.sort();
    assert_eq!(present, tested, "every file in events/ is tested here");

    for (file, trigger) in runs {
        let run = summary(handle(&function, event(file)).await.unwrap());
        assert_eq!(run.trigger_id.as_deref(), trigger, "{file}");
        assert_eq!(run.status, RunState::Succeeded, "{file}");
    }
    let again = summary(
        handle(&function, event("eventbridge-rule.json"))
            .await
            .unwrap(),
    );
    assert_eq!(again.status, RunState::Duplicate);
    assert_eq!(app.count("price_history").await, 100);
    // The tracked coins' live rows are from 2024, before the last 365 days: the backfill has
    // nothing to fill, and asks CoinGecko nothing.
    common::market_chart::ChartBook::default()
        .serve_on(&app.coingecko)
        .await;
    let Response::Backfill(backfilled) = handle(&function, event("backfill.json")).await.unwrap()
    else {
        panic!("not a backfill")
    };
    assert_eq!(backfilled.outcome, BackfillOutcome::AlreadyDone);
    assert_eq!(
        (
            backfilled.chunks_done,
            backfilled.calls,
            backfilled.history_inserted
        ),
        (0, 0, 0)
    );
    let migrated = handle(&function, event("migrate.json")).await.unwrap();
    assert_eq!(
        migrated,
        Response::Migrated(Migrated { applied: vec![] }),
        "the schema was current"
    );
    assert_eq!(
        app.count("ingest_runs WHERE kind = 'live'").await,
        4,
        "a migrate request is no run"
    );
    assert_eq!(app.count("ingest_runs WHERE kind = 'backfill'").await, 1);
}

#[tokio::test]
async fn a_migrate_request_applies_the_migrations_whatever_auto_migrate_says() {
    let mut app = spawn_app().await;
    let unmigrated = common::fresh_database().await;
    app.set("DATABASE_URL", &unmigrated.url);
    let function = app
        .app_with(&[("AUTO_MIGRATE", "false")], MemorySecrets::default())
        .await;

    let first = handle(&function, event("migrate.json")).await.unwrap();
    let again = handle(&function, event("migrate.json")).await.unwrap();

    let answer = serde_json::to_value(&first).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"status": "migrated", "applied": shipped_migrations()})
    );
    assert_eq!(again, Response::Migrated(Migrated { applied: vec![] }));
    let runs: i64 = common::connect(&unmigrated.url)
        .await
        .query_one("SELECT count(*) FROM ingest_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 0);
    assert!(app.coingecko.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_secret_without_host_and_an_empty_db_host_name_the_setting_and_the_parameter() {
    let app = spawn_app().await;
    let secrets = MemorySecrets::default();
    secrets.values.lock().unwrap().insert(
        "db-secret".into(),
        r#"{"username":"postgres","password":"unused"}"#.into(),
    );
    // What the template sets when its DbHost parameter is left empty.
    let function = app
        .app_with(&[("DB_SECRET_ID", "db-secret"), ("DB_HOST", "")], secrets)
        .await;

    let diagnostic: Diagnostic = handle(&function, event("manual.json"))
        .await
        .unwrap_err()
        .into();

    assert_eq!(diagnostic.error_type, "DatabaseUnreachable");
    let message = diagnostic.error_message;
    assert!(
        message.contains("secret db-secret has no \"host\"")
            && message.contains("set DB_HOST")
            && message.contains("DbHost"),
        "{message}"
    );
}

#[tokio::test]
async fn an_unrecognised_event_is_a_function_error_that_says_what_was_expected() {
    let app = spawn_app().await;
    let function = app.app_with(&[], MemorySecrets::default()).await;
    let bad = LambdaEvent::new(serde_json::json!({"detail": "?"}), Context::default());

    let diagnostic: Diagnostic = handle(&function, bad).await.unwrap_err().into();

    assert_eq!(diagnostic.error_type, "UnrecognisedEvent");
    assert!(diagnostic
        .error_message
        .contains("expected an EventBridge scheduled event"));
    assert!(app.coingecko.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_run_is_a_function_error_named_after_its_cause() {
    let app = spawn_app().await;
    app.serve(&["<html>502 Bad Gateway</html>".into()]).await;
    let function = app
        .app_with(&[("COINGECKO_MAX_ATTEMPTS", "1")], MemorySecrets::default())
        .await;

    let diagnostic: Diagnostic = handle(&function, event("manual.json"))
        .await
        .unwrap_err()
        .into();

    assert_eq!(diagnostic.error_type, "CoinGeckoFailed");
    assert!(
        diagnostic.error_message.contains("CoinGecko page 1"),
        "{}",
        diagnostic.error_message
    );
    assert_eq!(app.count("price_history").await, 0);
}

#[tokio::test]
async fn a_crawl_longer_than_the_time_left_before_the_deadline_fails_before_fetching() {
    let app = spawn_app().await;
    let function = app
        .app_with(
            &[
                ("TOP_N", "2500"),
                ("COINGECKO_MAX_CALLS_PER_MIN", "10"),
                ("FETCH_BUDGET_SECS", "900"),
                ("DB_LOCK_TIMEOUT_SECS", "5"),
                ("DB_STATEMENT_TIMEOUT_SECS", "5"),
            ],
            MemorySecrets::default(),
        )
        .await;
    // 60 s to go, 10 of them kept for the apply: 50 s for 10 pages, 6 s apart, which need 54 s.
    let mut context = Context::default();
    context.deadline = (chrono::Utc::now().timestamp_millis() + 60_000) as u64;
    let event = LambdaEvent::new(serde_json::json!({}), context);

    let diagnostic: Diagnostic = handle(&function, event).await.unwrap_err().into();

    assert_eq!(diagnostic.error_type, "CoinGeckoFailed");
    let message = diagnostic.error_message;
    assert!(
        message.contains("10 calls at 10 requests a minute")
            && message.contains("54s")
            && message.contains("before the function times out"),
        "{message}"
    );
    assert!(app.coingecko.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn credentials_come_from_the_secret_once_and_the_connection_stays_warm() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let url: tokio_postgres::Config = app.database_url.parse().unwrap();
    let secrets = MemorySecrets::default();
    secrets.values.lock().unwrap().insert(
        "db-secret".into(),
        format!(
            r#"{{"username":"postgres","password":"unused-with-trust-auth","dbname":"{}"}}"#,
            url.get_dbname().unwrap()
        ),
    );
    let function = app
        .app_with(
            &[
                ("DB_SECRET_ID", "db-secret"),
                ("DB_HOST", "127.0.0.1"),
                ("DB_PORT", "5432"),
            ],
            secrets,
        )
        .await;

    let cold = summary(handle(&function, event("manual.json")).await.unwrap());
    let warm = summary(handle(&function, event("manual.json")).await.unwrap());

    assert_eq!((cold.history_inserted, warm.history_inserted), (100, 0));
    let backends: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'coingecko-cdc' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(backends, 1, "one connection, reused");
}

#[tokio::test]
async fn a_closed_connection_is_reopened_on_the_next_invocation() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let function = app.app_with(&[], MemorySecrets::default()).await;
    handle(&function, event("manual.json")).await.unwrap();

    app.db
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;

    let reopened = summary(handle(&function, event("manual.json")).await.unwrap());
    assert_eq!(reopened.status, RunState::Succeeded);
}

fn a_run() -> Summary {
    Summary::succeeded(
        Uuid::nil(),
        Some("t".into()),
        vec![Counts {
            vs_currency: "usd".into(),
            fetched: 10,
            rejected: 1,
            upserted: 4,
            history_inserted: 3,
            out_of_order: 2,
            unrequested: 0,
            outside_retention: 1,
        }],
        Requests { pages: 1, calls: 1 },
        Timings {
            duration: Duration::from_millis(1234),
            fetch: Duration::from_millis(900),
            apply: Duration::from_millis(200),
            raw: Duration::from_millis(100),
        },
    )
}

/// The figures a run's EMF record carries, besides `Duplicate`.
const FIGURES: [&str; 11] = [
    "Fetched",
    "Rejected",
    "HistoryInserted",
    "OutOfOrder",
    "OutsideRetention",
    "Duration",
    "FetchDuration",
    "ApplyDuration",
    "RawDuration",
    "Calls",
    "AbandonedRuns",
];

/// The metric names an EMF record declares, each checked to have a value in the record.
fn declared_metrics(record: &Value) -> Vec<&str> {
    let declared: Vec<&str> = record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for name in &declared {
        assert!(record[name].is_u64(), "{name} has a value in {record}");
    }
    declared
}

#[test]
fn metrics_are_an_embedded_metric_format_record() {
    let record = metrics_record(&a_run(), 1_700_000_000_000);
    assert_eq!(
        declared_metrics(&record),
        [FIGURES.as_slice(), &["Duplicate"]].concat()
    );
    assert_eq!(record["HistoryInserted"], 3);
    assert_eq!(record["OutOfOrder"], 2);
    assert_eq!(record["OutsideRetention"], 1);
    assert_eq!(record["Duration"], 1234);
    assert_eq!(
        (
            &record["FetchDuration"],
            &record["ApplyDuration"],
            &record["RawDuration"]
        ),
        (&json!(900), &json!(200), &json!(100))
    );
    assert_eq!(record["Duplicate"], 0);
    assert_eq!(record["VsCurrency"], "usd");
    assert_eq!(record["_aws"]["Timestamp"], 1_700_000_000_000_i64);
}

#[tokio::test]
async fn a_lambda_runs_lease_ends_with_its_deadline_and_it_counts_the_dead_runs_it_finds() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    // A run killed by an earlier timeout, its lease long over.
    let dead = Uuid::now_v7();
    app.db
        .execute(
            "INSERT INTO ingest_runs (run_id, status, started_at, lease_until)
             VALUES ($1, 'running', now() - interval '20 minutes', now() - interval '5 minutes')",
            &[&dead],
        )
        .await
        .unwrap();
    let function = app
        .app_with(
            &[
                ("FETCH_BUDGET_SECS", "600"),
                ("DB_LOCK_TIMEOUT_SECS", "5"),
                ("DB_STATEMENT_TIMEOUT_SECS", "8"),
            ],
            MemorySecrets::default(),
        )
        .await;
    let mut context = Context::default();
    let deadline = chrono::Utc::now() + chrono::TimeDelta::seconds(40);
    context.deadline = deadline.timestamp_millis() as u64;

    let run = summary(
        handle(&function, LambdaEvent::new(json!({}), context))
            .await
            .unwrap(),
    );

    assert_eq!(run.abandoned_runs, 1);
    assert_eq!(metrics_record(&run, 0)["AbandonedRuns"], 1);
    let row = app
        .db
        .query_one(
            "SELECT (SELECT status FROM ingest_runs WHERE run_id = $1),
                    (SELECT lease_until FROM ingest_runs WHERE run_id = $2)",
            &[&dead, &run.run_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "abandoned");
    // The fetch stops 13 s before the deadline (the apply's limits); the lease adds the lock's
    // 5 s and 5 s of margin: 3 s before the deadline, whatever FETCH_BUDGET_SECS says.
    let lease: chrono::DateTime<chrono::Utc> = row.get(1);
    let before_deadline = (deadline - lease).num_milliseconds();
    assert!(
        (2_500..=3_000).contains(&before_deadline),
        "lease ends {before_deadline} ms before the deadline"
    );
}

#[test]
fn a_duplicate_counts_once_and_repeats_none_of_the_first_runs_figures() {
    let record = metrics_record(&a_run().into_duplicate(), 1_700_000_000_000);
    assert_eq!(declared_metrics(&record), ["Duplicate"]);
    assert_eq!(record["Duplicate"], 1);
    for figure in FIGURES {
        assert!(record.get(figure).is_none(), "{figure} in {record}");
    }
    assert_eq!(record["status"], "duplicate");
    assert_eq!(record["VsCurrency"], "usd");
}

#[test]
fn a_backfill_invocation_has_metrics_of_its_own() {
    let mut summary = BackfillSummary::new(Uuid::nil());
    summary.chunks_done = 22;
    summary.chunks_left = 728;
    summary.calls = 23;
    summary.outcome = BackfillOutcome::OutOfTime;
    let record = backfill_metrics_record(&summary, 1_700_000_000_000);
    assert_eq!(
        declared_metrics(&record),
        [
            "BackfillChunks",
            "BackfillChunksLeft",
            "BackfillChunksRefused",
            "BackfillCalls",
            "BackfillHistoryInserted",
            "BackfillDuration"
        ]
    );
    assert_eq!(
        (&record["BackfillChunksLeft"], &record["BackfillCalls"]),
        (&json!(728), &json!(23))
    );
    assert_eq!(record["Kind"], "backfill");
    assert_eq!(record["outcome"], "out_of_time");
    assert_eq!(
        record["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
        json!([["Kind"]])
    );
}

#[tokio::test]
async fn a_connection_killed_during_the_apply_fails_the_run_cleanly_and_the_next_catches_up() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let function = app.app_with(&[], MemorySecrets::default()).await;
    handle(&function, event("manual.json")).await.unwrap();
    let before = app.price_tables().await;
    app.serve(&[fixture("markets-2024-09-08.json")]).await;

    // The test holds the run lock; once the run asks for it inside its transaction, its
    // backend is terminated, as a failover or a network cut would.
    let lock = coingecko_cdc::store::RUN_LOCK;
    app.db
        .execute("SELECT pg_advisory_lock($1)", &[&lock])
        .await
        .unwrap();
    let cut = async {
        loop {
            let waiting = app
                .db
                .query_opt(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database()
                     AND pid <> pg_backend_pid() AND query LIKE '%pg_try_advisory_xact_lock%'",
                    &[],
                )
                .await
                .unwrap();
            if let Some(row) = waiting {
                let pid: i32 = row.get(0);
                app.db
                    .execute("SELECT pg_terminate_backend($1)", &[&pid])
                    .await
                    .unwrap();
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        app.db
            .execute("SELECT pg_advisory_unlock($1)", &[&lock])
            .await
            .unwrap();
    };
    let (outcome, ()) = tokio::join!(handle(&function, event("manual.json")), cut);

    let error = outcome.unwrap_err().to_string();
    assert!(error.contains("PostgreSQL"), "{error}");
    assert_eq!(app.price_tables().await, before, "nothing half-applied");
    assert_eq!(
        app.failed_runs().await,
        [error],
        "recorded on a new connection"
    );

    let next = summary(handle(&function, event("manual.json")).await.unwrap());
    assert!(
        next.history_inserted > 50,
        "the next run catches up: {next:?}"
    );
}

/// The dashboard in template.yaml as CloudWatch reads it: `!Sub`'s `${…}` filled with a name.
fn dashboard() -> Value {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml")).unwrap();
    let start = template.find("DashboardBody: !Sub |").expect("a dashboard") + 21;
    let body: Vec<&str> = template[start..]
        .lines()
        .skip(1)
        .take_while(|line| line.is_empty() || line.starts_with("        "))
        .collect();
    let mut json = body.join("\n");
    while let Some(at) = json.find("${") {
        let end = at + json[at..].find('}').unwrap();
        json.replace_range(at..=end, "name");
    }
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"))
}

#[test]
fn the_dashboard_is_json_and_shows_only_metrics_the_function_emits() {
    let mut backfill = BackfillSummary::new(Uuid::nil());
    backfill.outcome = BackfillOutcome::Finished;
    let emitted: Vec<String> = [
        metrics_record(&a_run(), 0),
        metrics_record(&a_run().into_duplicate(), 0),
        metrics_record(
            &Summary {
                events_published: Some(1),
                events_backlog: Some(0),
                ..a_run()
            },
            0,
        ),
        backfill_metrics_record(&backfill, 0),
    ]
    .iter()
    .flat_map(|record| {
        declared_metrics(record)
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>()
    })
    .collect();
    let mut shown = Vec::new();
    for widget in dashboard()["widgets"].as_array().unwrap() {
        let Some(metrics) = widget["properties"]["metrics"].as_array() else {
            continue;
        };
        let mut namespace = String::new();
        for metric in metrics {
            let fields = metric.as_array().unwrap();
            // "." repeats the field of the line above, as CloudWatch reads it.
            if fields[0] != "." {
                namespace = fields[0].as_str().unwrap().to_string();
            }
            if namespace == "CoinGeckoCdc" {
                shown.push(fields[1].as_str().unwrap().to_string());
            }
        }
    }
    assert!(shown.len() >= 10, "{shown:?}");
    for name in &shown {
        assert!(
            emitted.contains(name),
            "the dashboard shows {name}, which nothing emits"
        );
    }
}

#[path = "lambda/eventbridge.rs"]
mod eventbridge;
#[path = "lambda/events.rs"]
mod events;
