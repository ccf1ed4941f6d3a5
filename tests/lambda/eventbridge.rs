//! The changes on EventBridge (moto's, with a rule of numeric matching and an SQS target, as a
//! consumer sets one up): what the queue receives after real runs, a process killed between its
//! commit and its publish, EventBridge unreachable and back, bad configuration, and the handler.

use std::time::Duration;

use crate::common::moto::{bus_to_queue, drain_queue, sdk_config};
use crate::common::{coin, page, spawn_app, TestApp};
use coingecko_cdc::app::{App, Response};
use coingecko_cdc::lambda::{handle, metrics_record};
use coingecko_cdc::secrets::{AwsConfig, SecretsManager};
use coingecko_cdc::summary::Summary;
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};

/// The template's alert rule (MoveAlertRule) with AlertMovePct = 2: "any coin that moved at least
/// 2 % since its last recorded price", live rows only.
fn alert_rule() -> Value {
    let template = include_str!("../../template.yaml");
    let pattern = template
        .lines()
        .find_map(|line| line.trim().strip_prefix("EventPattern: !Sub '"))
        .and_then(|rest| rest.strip_suffix('\''))
        .expect("MoveAlertRule's EventPattern in template.yaml");
    serde_json::from_str(&pattern.replace("${AlertMovePct}", "2")).expect("a JSON pattern")
}

/// The app of `app`'s database, publishing to `bus` through the AWS of `aws`.
async fn publishing(app: &TestApp, bus: &str, aws: aws_config::SdkConfig) -> App<SecretsManager> {
    app.app_with(
        &[("EVENT_BUS_NAME", bus), ("CDC_THRESHOLD_PCT", "0.5")],
        SecretsManager::with_config(AwsConfig::given(aws)),
    )
    .await
}

/// moto's configuration pointed at a port where nothing listens: EventBridge is down.
async fn unreachable() -> aws_config::SdkConfig {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    sdk_config()
        .await
        .into_builder()
        .endpoint_url(endpoint)
        .build()
}

const FIRST: &str = "2026-12-07T10:00:00.000Z";
const SECOND: &str = "2026-12-07T10:05:00.000Z";
const THIRD: &str = "2026-12-07T10:10:00.000Z";

/// Three coins first seen, then bitcoin up 2.5 %, ethereum up 1 %, dogecoin down 3 %.
fn answers() -> [String; 2] {
    [
        page(&[
            coin("bitcoin", "64000", FIRST),
            coin("ethereum", "3000.123456789012345678", FIRST),
            coin("dogecoin", "0.1", FIRST),
        ]),
        page(&[
            coin("bitcoin", "65600", SECOND),
            coin("ethereum", "3030.12469135690246913478", SECOND),
            coin("dogecoin", "0.097", SECOND),
        ]),
    ]
}

async fn run(app: &TestApp, function: &App<SecretsManager>, answer: &str) -> Summary {
    app.serve(&[answer.to_string()]).await;
    function.run(None, None).await.expect("the run succeeds")
}

fn seqs(details: &[Value]) -> Vec<i64> {
    let mut seqs: Vec<i64> = details.iter().map(|d| d["seq"].as_i64().unwrap()).collect();
    seqs.sort();
    seqs
}

