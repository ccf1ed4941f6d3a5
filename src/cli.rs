//! The command line: the same run as the Lambda, for local runs, cron and Airflow.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::app::App;
use crate::config::Config;
use crate::{secrets, trigger};

#[derive(Parser)]
#[command(name = "coingecko-cdc", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one ingest and print its summary as JSON on stdout.
    Run {
        /// A Lambda event payload (EventBridge event, {"trigger_id": "…"} or {}) giving the trigger id.
        #[arg(long, value_name = "FILE")]
        event: Option<PathBuf>,
    },
    /// Apply the database migrations and exit.
    Migrate,
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match execute(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let trigger_id = match &command {
        Command::Run { event: Some(path) } => read_trigger_id(path)?,
        _ => None,
    };
    let app = App::new(config, secrets::secrets_manager().await).await?;
    match command {
        Command::Migrate => app.migrate().await?,
        Command::Run { .. } => {
            let summary = app.run(trigger_id).await?;
            println!("{}", serde_json::to_string(&summary)?);
        }
    }
    Ok(())
}

fn read_trigger_id(path: &Path) -> anyhow::Result<Option<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--event {}: cannot read the file", path.display()))?;
    let event: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--event {}: not JSON", path.display()))?;
    trigger::trigger_id(&event).with_context(|| format!("--event {}", path.display()))
}
