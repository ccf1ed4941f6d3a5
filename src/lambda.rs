//! The Lambda edge: turns an event into a run (or the migrations) and that into the function's result.

use std::time::Duration;

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

use crate::app::{App, AppError, Response};
use crate::backfill::BackfillError;
use crate::ingest::RunError;
use crate::secrets::SecretSource;
use crate::summary::{BackfillSummary, RunState, Summary};
use crate::trigger::{self, EventError};

/// A failed invocation: Lambda's retries, the dead-letter queue and the alarms see it.
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    App(#[from] AppError),
}

impl From<FunctionError> for Diagnostic {
    fn from(error: FunctionError) -> Self {
        let error_type = match &error {
            FunctionError::Event(_) => "UnrecognisedEvent",
            FunctionError::App(AppError::Connect(_)) => "DatabaseUnreachable",
            FunctionError::App(AppError::Migrate(_)) => "MigrationFailed",
            FunctionError::App(AppError::Run(RunError::Fetch(_))) => "CoinGeckoFailed",
            FunctionError::App(AppError::Run(_)) => "DatabaseFailed",
            FunctionError::App(AppError::Backfill(BackfillError::Plan(_))) => "BackfillNotPossible",
            FunctionError::App(AppError::Backfill(BackfillError::Fetch(_))) => "CoinGeckoFailed",
            FunctionError::App(AppError::Backfill(BackfillError::Store(_))) => "DatabaseFailed",
        };
        Diagnostic {
            error_type: error_type.into(),
            error_message: error.to_string(),
        }
    }
}

/// The function handler: a plain async function, tested by calling it with a `LambdaEvent`.
pub async fn handle<S: SecretSource>(
    app: &App<S>,
    event: LambdaEvent<Value>,
) -> Result<Response, FunctionError> {
    let request = trigger::request(&event.payload)?;
    let response = app.serve(request, time_left(&event.context)).await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    match &response {
        Response::Run(summary) => println!("{}", metrics_record(summary, now_ms)),
        Response::Backfill(summary) => println!("{}", backfill_metrics_record(summary, now_ms)),
        Response::Migrated(_) => {}
    }
    Ok(response)
}

/// The time until the invocation's deadline (epoch milliseconds). None when there is no usable
/// one: `cargo lambda watch` sends `600000`, a duration rather than a time.
fn time_left(context: &Context) -> Option<Duration> {
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).ok()?;
    (context.deadline > now_ms).then(|| Duration::from_millis(context.deadline - now_ms))
}

/// A CloudWatch Embedded Metric Format record: a log line that CloudWatch turns into metrics.
/// A duplicate (a redelivered event) counts as `Duplicate` 1 and repeats none of the first run's
/// figures, which sums would count twice; a real run counts `Duplicate` 0, so its average is the
/// share of redeliveries.
pub fn metrics_record(summary: &Summary, timestamp_ms: i64) -> Value {
    let mut metrics: Vec<(&str, &str, u64)> = if summary.status == RunState::Duplicate {
        vec![("Duplicate", "Count", 1)]
    } else {
        vec![
            ("Fetched", "Count", summary.fetched),
            ("Rejected", "Count", summary.rejected),
            ("HistoryInserted", "Count", summary.history_inserted),
            ("OutOfOrder", "Count", summary.out_of_order),
            ("OutsideRetention", "Count", summary.outside_retention),
            ("Duration", "Milliseconds", summary.duration_ms),
            ("FetchDuration", "Milliseconds", summary.fetch_ms),
            ("ApplyDuration", "Milliseconds", summary.apply_ms),
            ("RawDuration", "Milliseconds", summary.raw_ms),
            ("Calls", "Count", summary.calls),
            ("AbandonedRuns", "Count", summary.abandoned_runs),
            ("Duplicate", "Count", 0),
        ]
    };
    // Only with events on: a stack without a bus has no backlog to alarm on.
    if let (Some(published), Some(backlog)) = (summary.events_published, summary.events_backlog) {
        metrics.push(("EventsPublished", "Count", published));
        metrics.push(("EventsBacklog", "Count", backlog));
    }
    let mut record = emf(timestamp_ms, &metrics, "VsCurrency", &summary.vs_currency);
    record["run_id"] = json!(summary.run_id);
    record["status"] = json!(summary.status.as_str());
    record
}

/// A backfill invocation's figures, for the dashboard: what it did and what is left.
pub fn backfill_metrics_record(summary: &BackfillSummary, timestamp_ms: i64) -> Value {
    let metrics: &[(&str, &str, u64)] = &[
        ("BackfillChunks", "Count", summary.chunks_done),
        ("BackfillChunksLeft", "Count", summary.chunks_left),
        ("BackfillChunksRefused", "Count", summary.chunks_refused),
        ("BackfillCalls", "Count", summary.calls),
        ("BackfillHistoryInserted", "Count", summary.history_inserted),
        ("BackfillDuration", "Milliseconds", summary.duration_ms),
    ];
    let outcome = serde_json::to_value(summary.outcome).unwrap_or_default();
    let mut record = emf(timestamp_ms, metrics, "Kind", "backfill");
    record["run_id"] = json!(summary.run_id);
    record["outcome"] = outcome;
    record
}

/// A CloudWatch Embedded Metric Format record of `metrics` in the namespace `CoinGeckoCdc`, with
/// one dimension.
fn emf(timestamp_ms: i64, metrics: &[(&str, &str, u64)], dimension: &str, value: &str) -> Value {
    let declared: Vec<Value> = metrics
        .iter()
        .map(|(name, unit, _)| json!({"Name": name, "Unit": unit}))
        .collect();
    let mut record = json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "CoinGeckoCdc",
                "Dimensions": [[dimension]],
                "Metrics": declared
            }]
        },
    });
    record[dimension] = json!(value);
    for (name, _, figure) in metrics {
        record[*name] = json!(figure);
    }
    record
}