#[tokio::test]
async fn the_queue_holds_exactly_the_moves_at_or_above_the_alert_with_exact_prices() {
    let app = spawn_app().await;
    let (bus, queue) = bus_to_queue(alert_rule()).await;
    let function = publishing(&app, &bus, sdk_config().await).await;
    let [first, second] = answers();

    let first = run(&app, &function, &first).await;
    let second = run(&app, &function, &second).await;

    assert_eq!(
        (
            first.events_published,
            first.events_backlog,
            &first.events_error
        ),
        (Some(3), Some(0), &None)
    );
    assert_eq!(
        (second.events_published, second.events_backlog),
        (Some(3), Some(0))
    );
    let mut alerts = drain_queue(&queue).await;
    alerts.sort_by_key(|d| d["seq"].as_i64());
    let moved: Vec<(&str, &str, &str, f64)> = alerts
        .iter()
        .map(|d| {
            (
                d["coin_id"].as_str().unwrap(),
                d["price"].as_str().unwrap(),
                d["previous_price"].as_str().unwrap(),
                d["pct_change"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        moved,
        [
            ("bitcoin", "65600", "64000", 2.5),
            ("dogecoin", "0.097", "0.1", -3.0)
        ],
        "only the moves of 2 % or more, either way; first sightings have no move"
    );
    let feed = app.store().await.changes_after(0, 100).await.unwrap();
    for alert in &alerts {
        let change = feed.iter().find(|c| c.seq == alert["seq"]).unwrap();
        assert_eq!(
            alert["run_id"],
            json!(change.run_id),
            "the event is the feed's change"
        );
        assert_eq!(
            alert["abs_pct_change"].as_f64(),
            alert["pct_change"].as_f64().map(f64::abs)
        );
        assert_eq!(alert["source_updated_at"], json!(change.source_updated_at));
    }
}

#[tokio::test]
async fn with_eventbridge_unreachable_runs_succeed_and_the_backlog_waits_then_goes_out_in_full() {
    let app = spawn_app().await;
    let (bus, queue) = bus_to_queue(json!({"source": ["coingecko-cdc"]})).await;
    let down = publishing(&app, &bus, unreachable().await).await;
    let [first, second] = answers();

    let first = run(&app, &down, &first).await;
    let second = run(&app, &down, &second).await;

    for (summary, backlog) in [(&first, 3), (&second, 6)] {
        assert_eq!(
            (summary.events_published, summary.events_backlog),
            (Some(0), Some(backlog))
        );
        let error = summary.events_error.as_deref().unwrap();
        assert!(
            error.contains(&bus)
                && error.contains("EVENT_BUS_NAME")
                && error.contains("cannot reach EventBridge"),
            "{error}"
        );
    }
    let record = metrics_record(&second, 0);
    assert_eq!(
        (&record["EventsPublished"], &record["EventsBacklog"]),
        (&json!(0), &json!(6)),
        "the metric says the backlog grows"
    );
    assert!(drain_queue(&queue).await.is_empty());

    let back = publishing(&app, &bus, sdk_config().await).await;
    app.serve(&[page(&[coin("bitcoin", "70000", THIRD)])]).await;
    let third = back.run(None, None).await.unwrap();

    assert_eq!(
        (third.events_published, third.events_backlog),
        (Some(7), Some(0))
    );
    let feed = app.store().await.changes_after(0, 100).await.unwrap();
    let details = drain_queue(&queue).await;
    assert_eq!(
        seqs(&details),
        feed.iter().map(|c| c.seq).collect::<Vec<_>>()
    );
    assert_eq!(details.len(), 7, "each change once");
}

#[tokio::test]
async fn a_bus_that_does_not_exist_is_named_in_the_summary_and_no_change_is_lost() {
    let app = spawn_app().await;
    let function = publishing(&app, "no-such-bus", sdk_config().await).await;
    let [first, _] = answers();

    let summary = run(&app, &function, &first).await;

    assert_eq!(
        (summary.events_published, summary.events_backlog),
        (Some(0), Some(3))
    );
    let error = summary.events_error.unwrap();
    assert!(
        error.contains("\"no-such-bus\" (EVENT_BUS_NAME)")
            && error.contains("ResourceNotFoundException")
            && error.contains("does not exist"),
        "{error}"
    );
    assert_eq!(summary.history_inserted, 3, "the run itself succeeded");
}

#[tokio::test]
async fn a_bus_of_another_region_is_refused_with_both_regions_named() {
    let app = spawn_app().await;
    let arn = "arn:aws:events:eu-west-1:123456789012:event-bus/prices";
    let function = publishing(&app, arn, sdk_config().await).await;
    let [first, _] = answers();

    let summary = run(&app, &function, &first).await;

    let error = summary.events_error.unwrap();
    assert!(
        error.contains("in eu-west-1, but the function runs in us-east-1"),
        "{error}"
    );
    assert_eq!(summary.events_backlog, Some(3));
}

#[tokio::test]
async fn the_handler_publishes_and_reports_it() {
    let app = spawn_app().await;
    let (bus, queue) = bus_to_queue(json!({"source": ["coingecko-cdc"]})).await;
    let function = publishing(&app, &bus, sdk_config().await).await;
    app.serve(&[answers()[0].clone()]).await;

    let answer = handle(&function, LambdaEvent::new(json!({}), Context::default()))
        .await
        .unwrap();

    let Response::Run(summary) = answer else {
        panic!("not a run: {answer:?}")
    };
    assert_eq!(
        (summary.events_published, summary.events_backlog),
        (Some(3), Some(0))
    );
    assert_eq!(drain_queue(&queue).await.len(), 3);
}

/// A stand-in for EventBridge that takes connections and never answers: the process is then
/// past its commit and inside its publish.
async fn silent_endpoint() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    (listener, endpoint)
}

#[tokio::test]
async fn a_process_killed_after_its_commit_and_before_its_publish_leaves_its_changes_to_the_next_run(
) {
    let app = spawn_app().await;
    let (bus, queue) = bus_to_queue(json!({"source": ["coingecko-cdc"]})).await;
    let [first, second] = answers();
    app.serve(&[first]).await;
    let (silent, endpoint) = silent_endpoint().await;
    let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(app.env())
        .env("EVENT_BUS_NAME", &bus)
        .env("AWS_ENDPOINT_URL_EVENTBRIDGE", &endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .kill_on_drop(true)
        .spawn()
        .unwrap();

    // The first PutEvents: the run has committed and is publishing.
    let (_connection, _) = tokio::time::timeout(Duration::from_secs(30), silent.accept())
        .await
        .expect("the run reached its publish")
        .unwrap();
    process.start_kill().unwrap();
    process.wait().await.unwrap();
    assert_eq!(app.count("price_feed").await, 3, "the run committed");
    assert!(
        drain_queue(&queue).await.is_empty(),
        "nothing was published"
    );

    let next = publishing(&app, &bus, sdk_config().await).await;
    let summary = run(&app, &next, &second).await;

    assert_eq!(
        (summary.events_published, summary.events_backlog),
        (Some(6), Some(0))
    );
    assert_eq!(
        seqs(&drain_queue(&queue).await),
        (1..=6).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn publishing_starts_no_call_past_its_budget_and_leaves_the_rest_for_the_next_run() {
    use crate::common::moto::aws_config_for;
    use crate::common::put_events::put_events_endpoint;
    let app = spawn_app().await;
    // A slow EventBridge: each call answers after two seconds.
    let slow = put_events_endpoint(Duration::from_secs(2)).await;
    // An apply bound of 3 s (the lock's wait and a statement), which the fetch leaves free.
    let function = app
        .app_with(
            &[
                ("EVENT_BUS_NAME", "prices"),
                ("DB_LOCK_TIMEOUT_SECS", "1"),
                ("DB_STATEMENT_TIMEOUT_SECS", "2"),
            ],
            SecretsManager::with_config(AwsConfig::given(aws_config_for(&slow.uri()).await)),
        )
        .await;
    let coins = crate::common::numbered_coins(0..250, "0.5");
    app.serve(&[page(&coins)]).await;

    // 10.5 s before the deadline, and a wave of calls may take up to 7: about 3.4 s to start waves
    // in, two of 8 calls a 2 s, not all 25.
    let started = std::time::Instant::now();
    let summary = function
        .run(None, Some(Duration::from_millis(10_500)))
        .await
        .unwrap();
    let took = started.elapsed();

    let (published, backlog) = (
        summary.events_published.unwrap(),
        summary.events_backlog.unwrap(),
    );
    assert_eq!(published + backlog, 250, "{summary:?}");
    assert!(
        (1..250).contains(&published),
        "some, not all, of 25 calls in waves of 8: {published}"
    );
    assert!(took < Duration::from_secs(8), "the run took {took:?}");
    assert_eq!(
        summary.events_error, None,
        "running out of time is no error"
    );

    let next = publishing(&app, "prices", aws_config_for(&slow.uri()).await).await;
    app.serve(&[page(&coins)]).await;
    let rest = next.run(None, None).await.unwrap();
    assert_eq!(
        (rest.events_published, rest.events_backlog),
        (Some(backlog), Some(0))
    );
}
