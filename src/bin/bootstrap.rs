//! The AWS Lambda function.

use coingecko_cdc::{app::App, config::Config, lambda, secrets};
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::Value;

// One thread: a run waits on the network, and every worker thread would keep its own
// allocator arena, which costs memory (the Lambda runs at 128 MB).
#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let app = App::new(Config::from_env()?, secrets::SecretsManager::default()).await?;
    lambda_runtime::run(service_fn(|event: LambdaEvent<Value>| {
        lambda::handle(&app, event)
    }))
    .await
}
