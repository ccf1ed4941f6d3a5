//! What an invocation asks for, read from the event payload. Pure: no I/O.
//!
//! The trigger id makes retries idempotent: a run whose trigger id already has a
//! succeeded run does nothing. It must therefore be stable across retries of the
//! same scheduled firing.

use serde::Deserialize;
use serde_json::Value;

use crate::backfill::{parse_instant, BackfillRequest, Granularity, Window};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised event ({found}): expected an EventBridge scheduled event (its \"id\" is the trigger id), EventBridge Scheduler's input {{\"trigger_id\": \"…\"}} or its default envelope (its scheduled \"time\" is the trigger id), or {{}} for a run without a trigger id; the Lambda function also takes {{\"migrate\": true}}, which applies the database migrations, and {{\"backfill\": {{\"days\": 365}}}}, which backfills history")]
pub struct EventError {
    found: String,
}

/// What an invocation asks the function to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// One ingest run, with the trigger id, if any, that makes its retries idempotent.
    Run { trigger_id: Option<String> },
    /// `{"migrate": true}`: apply the database migrations whatever `AUTO_MIGRATE` says, for an
    /// owner who can invoke the function but not reach the database.
    Migrate,
    /// `{"backfill": {"days": 365}}`: one backfill invocation (see [`backfill_request`]).
    Backfill(BackfillRequest),
}

/// What `event` asks for: the migrations, or a run.
pub fn request(event: &Value) -> Result<Request, EventError> {
    if let Some(backfill) = event.get("backfill") {
        if event.as_object().is_some_and(|fields| fields.len() == 1) {
            return backfill_request(backfill).map(Request::Backfill);
        }
        return Err(EventError {
            found: "\"backfill\" beside other keys".into(),
        });
    }
    match event.get("migrate") {
        None => Ok(Request::Run {
            trigger_id: trigger_id(event)?,
        }),
        Some(Value::Bool(true)) if event.as_object().is_some_and(|fields| fields.len() == 1) => {
            Ok(Request::Migrate)
        }
        Some(_) => Err(EventError {
            found: "\"migrate\" other than alone and true".into(),
        }),
    }
}

/// The trigger id carried by an event that asks for a run, if any.
pub fn trigger_id(event: &Value) -> Result<Option<String>, EventError> {
    let unrecognised = |found: String| Err(EventError { found });
    let Value::Object(fields) = event else {
        return unrecognised(format!("a JSON {}", kind(event)));
    };
    if let Some(id) = fields.get("trigger_id") {
        return match id {
            Value::String(id) if !id.trim().is_empty() => Ok(Some(id.clone())),
            Value::String(_) => {
                unrecognised("\"trigger_id\" is blank (empty or only spaces)".into())
            }
            other => unrecognised(format!("\"trigger_id\" is a {}, not a string", kind(other))),
        };
    }
    if let (Some(_), Some(source)) = (fields.get("detail-type"), fields.get("source")) {
        // Scheduler's execution id changes on every retry; its scheduled time does not.
        let key = if source == "aws.scheduler" {
            "time"
        } else {
            "id"
        };
        return match fields.get(key) {
            Some(Value::String(id)) if !id.is_empty() => Ok(Some(id.clone())),
            _ => unrecognised(format!("an EventBridge event without a string \"{key}\"")),
        };
    }
    if fields.is_empty() {
        return Ok(None);
    }
    let mut keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    keys.truncate(5);
    unrecognised(format!("an object with keys {keys:?}"))
}

/// The body of `{"backfill": {…}}`: `days` (the last N days) or `from` (and `to`, else now) as
/// dates or RFC 3339 times; `coins` (ids; default: the coins the live runs track); `granularity`
/// (`daily`, the default, or `hourly`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackfillPayload {
    days: Option<u32>,
    from: Option<String>,
    to: Option<String>,
    coins: Option<Vec<String>>,
    granularity: Option<String>,
}

