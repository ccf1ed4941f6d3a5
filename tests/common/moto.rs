//! moto's Secrets Manager, standing in for AWS.

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};

/// Where moto listens: `MOTO_ENDPOINT`, else the server `.ci/run` starts.
pub fn endpoint() -> String {
    std::env::var("MOTO_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:5000".into())
}

pub async fn secrets_manager() -> aws_sdk_secretsmanager::Client {
    let endpoint = endpoint();
    let address = endpoint.trim_start_matches("http://").to_string();
    if tokio::net::TcpStream::connect(&address).await.is_err() {
        panic!("moto's server is not reachable at {endpoint}: start it with `moto_server -H 127.0.0.1 -p 5000` (pip install 'moto[server]') or set MOTO_ENDPOINT");
    }
    let config = aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "moto"))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
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
