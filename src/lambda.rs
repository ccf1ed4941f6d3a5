//! The Lambda edge: turns an event into a run and the run into the function's result.

use lambda_runtime::{Diagnostic, LambdaEvent};
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
    let summary = app.run(trigger_id).await?;
    println!(
        "{}",
        metrics_record(&summary, chrono::Utc::now().timestamp_millis())
    );
    Ok(summary)
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
