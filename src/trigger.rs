//! What an invocation asks for, read from the event payload. Pure: no I/O.
//!
//! The trigger id makes retries idempotent: a run whose trigger id already has a
//! succeeded run does nothing. It must therefore be stable across retries of the
//! same scheduled firing.

use serde::Deserialize;
use serde_json::Value;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::backfill::{parse_instant, BackfillRequest, Granularity, Window};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unrecognised event ({found}): expected an EventBridge scheduled event (its \"id\" is the trigger id), EventBridge Scheduler's input {{\"trigger_id\": \"…\"}} or its default envelope (its scheduled \"time\" is the trigger id), or {{}} for a run without a trigger id; or {{\"migrate\": true}}, which applies the database migrations, or {{\"backfill\": {{\"days\": 365}}}}, which backfills history")]
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

/// The longest trigger id accepted, in characters: EventBridge's ids (36) and Scheduler's times
/// (20) with room to spare, and short enough for a log line and the `status` table.
pub const MAX_TRIGGER_ID_CHARS: usize = 256;
/// How much of a trigger id `status` shows: a UUID's length.
const SHOWN_TRIGGER_ID_CHARS: usize = 36;

/// What `event` asks for: the migrations, a backfill or a run. The Lambda and `run --event` both
/// read their payloads here. Our own shapes (`{"trigger_id": …}`, `{"migrate": true}`,
/// `{"backfill": …}`) refuse keys they do not know, naming them: a misspelt key would otherwise
/// turn a backfill or a migration into a live run. An EventBridge event keeps AWS's other keys.
pub fn request(event: &Value) -> Result<Request, EventError> {
    let Value::Object(fields) = event else {
        return unrecognised(format!("a JSON {}", kind(event)));
    };
    for key in ["backfill", "migrate", "trigger_id"] {
        let Some(value) = fields.get(key) else {
            continue;
        };
        let others: Vec<&str> = fields
            .keys()
            .map(String::as_str)
            .filter(|other| *other != key)
            .collect();
        if !others.is_empty() {
            return unrecognised(format!("\"{key}\" beside other keys {}", key_list(&others)));
        }
        return match key {
            "backfill" => backfill_request(value).map(Request::Backfill),
            "migrate" if value == &Value::Bool(true) => Ok(Request::Migrate),
            "migrate" => unrecognised(format!("\"migrate\" is {value}, not true")),
            _ => Ok(Request::Run {
                trigger_id: Some(usable_trigger_id("trigger_id", value)?),
            }),
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
            Some(id) => Ok(Request::Run {
                trigger_id: Some(usable_trigger_id(key, id)?),
            }),
            None => unrecognised(format!("an EventBridge event without \"{key}\"")),
        };
    }
    if fields.is_empty() {
        return Ok(Request::Run { trigger_id: None });
    }
    let keys: Vec<&str> = fields.keys().map(String::as_str).collect();
    unrecognised(format!("an object with keys {}", key_list(&keys)))
}

fn unrecognised<T>(found: String) -> Result<T, EventError> {
    Err(EventError { found })
}

/// A trigger id is stored and compared: it must be text PostgreSQL takes (no NUL), that a log line
/// and a table show as it is (no control characters, and no invisible ones: a zero-width space or
/// a right-to-left mark would make two ids look alike), and of a bounded length.
fn usable_trigger_id(key: &str, id: &Value) -> Result<String, EventError> {
    let Value::String(id) = id else {
        return unrecognised(format!("\"{key}\" is a {}, not a string", kind(id)));
    };
    let length = id.chars().count();
    let unseen = |c: &char| {
        matches!(
            c.general_category(),
            GeneralCategory::Control | GeneralCategory::Format
        )
    };
    if id.trim().is_empty() {
        unrecognised(format!("\"{key}\" is blank (empty or only spaces)"))
    } else if let Some(control) = id.chars().find(unseen) {
        let what = if control.is_control() {
            "control"
        } else {
            "invisible formatting"
        };
        unrecognised(format!(
            "\"{key}\" holds the {what} character U+{:04X}",
            u32::from(control)
        ))
    } else if length > MAX_TRIGGER_ID_CHARS {
        unrecognised(format!(
            "\"{key}\" is {length} characters long, more than {MAX_TRIGGER_ID_CHARS}"
        ))
    } else {
        Ok(id.clone())
    }
}

/// A trigger id as `status` shows it: whole when short, else its start and its end around `…`;
/// control characters (stored by earlier releases) as `�`.
pub fn shortened(id: &str) -> String {
    let visible = |c: char| if c.is_control() { '\u{FFFD}' } else { c };
    let length = id.chars().count();
    if length <= SHOWN_TRIGGER_ID_CHARS {
        return id.chars().map(visible).collect();
    }
    let tail = SHOWN_TRIGGER_ID_CHARS / 3;
    let head = SHOWN_TRIGGER_ID_CHARS - tail - 1;
    id.chars()
        .take(head)
        .chain(['…'])
        .chain(id.chars().skip(length - tail))
        .map(visible)
        .collect()
}

