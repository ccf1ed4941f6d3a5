//! The command line: the same run as the Lambda, for local runs, cron and Airflow.

mod changes;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use tracing_subscriber::EnvFilter;

use crate::app::App;
use crate::backfill::{default_coins, parse_instant, BackfillRequest, Granularity, Window};
use crate::chart::{self, ChartRequest};
use crate::coingecko::FetchProgress;
use crate::config::Config;
use crate::replay::{recorded_answer, ReplaySummary};
use crate::series;
use crate::store::BackfillWindow;
use crate::trigger::Request;
use crate::{archive, secrets, status, trigger};

/// What `--help` says about the environment, where every setting comes from.
const SETTINGS_HELP: &str = "\
Settings come from environment variables; there are no settings flags.
Required: DATABASE_URL (postgres://user:password@host:5432/db), DB_SECRET_ID (a Secrets Manager
secret with the database credentials; DB_HOST, DB_PORT and DB_NAME give what it lacks), libpq's
PGHOST, PGUSER, PGDATABASE…, or DB_AUTH=iam with DB_HOST, DB_USER and AWS_REGION (an RDS IAM token).
Most used: COIN_IDS (bitcoin,ethereum) or TOP_N (250), VS_CURRENCY (usd), CDC_THRESHOLD_PCT (0.5),
COINGECKO_API_KEY and COINGECKO_API_PLAN (demo or pro), AUTO_MIGRATE (true), DB_SSLMODE (prefer;
verify-full to check the certificate and host name),
RUST_LOG (info).
Every setting and its default: the README, section Settings.";

#[derive(Parser)]
#[command(name = "coingecko-cdc", version, about, long_about = None, after_help = SETTINGS_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one ingest and print its summary as JSON on stdout; with --event, do what the payload asks.
    Run {
        /// A Lambda event payload, read as the Lambda reads it: an EventBridge event,
        /// {"trigger_id": "…"} or {} (a run and its trigger id), {"migrate": true} or
        /// {"backfill": {"days": N}}; the Lambda's answer is printed.
        #[arg(long, value_name = "FILE")]
        event: Option<PathBuf>,
    },
    /// Apply the database migrations and exit.
    Migrate,
    /// Ingest recorded /coins/markets answers (.json or .json.gz), one run per answer in the
    /// order they were recorded; replaying them again adds nothing. Prints the total as JSON.
    Replay {
        /// Answer files, or directories of them. Default: the year of daily answers (2024)
        /// shipped in data/daily-2024.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Show the last runs and whether the ingest is healthy; the exit code tells cron and monitoring.
    #[command(after_help = status::exit_codes_help())]
    Status {
        /// How many runs to show (health does not depend on it).
        #[arg(long, default_value_t = 10)]
        limit: u32,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Unhealthy when the last successful run is older than this (e.g. 15m, 2h, 1d).
        #[arg(long, value_name = "DURATION")]
        max_age: Option<humantime::Duration>,
        /// Unhealthy when this many runs in a row died without finishing (abandoned). One
        /// Lambda timeout now and then is routine; several in a row are not.
        #[arg(long, value_name = "N", default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..))]
        abandoned_in_a_row: u64,
    },
    /// Draw price_history as a step line to PNG or SVG.
    Chart(ChartArgs),
    /// Print the change feed as JSON lines, one per history row in position (commit) order, from
    /// --since on; with --follow, keep printing as runs commit (docs/consuming.md).
    Changes(changes::ChangesArgs),
    /// Backfill history from /coins/{id}/market_chart/range in every configured currency, before
    /// each coin's first live row. Works until FETCH_BUDGET_SECS; run it again to continue; once
    /// finished, running it again adds nothing. Prints the invocation's summary as JSON.
    Backfill(BackfillArgs),
}

