//! PutEvents as EventBridge answers when it takes every entry, after a latency: a stand-in whose
//! calls can be counted and slowed, where moto's answer at once.

use std::time::Duration;

use wiremock::matchers::method;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

struct TakesEvery(Duration);

impl Respond for TakesEvery {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap_or_default();
        let entries = body["Entries"].as_array().map_or(0, Vec::len);
        let taken: Vec<serde_json::Value> = (0..entries)
            .map(|i| serde_json::json!({"EventId": format!("event-{i}")}))
            .collect();
        ResponseTemplate::new(200)
            .set_body_raw(
                serde_json::json!({"FailedEntryCount": 0, "Entries": taken}).to_string(),
                "application/x-amz-json-1.1",
            )
            .set_delay(self.0)
    }
}

/// A PutEvents endpoint answering each call after `latency`; its `received_requests` are the calls.
pub async fn put_events_endpoint(latency: Duration) -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(TakesEvery(latency))
        .mount(&stub)
        .await;
    stub
}