/// Keys for an error: at most five, each shortened, as JSON strings.
fn key_list(keys: &[&str]) -> String {
    let mut shown: Vec<String> = keys
        .iter()
        .take(5)
        .map(|key| format!("{:?}", shortened(key)))
        .collect();
    if keys.len() > 5 {
        shown.push(format!("and {} more", keys.len() - 5));
    }
    format!("[{}]", shown.join(", "))
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

    /// The trigger id of a run request.
    fn trigger_id(event: &Value) -> Result<Option<String>, EventError> {
        match request(event)? {
            Request::Run { trigger_id } => Ok(trigger_id),
            other => panic!("not a run: {other:?}"),
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
        for (event, expected) in [
            (json!({"migrate": false}), "\"migrate\" is false, not true"),
            (
                json!({"migrate": "true"}),
                "\"migrate\" is \"true\", not true",
            ),
            (
                json!({"migrate": true, "trigger_id": "t"}),
                "\"migrate\" beside other keys [\"trigger_id\"]",
            ),
        ] {
            let err = request(&event).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("unrecognised event ({expected})")),
                "{event}: {err}"
            );
        }
    }

    #[test]
    fn keys_beside_our_own_shapes_are_refused_by_name() {
        for (event, expected) in [
            (
                json!({"backfill": {"days": 3}, "trigger_id": "x"}),
                "\"backfill\" beside other keys [\"trigger_id\"]",
            ),
            (
                json!({"trigger_id": "x", "tigger": 1, "backfil": {}}),
                "\"trigger_id\" beside other keys [\"backfil\", \"tigger\"]",
            ),
            (json!({"hello": "world"}), "an object with keys [\"hello\"]"),
        ] {
            let err = request(&event).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("unrecognised event ({expected})")),
                "{event}: {err}"
            );
        }
        let many: serde_json::Map<String, Value> =
            (0..8).map(|i| (format!("k{i}"), json!(i))).collect();
        let err = request(&Value::Object(many)).unwrap_err().to_string();
        assert!(err.contains("\"k4\", and 3 more]"), "{err}");
    }

    #[test]
    fn a_trigger_id_that_is_not_usable_says_what_it_is() {
        let long = "x".repeat(MAX_TRIGGER_ID_CHARS + 1);
        for (id, found) in [
            (json!(""), "\"trigger_id\" is blank".to_string()),
            (json!("  "), "\"trigger_id\" is blank".into()),
            (json!(5), "\"trigger_id\" is a number, not a string".into()),
            (
                json!("a\u{0}b"),
                "\"trigger_id\" holds the control character U+0000".into(),
            ),
            (
                json!("line\nbreak"),
                "\"trigger_id\" holds the control character U+000A".into(),
            ),
            (
                json!("c1\u{85}"),
                "\"trigger_id\" holds the control character U+0085".into(),
            ),
            (
                json!("run\u{200B}1"),
                "\"trigger_id\" holds the invisible formatting character U+200B".into(),
            ),
            (
                json!("\u{202E}1-nur"),
                "\"trigger_id\" holds the invisible formatting character U+202E".into(),
            ),
            (
                json!("\u{FEFF}run-1"),
                "\"trigger_id\" holds the invisible formatting character U+FEFF".into(),
            ),
            (
                json!(long),
                format!("\"trigger_id\" is 257 characters long, more than {MAX_TRIGGER_ID_CHARS}"),
            ),
        ] {
            let err = trigger_id(&json!({ "trigger_id": id }))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(&format!("unrecognised event ({found}")),
                "{err}"
            );
            assert!(err.len() < 1_000, "the id is not echoed: {err}");
        }
        let at_limit = "é".repeat(MAX_TRIGGER_ID_CHARS);
        assert_eq!(
            trigger_id(&json!({ "trigger_id": at_limit })).unwrap(),
            Some(at_limit),
            "the limit counts characters, not bytes"
        );
        let envelope =
            json!({"detail-type": "Scheduled Event", "source": "aws.events", "id": "a\u{0}"});
        assert!(
            request(&envelope)
                .unwrap_err()
                .to_string()
                .contains("\"id\" holds the control character U+0000"),
            "an EventBridge id is checked as well"
        );
    }

    #[test]
    fn a_long_trigger_id_is_shown_by_its_ends() {
        assert_eq!(
            shortened("53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa"),
            "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa"
        );
        let long = format!("start-{}-end", "x".repeat(10_000));
        let shown = shortened(&long);
        assert_eq!(shown.chars().count(), SHOWN_TRIGGER_ID_CHARS);
        assert!(
            shown.starts_with("start-") && shown.ends_with("-end"),
            "{shown}"
        );
        assert!(shown.contains('…'));
        assert_eq!(shortened("a\tb"), "a\u{FFFD}b");
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