#[derive(Args)]
struct BackfillArgs {
    /// The last N days (the Demo plan serves at most 365).
    #[arg(long, conflicts_with_all = ["from", "to"], required_unless_present = "from")]
    days: Option<u32>,
    /// Start of the window: a date (2026-01-01) or an RFC 3339 time.
    #[arg(long, value_parser = parse_instant)]
    from: Option<DateTime<Utc>>,
    /// End of the window, like --from. Default: now.
    #[arg(long, value_parser = parse_instant, requires = "from")]
    to: Option<DateTime<Utc>>,
    /// Coin ids, comma-separated. Default: COIN_IDS, else the TOP_N coins the live runs track.
    #[arg(long, value_delimiter = ',')]
    coins: Vec<String>,
    /// daily (a call a coin and currency for up to 365 days) or hourly (a call for up to 90).
    #[arg(long, default_value = "daily")]
    granularity: Granularity,
}

#[derive(Args)]
struct ChartArgs {
    /// Coin ids, comma-separated (e.g. bitcoin,ethereum).
    #[arg(long, value_delimiter = ',', required = true)]
    coin: Vec<String>,
    /// Rescale each coin to 100 at the start of the window, to compare coins.
    #[arg(long)]
    normalise: bool,
    /// The window's length, ending at --to or now (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", conflicts_with = "from")]
    since: Option<humantime::Duration>,
    /// Start of the window: a date (2026-11-01) or an RFC 3339 time. Default: the first recorded price.
    #[arg(long, value_parser = parse_instant)]
    from: Option<DateTime<Utc>>,
    /// End of the window, like --from. Default: now.
    #[arg(long, value_parser = parse_instant)]
    to: Option<DateTime<Utc>>,
    /// Quote currency. Default: the first of VS_CURRENCIES (or VS_CURRENCY), else usd.
    #[arg(long)]
    vs_currency: Option<String>,
    /// The picture: its extension, .png or .svg, picks the format.
    #[arg(long, default_value = "chart.png")]
    out: PathBuf,
    /// Width of the picture in pixels.
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(100..=10_000))]
    width: u32,
    /// Height of the picture in pixels.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u32).range(100..=10_000))]
    height: u32,
}

