use std::process::ExitCode;

// One thread: a run waits on the network, and every worker thread would keep its own
// allocator arena, which costs memory (the Lambda runs at 128 MB).
#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    coingecko_cdc::cli::main().await
}