/// What a `{"backfill": {…}}` event asks for.
pub fn backfill_request(body: &Value) -> Result<BackfillRequest, EventError> {
    let wrong = |problem: String| EventError {
        found: format!("\"backfill\" {problem}"),
    };
    let payload: BackfillPayload = serde_json::from_value(body.clone()).map_err(|e| {
        wrong(format!(
            "is not {{\"days\": N}} or {{\"from\": …, \"to\": …}} ({e})"
        ))
    })?;
    let time = |text: &Option<String>| {
        text.as_deref()
            .map(parse_instant)
            .transpose()
            .map_err(&wrong)
    };
    let window = match (payload.days, time(&payload.from)?, time(&payload.to)?) {
        (Some(0), ..) => return Err(wrong("asks for 0 days".into())),
        (Some(days), None, None) => Window::Days(days),
        (None, Some(from), to) => Window::Range { from, to },
        (Some(_), ..) => {
            return Err(wrong(
                "has \"days\" and \"from\" or \"to\": give one".into(),
            ))
        }
        (None, None, _) => return Err(wrong("needs \"days\" or \"from\"".into())),
    };
    let granularity = match payload.granularity.as_deref() {
        None => Granularity::Daily,
        Some(text) => text
            .parse()
            .map_err(|e: crate::backfill::UnknownGranularity| wrong(e.to_string()))?,
    };
    BackfillRequest::new(window, payload.coins, granularity).map_err(|e| wrong(e.to_string()))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_backfill_event_asks_for_a_window_its_coins_and_granularity() {
        assert_eq!(
            request(&json!({"backfill": {"days": 365}})).unwrap(),
            Request::Backfill(
                BackfillRequest::new(Window::Days(365), None, Granularity::Daily).unwrap()
            )
        );
        let Request::Backfill(asked) = request(&json!({"backfill": {
            "from": "2026-01-01", "to": "2026-03-01T12:00:00Z",
            "coins": ["bitcoin", "ethereum"], "granularity": "hourly"
        }}))
        .unwrap() else {
            panic!("not a backfill")
        };
        assert_eq!(asked.coins().unwrap(), ["bitcoin", "ethereum"]);
        assert_eq!(asked.granularity(), Granularity::Hourly);
        assert_eq!(
            asked.window(),
            Window::Range {
                from: "2026-01-01T00:00:00Z".parse().unwrap(),
                to: Some("2026-03-01T12:00:00Z".parse().unwrap()),
            }
        );
        for (event, expected) in [
            (json!({"backfill": {}}), "needs \"days\" or \"from\""),
            (json!({"backfill": {"days": 0}}), "0 days"),
            (
                json!({"backfill": {"days": 30, "from": "2026-01-01"}}),
                "give one",
            ),
            (json!({"backfill": {"days": "30"}}), "is not {\"days\": N}"),
            (
                json!({"backfill": {"days": 30, "dayz": 1}}),
                "unknown field",
            ),
            (json!({"backfill": {"from": "yesterday"}}), "not a date"),
            (json!({"backfill": {"days": 30, "granularity": "5m"}}), "5m"),
            (
                json!({"backfill": {"days": 30}, "migrate": true}),
                "beside other keys",
            ),
        ] {
            let error = request(&event).unwrap_err().to_string();
            assert!(error.contains(expected), "{event}: {error}");
        }
    }

    #[test]
    fn eventbridge_rule_event_uses_its_id() {
        let event = json!({
            "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
            "detail-type": "Scheduled Event", "source": "aws.events",
            "account": "123456789012", "time": "2026-11-27T15:00:00Z", "region": "eu-west-1",
            "resources": ["arn:aws:events:eu-west-1:123456789012:rule/every-minute"], "detail": {}
        });
        assert_eq!(
            trigger_id(&event).unwrap().as_deref(),
            Some("53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa")
        );
    }

    #[test]
    fn scheduler_input_uses_trigger_id() {
        let event = json!({"trigger_id": "2026-11-27T15:00:00Z"});
        assert_eq!(
            trigger_id(&event).unwrap().as_deref(),
            Some("2026-11-27T15:00:00Z")
        );
    }

    #[test]
    fn scheduler_envelope_uses_the_scheduled_time_not_the_execution_id() {
        let event = json!({
            "version": "0", "id": "8e0b9d8f-0c3e-4a4e-9c2f-6d3f0b1f2a77",
            "detail-type": "Scheduled Event", "source": "aws.scheduler",
            "time": "2026-11-27T15:05:00Z", "detail": "{}",
            "resources": ["arn:aws:scheduler:eu-west-1:123456789012:schedule/default/coingecko-cdc"]
        });
        assert_eq!(
            trigger_id(&event).unwrap().as_deref(),
            Some("2026-11-27T15:05:00Z")
        );
    }

    #[test]
    fn empty_object_has_no_trigger() {
        assert_eq!(trigger_id(&json!({})).unwrap(), None);
    }

    #[test]
    fn migrate_alone_and_true_asks_for_the_migrations() {
        assert_eq!(
            request(&json!({"migrate": true})).unwrap(),
            Request::Migrate
        );
        assert_eq!(
            request(&json!({"trigger_id": "t"})).unwrap(),
            Request::Run {
                trigger_id: Some("t".into())
            }
        );
        for event in [
            json!({"migrate": false}),
            json!({"migrate": "true"}),
            json!({"migrate": true, "trigger_id": "t"}),
        ] {
            let err = request(&event).unwrap_err().to_string();
            assert!(
                err.contains("\"migrate\" other than alone and true"),
                "{event}: {err}"
            );
        }
    }

    #[test]
    fn a_trigger_id_that_is_not_usable_says_what_it_is() {
        for (id, found) in [
            (json!(""), "\"trigger_id\" is blank"),
            (json!("  "), "\"trigger_id\" is blank"),
            (json!(5), "\"trigger_id\" is a number, not a string"),
        ] {
            let err = trigger_id(&json!({ "trigger_id": id }))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("unrecognised event ({found}")),
                "{err}"
            );
        }
    }

    #[test]
    fn a_migrate_request_is_no_run() {
        let err = trigger_id(&json!({"migrate": true}))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("the Lambda function also takes {\"migrate\": true}"),
            "{err}"
        );
    }

    #[test]
    fn anything_else_says_what_was_expected() {
        for event in [
            json!([]),
            json!("run"),
            json!(null),
            json!({"trigger_id": 5}),
            json!({"trigger_id": ""}),
            json!({"hello": "world"}),
            json!({"detail-type": "Scheduled Event", "source": "aws.events"}),
            json!({"detail-type": "Scheduled Event", "source": "aws.scheduler", "id": "x"}),
        ] {
            let err = request(&event).unwrap_err().to_string();
            assert!(
                err.contains("expected an EventBridge scheduled event"),
                "{err}"
            );
        }
    }
}
