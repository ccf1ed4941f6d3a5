//! One payload, two doors: the Lambda handler and `coingecko-cdc run --event` read every payload
//! alike: the shipped `events/*.json` do the same through both, and a payload one refuses the
//! other refuses with the same message, before any database work.

use std::path::{Path, PathBuf};

use crate::common::{cli, fixture, last_stderr_line, spawn_app, stdout_json, TestApp};
use coingecko_cdc::lambda::handle;
use coingecko_cdc::secrets::SecretsManager;
use lambda_runtime::{Context, Diagnostic, LambdaEvent};
use serde_json::{json, Value};

fn shipped_events() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/events"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

fn payload(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// What an answer says it did, without what differs from one call to the next (ids, times).
fn what_it_did(answer: &Value) -> Value {
    let keep = [
        "status",
        "trigger_id",
        "fetched",
        "history_inserted",
        "outcome",
        "applied",
    ];
    Value::Object(
        answer
            .as_object()
            .unwrap()
            .iter()
            .filter(|(key, _)| keep.contains(&key.as_str()))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect(),
    )
}

async fn through_the_lambda(app: &TestApp, event: Value) -> Result<Value, Diagnostic> {
    let function = app.app_with(&[], SecretsManager::default()).await;
    handle(&function, LambdaEvent::new(event, Context::default()))
        .await
        .map(|response| serde_json::to_value(response).unwrap())
        .map_err(Diagnostic::from)
}

#[tokio::test]
async fn every_shipped_event_does_the_same_through_the_lambda_and_the_command_line() {
    let files = shipped_events();
    assert!(files.len() >= 6, "{files:?}");
    for file in files {
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let mut answers = Vec::new();
        for door in ["lambda", "command line"] {
            // A fresh database each time: a trigger id seen before would make a duplicate.
            let app = spawn_app().await;
            app.serve(&[fixture("markets-2024-09-05.json")]).await;
            let answer = if door == "lambda" {
                through_the_lambda(&app, payload(&file))
                    .await
                    .unwrap_or_else(|e| panic!("{name}: the Lambda refused it: {e:?}"))
            } else {
                let output = cli(&app, &["run", "--event", file.to_str().unwrap()], &[]).await;
                assert!(
                    output.status.success(),
                    "{name}: the command line refused it: {}",
                    last_stderr_line(&output)
                );
                stdout_json(&output)
            };
            answers.push(what_it_did(&answer));
        }
        assert_eq!(answers[0], answers[1], "{name}");
        assert_ne!(answers[0], json!({}), "{name}: it did something");
    }
}

#[tokio::test]
async fn a_payload_refused_by_one_is_refused_by_the_other_with_the_same_message() {
    let app = spawn_app().await;
    let long_id = "x".repeat(10_000);
    for event in [
        json!({"backfill": {"days": 3}, "trigger_id": "x"}),
        json!({"trigger_id": "x", "extra": true}),
        json!({"trigger_id": "a\u{0}b"}),
        json!({"trigger_id": long_id}),
        json!({"migrate": true, "backfill": {"days": 3}}),
        json!({"backfill": {"days": 3, "dayz": 1}}),
        json!({"hello": "world"}),
        json!([]),
    ] {
        let diagnostic = through_the_lambda(&app, event.clone())
            .await
            .expect_err("the Lambda took it");
        assert_eq!(diagnostic.error_type, "UnrecognisedEvent", "{event}");

        let path = std::env::temp_dir().join(format!("cdc-event-{}.json", uuid::Uuid::now_v7()));
        std::fs::write(&path, event.to_string()).unwrap();
        let output = cli(&app, &["run", "--event", path.to_str().unwrap()], &[]).await;
        std::fs::remove_file(&path).unwrap();
        assert_eq!(output.status.code(), Some(1), "{event}");
        assert_eq!(
            last_stderr_line(&output),
            format!(
                "error: --event {}: {}",
                path.display(),
                diagnostic.error_message
            ),
            "{event}"
        );
    }
    assert!(app.coingecko.received_requests().await.unwrap().is_empty());
    assert_eq!(app.count("ingest_runs").await, 0, "no database work");
}
