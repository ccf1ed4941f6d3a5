//! The EventBridge edge: puts the feed's events on the bus `EVENT_BUS_NAME` names, sending again
//! the entries EventBridge could not take.

use std::time::Duration;

use aws_sdk_eventbridge::config::retry::RetryConfig;
use aws_sdk_eventbridge::config::timeout::TimeoutConfig;
use aws_sdk_eventbridge::error::ProvideErrorMetadata;
use aws_sdk_eventbridge::primitives::DateTime as AwsDateTime;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;

use crate::error_chain::error_chain;
use crate::feed::{Event, EVENT_DETAIL_TYPE, EVENT_SOURCE};

/// Tries of an entry EventBridge failed (throttled, an internal error) before the call fails.
const ENTRY_ATTEMPTS: u32 = 3;

/// A publish that failed: what EventBridge or the network said, and what to check. Never
/// carries credentials.
#[derive(Debug, thiserror::Error)]
#[error("EventBridge bus {bus:?} (EVENT_BUS_NAME): {problem}")]
pub struct PublishError {
    pub bus: String,
    pub problem: String,
}

pub struct EventBus {
    client: aws_sdk_eventbridge::Client,
    name: String,
    /// Why nothing can be put on the bus whatever EventBridge says (no region, another region).
    misconfigured: Option<String>,
}

impl EventBus {
    /// A client for the bus, built once (at the Lambda's cold start). Short timeouts and one
    /// retry: publishing must not hold a run up when EventBridge cannot be reached.
    pub fn new(aws: &aws_config::SdkConfig, name: &str) -> Self {
        let config = aws_sdk_eventbridge::config::Builder::from(aws)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(Duration::from_secs(3))
                    .operation_timeout(Duration::from_secs(6))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(2))
            .build();
        let region = aws.region().map(|r| r.as_ref().to_string());
        Self {
            client: aws_sdk_eventbridge::Client::from_conf(config),
            name: name.to_string(),
            misconfigured: misconfiguration(name, region.as_deref()),
        }
    }

    fn fail(&self, problem: String) -> PublishError {
        PublishError {
            bus: self.name.clone(),
            problem,
        }
    }

    /// Puts one call's events (see [`crate::feed::put_events_calls`]); the entries EventBridge
    /// failed are sent again, up to [`ENTRY_ATTEMPTS`] tries.
    pub async fn put(&self, events: &[Event]) -> Result<(), PublishError> {
        if let Some(problem) = &self.misconfigured {
            return Err(self.fail(problem.clone()));
        }
        let mut pending: Vec<&Event> = events.iter().collect();
        let mut pause = Duration::from_millis(100);
        for attempt in 1..=ENTRY_ATTEMPTS {
            let entries = pending.iter().map(|event| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.name)
                    .source(EVENT_SOURCE)
                    .detail_type(EVENT_DETAIL_TYPE)
                    .detail(&event.detail)
                    .time(AwsDateTime::from_millis(event.time.timestamp_millis()))
                    .build()
            });
            let answer = self
                .client
                .put_events()
                .set_entries(Some(entries.collect()))
                .send()
                .await
                .map_err(|e| self.fail(refused(&e, e.code(), e.message())))?;
            let failed: Vec<(&Event, String)> = pending
                .iter()
                .zip(answer.entries())
                .filter_map(|(event, result)| {
                    result.error_code().map(|code| {
                        let message = result.error_message().unwrap_or_default();
                        (*event, format!("{code}: {message}"))
                    })
                })
                .collect();
            let Some((first, problem)) = failed.first() else {
                return Ok(());
            };
            if attempt == ENTRY_ATTEMPTS {
                return Err(self.fail(format!(
                    "{} of {} entries refused {ENTRY_ATTEMPTS} times, the first (seq {}) with {problem}",
                    failed.len(),
                    events.len(),
                    first.seq,
                )));
            }
            pending = failed.into_iter().map(|(event, _)| event).collect();
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
        Ok(())
    }
}

/// What a refused or failed call means, and what to do.
fn refused(
    error: &(dyn std::error::Error + 'static),
    code: Option<&str>,
    message: Option<&str>,
) -> String {
    let said = format!("{}: {}", code.unwrap_or("error"), message.unwrap_or(""));
    match code {
        Some("ResourceNotFoundException") => {
            format!("{said}: the bus does not exist in this region; create it, or set EVENT_BUS_NAME (template parameter EventBusName) to one that does")
        }
        Some("AccessDeniedException" | "UnrecognizedClientException" | "NotAuthorized") => {
            format!("{said}: the function's role may not events:PutEvents on this bus; deploy the template with EventBusName set, or grant it")
        }
        Some(_) => said,
        None => format!(
            "cannot reach EventBridge ({}): the changes stay in the backlog for the next run",
            error_chain(error)
        ),
    }
}

/// Why no event can go to bus `name` from `region`: no region, or an ARN of another region.
fn misconfiguration(name: &str, region: Option<&str>) -> Option<String> {
    let Some(region) = region else {
        return Some("no AWS region: set AWS_REGION (Lambda sets it)".into());
    };
    let bus_region = name
        .strip_prefix("arn:")
        .and_then(|arn| arn.split(':').nth(2))?;
    (bus_region != region).then(|| {
        format!("the bus is in {bus_region}, but the function runs in {region} (AWS_REGION): PutEvents reaches only buses of its own region; name a bus of {region}, or route to the other region with a rule there")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_says_what_to_check() {
        let cause = std::io::Error::other("connection refused");
        let denied = refused(
            &cause,
            Some("AccessDeniedException"),
            Some("User is not authorized to perform: events:PutEvents"),
        );
        assert!(
            denied.starts_with("AccessDeniedException: User is not authorized")
                && denied.contains("may not events:PutEvents on this bus"),
            "{denied}"
        );
        let missing = refused(
            &cause,
            Some("ResourceNotFoundException"),
            Some("Event bus x does not exist."),
        );
        assert!(
            missing.contains("create it, or set EVENT_BUS_NAME"),
            "{missing}"
        );
        let unreachable = refused(&cause, None, None);
        assert!(
            unreachable.starts_with("cannot reach EventBridge (connection refused)"),
            "{unreachable}"
        );
    }

    #[test]
    fn a_bus_of_another_region_or_no_region_is_refused_before_any_call() {
        let arn = "arn:aws:events:eu-west-1:123456789012:event-bus/prices";
        assert!(misconfiguration(arn, Some("us-east-1"))
            .unwrap()
            .contains("the bus is in eu-west-1, but the function runs in us-east-1"));
        assert_eq!(misconfiguration(arn, Some("eu-west-1")), None);
        assert_eq!(misconfiguration("prices", Some("us-east-1")), None);
        assert!(misconfiguration("prices", None)
            .unwrap()
            .contains("AWS_REGION"));
    }
}
