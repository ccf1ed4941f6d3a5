//! The Lambda edge: turns an event into a run and the run into the function's result.

use std::time::Duration;

use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

use crate::app::{App, AppError};
use crate::ingest::RunError;
use crate::secrets::SecretSource;
use crate::summary::Summary;
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
            FunctionError::App(AppError::Run(run)) => match run.cause() {
                RunError::Fetch(_) => "CoinGeckoFailed",
                _ => "DatabaseFailed",
            },
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
) -> Result<Summary, FunctionError> {
    let trigger_id = trigger::trigger_id(&event.payload)?;
    let summary = app.run(trigger_id, time_left(&event.context)).await?;
    println!(
        "{}",
        metrics_record(&summary, chrono::Utc::now().timestamp_millis())
    );
    Ok(summary)
}

/// The time until the invocation's deadline (epoch milliseconds). None when there is no usable
/// one: `cargo lambda watch` sends `600000`, a duration rather than a time.
fn time_left(context: &Context) -> Option<Duration> {
    let now_ms = u64::try_from(chrono::Utc::now().timestamp_millis()).ok()?;
    (context.deadline > now_ms).then(|| Duration::from_millis(context.deadline - now_ms))
}

/// A CloudWatch Embedded Metric Format record: a log line that CloudWatch turns into metrics.
pub fn metrics_record(summary: &Summary, timestamp_ms: i64) -> Value {
    json!({
        "_aws": {
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": "CoinGeckoCdc",
                "Dimensions": [["VsCurrency"]],
                "Metrics": [
                    {"Name": "Fetched", "Unit": "Count"},
                    {"Name": "Rejected", "Unit": "Count"},
                    {"Name": "HistoryInserted", "Unit": "Count"},
                    {"Name": "Duration", "Unit": "Milliseconds"}
                ]
            }]
        },
        "VsCurrency": summary.vs_currency,
        "Fetched": summary.fetched,
        "Rejected": summary.rejected,
        "HistoryInserted": summary.history_inserted,
        "Duration": summary.duration_ms,
        "run_id": summary.run_id,
        "status": summary.status.as_str(),
    })
}
