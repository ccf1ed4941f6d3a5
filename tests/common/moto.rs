//! moto's Secrets Manager, EventBridge and SQS, standing in for AWS.

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};

/// Where moto listens: `MOTO_ENDPOINT`, else the server `.ci/run` starts.
pub fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

/// The AWS configuration of moto's server: its endpoint, us-east-1, test credentials.
pub async fn sdk_config() -> aws_config::SdkConfig {
    let endpoint = endpoint();
    let address = endpoint.trim_start_matches("http://").to_string();
    if tokio::net::TcpStream::connect(&address).await.is_err() {
        panic!("moto's server is not reachable at {endpoint}: start it with `moto_server -H 127.0.0.1 -p 5000` (pip install 'moto[server]') or set MOTO_ENDPOINT");
    }
    aws_config_for(&endpoint).await
}

/// The AWS configuration of a client of `endpoint`: us-east-1, test credentials.
pub async fn aws_config_for(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await
}

pub async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::new(&sdk_config().await)
}

/// A new secret with a unique name; returns its ARN.
pub async fn create_secret(client: &aws_sdk_secretsmanager::Client, value: &str) -> String {
    client
        .create_secret()
        .name(format!("cdc-test/{}", uuid::Uuid::now_v7()))
        .secret_string(value)
        .send()
        .await
        .expect("creating a secret in moto")
        .arn
        .unwrap()
}

pub async fn put_secret(client: &aws_sdk_secretsmanager::Client, secret_id: &str, value: &str) {
    client
        .put_secret_value()
        .secret_id(secret_id)
        .secret_string(value)
        .send()
        .await
        .expect("updating a secret in moto");
}

/// A new EventBridge bus with one rule, `pattern`, delivering to a new SQS queue: what a consumer
/// of the events sets up. Returns the bus's name and the queue's URL.
pub async fn bus_to_queue(pattern: serde_json::Value) -> (String, String) {
    let config = sdk_config().await;
    let events = aws_sdk_eventbridge::Client::new(&config);
    let sqs = aws_sdk_sqs::Client::new(&config);
    let name = format!("cdc-test-{}", uuid::Uuid::now_v7().simple());
    events
        .create_event_bus()
        .name(&name)
        .send()
        .await
        .expect("creating a bus in moto");
    let queue = sqs
        .create_queue()
        .queue_name(&name)
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
        .send()
        .await
        .unwrap()
        .attributes
        .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
        .clone();
    events
        .put_rule()
        .name(&name)
        .event_bus_name(&name)
        .event_pattern(pattern.to_string())
        .send()
        .await
        .unwrap();
    events
        .put_targets()
        .rule(&name)
        .event_bus_name(&name)
        .targets(
            aws_sdk_eventbridge::types::Target::builder()
                .id("queue")
                .arn(queue_arn)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    (name, queue)
}

/// Every event's `detail` the queue holds, in the order received, taking them off the queue.
pub async fn drain_queue(queue: &str) -> Vec<serde_json::Value> {
    let sqs = aws_sdk_sqs::Client::new(&sdk_config().await);
    let mut details = Vec::new();
    loop {
        let received = sqs
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(10)
            .send()
            .await
            .unwrap();
        let messages = received.messages.unwrap_or_default();
        if messages.is_empty() {
            return details;
        }
        for message in messages {
            let event: serde_json::Value = serde_json::from_str(message.body().unwrap()).unwrap();
            details.push(event["detail"].clone());
            sqs.delete_message()
                .queue_url(queue)
                .receipt_handle(message.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}