pub async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        // Colour codes only for a person: cron and log files get plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match execute(cli.command).await {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn execute(command: Command) -> anyhow::Result<ExitCode> {
    let config = Config::from_env()?;
    let vs_currency = config.coingecko.vs_currencies[0].clone();
    // Before any I/O, as the settings: a payload the Lambda would refuse is refused here too.
    let request = match &command {
        Command::Run { event: Some(path) } => read_event(path)?,
        _ => Request::Run { trigger_id: None },
    };
    let mut app = App::new(config, secrets::SecretsManager::default()).await?;
    if std::io::stderr().is_terminal() {
        let pages = app.ingest_mut().expected_pages();
        app.ingest_mut()
            .report_progress_to(Box::new(TerminalProgress::new(pages)));
    }
    match command {
        Command::Migrate => {
            app.migrate().await?;
        }
        Command::Run { .. } => {
            let response = app.serve(request, None).await?;
            println!("{}", serde_json::to_string(&response)?);
        }
        Command::Replay { paths } => {
            let summary = replay(&app, paths).await?;
            println!("{}", serde_json::to_string(&summary)?);
        }
        Command::Status {
            limit,
            json,
            max_age,
            abandoned_in_a_row,
        } => {
            let store = app.connect().await?;
            let (runs, facts, backfill) = if store.has_ledger().await? {
                // A read-only role may look but not record: the runs show as they stand.
                if let Err(e) = store.abandon_dead_runs().await {
                    tracing::warn!(error = %e, "dead runs could not be recorded as abandoned");
                }
                (
                    store.recent_runs(limit.into()).await?,
                    store.health_facts().await?,
                    store.backfill_progress().await?,
                )
            } else {
                tracing::warn!("no ingest_runs in this database: it was never migrated (`coingecko-cdc migrate`, or a run with AUTO_MIGRATE=true)");
                (Vec::new(), status::HealthFacts::default(), None)
            };
            let health = status::health(
                &facts,
                Utc::now(),
                max_age.map(Into::into),
                abandoned_in_a_row,
            );
            let coingecko = app.ingest_mut().coingecko();
            let calls_per_min = coingecko.calls_per_min();
            let estimate = backfill
                .as_ref()
                .map(|p| status::backfill_estimate(p, calls_per_min));
            // What a backfill would ask for now, since the newest one's start.
            let coverage = match &backfill {
                Some(progress) => {
                    let window = BackfillWindow {
                        from: progress.window_from,
                        to: Utc::now(),
                        ends_now: true,
                        granularity: progress.granularity.parse()?,
                    };
                    let coins = default_coins(coingecko);
                    let currencies = coingecko.vs_currencies();
                    Some(store.backfill_coverage(&coins, currencies, &window).await?)
                }
                None => None,
            };
            if json {
                let report = serde_json::json!({
                    "health": health,
                    "last_success_at": facts.last_success,
                    "abandoned_in_a_row": facts.abandoned_in_a_row,
                    "runs": runs,
                    "backfill": backfill.as_ref().map(|progress| serde_json::json!({
                        "progress": progress,
                        "estimate": estimate,
                        "coverage": coverage,
                    })),
                });
                println!("{report}");
            } else {
                println!("{}", status::table(&runs));
                if let (Some(progress), Some(estimate)) = (&backfill, &estimate) {
                    println!("{}", status::backfill_line(progress, estimate));
                }
                if let Some(coverage) = &coverage {
                    println!("{}", status::coverage_line(coverage));
                }
                println!("health: {}", health.as_str());
            }
            return Ok(ExitCode::from(health.exit_code()));
        }
        Command::Chart(args) => draw_chart(&app, args, vs_currency).await?,
        Command::Changes(args) => changes::print_changes(&app.connect().await?, args).await?,
        Command::Backfill(args) => {
            let window = match (args.days, args.from) {
                (Some(days), _) => Window::Days(days),
                (None, Some(from)) => Window::Range { from, to: args.to },
                (None, None) => unreachable!("clap requires --days or --from"),
            };
            let request = BackfillRequest::new(
                window,
                (!args.coins.is_empty()).then_some(args.coins),
                args.granularity,
            )?;
            let summary = app.backfill(&request, None).await?;
            println!("{}", serde_json::to_string(&summary)?);
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn draw_chart<S: secrets::SecretSource>(
    app: &App<S>,
    args: ChartArgs,
    default_vs: String,
) -> anyhow::Result<()> {
    let vs_currency = args.vs_currency.unwrap_or(default_vs).to_ascii_lowercase();
    // A coin asked for twice is drawn once.
    let mut asked = HashSet::new();
    let coins: Vec<String> = args
        .coin
        .into_iter()
        .filter(|coin| asked.insert(coin.clone()))
        .collect();
    let to = args.to.unwrap_or_else(Utc::now);
    let from = match (args.since, args.from) {
        (Some(since), _) => window_start(to, since.into()),
        (None, Some(from)) => from,
        (None, None) => DateTime::UNIX_EPOCH,
    };
    if from >= to {
        bail!("the window is empty: --from {from} is not before --to {to}");
    }
    let store = app.connect().await?;
    let known = store.known_coins(&vs_currency, &coins).await?;
    if let Some(unknown) = coins.iter().find(|c| !known.contains(c)) {
        bail!("unknown coin {unknown:?} in {vs_currency}: it was never ingested (check --coin and --vs-currency)");
    }
    let series = store.price_steps(&vs_currency, &coins, from, to).await?;
    if let Some(empty) = series.iter().find(|s| s.points.is_empty()) {
        bail!(
            "no price of {} between {} and {}: widen the window (--since, --from, --to)",
            empty.coin_id,
            from.format("%Y-%m-%d %H:%M"),
            to.format("%Y-%m-%d %H:%M")
        );
    }
    let from = series
        .iter()
        .filter_map(|s| s.points.first().map(|p| p.0))
        .min()
        .map_or(from, |first| first.max(from));
    let (series, y_label) = if args.normalise {
        (
            series::normalise(&series),
            "index (start of the window = 100)".to_string(),
        )
    } else {
        (series, format!("price ({vs_currency})"))
    };
    let request = ChartRequest {
        title: format!("{} in {vs_currency}", coins.join(", ")),
        y_label,
        series: &series,
        from,
        to,
        width: args.width,
        height: args.height,
    };
    chart::render(&request, &args.out)?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}

/// The start of a window `length` long that ends at `to`. A longer window than the time since
/// 1970 starts then: nothing was recorded before, and `to - length` could leave the times that
/// chrono and PostgreSQL hold.
fn window_start(to: DateTime<Utc>, length: std::time::Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(length)
        .ok()
        .and_then(|length| to.checked_sub_signed(length))
        .map_or(DateTime::UNIX_EPOCH, |from| from.max(DateTime::UNIX_EPOCH))
}

/// Replays the answers under `paths` in the order they were recorded. Two passes, so that
/// memory holds one answer at a time however large the archive: the first learns each answer's
/// time, the second applies them.
async fn replay<S: secrets::SecretSource>(
    app: &App<S>,
    paths: Vec<PathBuf>,
) -> anyhow::Result<ReplaySummary> {
    let paths = if paths.is_empty() {
        vec![archive::shipped_year()?]
    } else {
        paths
    };
    let mut files = Vec::new();
    for path in archive::answer_files(&paths)? {
        let answer = recorded_answer(&path.display().to_string(), &archive::read_answer(&path)?)?;
        files.push((answer.recorded_at, path));
    }
    files.sort();
    let bar = if std::io::stderr().is_terminal() {
        ProgressBar::new(files.len() as u64).with_style(
            ProgressStyle::with_template("replaying {bar:30} {pos}/{len} · {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    } else {
        ProgressBar::hidden()
    };
    let mut total = ReplaySummary::default();
    for (_, path) in files {
        let answer = recorded_answer(&path.display().to_string(), &archive::read_answer(&path)?)?;
        bar.set_message(answer.recorded_at.format("%Y-%m-%d %H:%M").to_string());
        let run = app.replay(&answer).await?;
        total.add(answer.recorded_at, &run);
        bar.inc(1);
    }
    bar.finish_and_clear();
    Ok(total)
}

/// A progress bar on stderr, for a person watching a multi-page fetch.
struct TerminalProgress(ProgressBar);

impl TerminalProgress {
    fn new(pages: u64) -> Self {
        let bar = ProgressBar::new(pages);
        bar.set_style(
            ProgressStyle::with_template(
                "fetching CoinGecko {bar:30} page {pos}/{len} · {msg} coins",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        Self(bar)
    }
}

impl FetchProgress for TerminalProgress {
    fn page_fetched(&self, page: u32, coins: usize) {
        self.0.set_position(page.into());
        self.0.set_message(coins.to_string());
    }

    fn finished(&self) {
        self.0.finish_and_clear();
    }
}

/// What the payload in `path` asks for, read as the Lambda reads its event.
fn read_event(path: &Path) -> anyhow::Result<Request> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--event {}: cannot read the file", path.display()))?;
    let event: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("--event {}: not JSON", path.display()))?;
    trigger::request(&event).with_context(|| format!("--event {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_window_longer_than_the_time_since_1970_starts_then() {
        let to: DateTime<Utc> = "2026-12-04T00:00:00Z".parse().unwrap();
        assert_eq!(
            window_start(to, Duration::from_secs(86_400)),
            "2026-12-03T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        for length in [
            Duration::from_secs(1_000_000_000 * 86_400),
            Duration::from_secs(u64::MAX),
            Duration::MAX,
        ] {
            assert_eq!(window_start(to, length), DateTime::UNIX_EPOCH, "{length:?}");
        }
    }
}
