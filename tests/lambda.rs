//! The Lambda handler, called as the runtime calls it: with a `LambdaEvent`.

mod common;

use std::collections::HashMap;
use std::sync::Mutex;

use coingecko_cdc::lambda::{handle, metrics_record};
use coingecko_cdc::secrets::{SecretError, SecretSource};
use coingecko_cdc::summary::RunStatus;
use common::{fixture, spawn_app};
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::Value;

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

#[tokio::test]
async fn each_event_in_events_runs_once_and_a_redelivery_is_a_duplicate() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let function = app.app_with(&[], MemorySecrets::default()).await;

    for (file, trigger) in [
        (
            "eventbridge-rule.json",
            Some("7bf73129-1428-4cd3-a780-95db273d1602"),
        ),
        ("scheduler-input.json", Some("2026-11-27T15:00:00Z")),
        ("scheduler-envelope.json", Some("2026-11-27T15:05:00Z")),
        ("manual.json", None),
    ] {
        let summary = handle(&function, event(file)).await.unwrap();
        assert_eq!(summary.trigger_id.as_deref(), trigger, "{file}");
        assert_eq!(summary.status, RunStatus::Succeeded, "{file}");
    }
    let again = handle(&function, event("eventbridge-rule.json"))
        .await
        .unwrap();
    assert_eq!(again.status, RunStatus::Duplicate);
    assert_eq!(app.count("price_history").await, 100);
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
        message.contains("10 pages at 10 requests a minute")
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

    let cold = handle(&function, event("manual.json")).await.unwrap();
    let warm = handle(&function, event("manual.json")).await.unwrap();

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

    let summary = handle(&function, event("manual.json")).await.unwrap();
    assert_eq!(summary.status, RunStatus::Succeeded);
}

#[test]
fn metrics_are_an_embedded_metric_format_record() {
    let summary = coingecko_cdc::summary::Summary::succeeded(
        "r".into(),
        None,
        "usd".into(),
        coingecko_cdc::summary::Counts {
            fetched: 10,
            rejected: 1,
            upserted: 4,
            history_inserted: 3,
            pages: 1,
        },
        1234,
    );
    let record = metrics_record(&summary, 1_700_000_000_000);
    let declared: Vec<&str> = record["_aws"]["CloudWatchMetrics"][0]["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    assert_eq!(
        declared,
        ["Fetched", "Rejected", "HistoryInserted", "Duration"]
    );
    for name in declared {
        assert!(record[name].is_u64(), "{name} has a value");
    }
    assert_eq!(record["HistoryInserted"], 3);
    assert_eq!(record["Duration"], 1234);
    assert_eq!(record["VsCurrency"], "usd");
}

#[tokio::test]
async fn a_connection_killed_during_the_apply_fails_the_run_cleanly_and_the_next_catches_up() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    let function = app.app_with(&[], MemorySecrets::default()).await;
    handle(&function, event("manual.json")).await.unwrap();
    let before = app.price_tables().await;
    app.serve(&[fixture("markets-2024-09-08.json")]).await;

    // The test holds the run lock; once the run waits for it inside its transaction, its
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
                    "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a USING (pid)
                     WHERE l.locktype = 'advisory' AND NOT l.granted AND a.datname = current_database()",
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

    let next = handle(&function, event("manual.json")).await.unwrap();
    assert!(
        next.history_inserted > 50,
        "the next run catches up: {next:?}"
    );
}
