//! What an invocation asks for, read from the event payload. Pure: no I/O.
//!
//! The trigger id makes retries idempotent: a run whose trigger id already has a
//! succeeded run does nothing. It must therefore be stable across retries of the
//! same scheduled firing.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised event ({found}): expected an EventBridge scheduled event (its \"id\" is the trigger id), EventBridge Scheduler's input {{\"trigger_id\": \"…\"}} or its default envelope (its scheduled \"time\" is the trigger id), or {{}} for a run without a trigger id; the Lambda function also takes {{\"migrate\": true}}, which applies the database migrations")]
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
}

/// What `event` asks for: the migrations, or a run.
pub fn request(event: &Value) -> Result<Request, EventError> {
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
