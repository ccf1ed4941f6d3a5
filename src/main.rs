use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    coingecko_cdc::cli::main().await
}
