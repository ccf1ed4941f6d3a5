//! Several currencies and the backfill, through the release `coingecko-cdc` process on a local
//! stub and the local PostgreSQL:
//! - calls per run: `coingecko-cdc run` with 1, 3 and 10 currencies at 250 and 17,500 coins (the
//!   pages of `/coins/markets`, then `/simple/price` batches), with the run's time and peak RSS;
//! - a backfill: `coingecko-cdc backfill --days 365` of 250 coins in 3 currencies, daily and hourly,
//!   pacing off, from `market_chart/range` answers built from the real prices of 2024
//!   (`data/daily-2024`): wall time, history rows written a second, points read a second, peak RSS.
//!
//! `cargo bench --bench backfill`. Settings: `SAMPLES` (default 3; medians are printed), `SIZES`
//! (default `250,17500`), `GRANULARITIES` (default `daily,hourly`).

#[path = "support/cli_process.rs"]
mod cli_process;
#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{ensure, Result};
use cli_process::{run_cli, CliRun};
use common::market_chart::{ChartBook, RealYear};
use common::simple_price::PriceBook;
use common::{numbered_coins, page, spawn_app, TestApp};

const CURRENCIES: [&str; 10] = [
    "usd", "eur", "gbp", "jpy", "chf", "cad", "aud", "btc", "eth", "sats",
];
const BACKFILL_COINS: usize = 250;
const BACKFILL_CURRENCIES: usize = 3;

fn setting<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .collect()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn environment(app: &TestApp, extra: &[(&str, String)]) -> HashMap<String, String> {
    let mut env = app.env().clone();
    // The stub has no rate limit: no pacing, as the numbers are the program's own.
    env.insert("COINGECKO_MAX_CALLS_PER_MIN".into(), "60000".into());
    env.insert("FETCH_BUDGET_SECS".into(), "7200".into());
    env.insert("RUST_LOG".into(), "warn".into());
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.clone())));
    env
}

fn figure(run: &CliRun, key: &str) -> u64 {
    run.summary[key].as_u64().unwrap_or_default()
}

/// One live run of `coins` coins in the first `currencies` currencies.
async fn live_run(coins: usize, currencies: usize) -> Result<CliRun> {
    let app = spawn_app().await;
    let pages: Vec<String> = numbered_coins(0..coins, "1")
        .chunks(250)
        .map(page)
        .collect();
    app.serve(&pages).await;
    let book = PriceBook::default();
    for n in 0..coins {
        for currency in &CURRENCIES[1..currencies] {
            book.set(&format!("coin-{n:04}"), currency, "2", 1_795_791_600);
        }
    }
    book.serve_on(&app.coingecko).await;
    let env = environment(
        &app,
        &[
            ("TOP_N", coins.to_string()),
            ("VS_CURRENCIES", CURRENCIES[..currencies].join(",")),
        ],
    );
    let run = run_cli(&["run"], &app.database_url, &env).await?;
    ensure!(
        figure(&run, "fetched") == (coins * currencies) as u64,
        "{}",
        run.summary
    );
    Ok(run)
}

/// 250 ids for the backfill: the real year's coins, then the same again under other ids.
fn backfill_coins() -> Vec<String> {
    let real = RealYear::get().coin_ids();
    (0..BACKFILL_COINS)
        .map(|n| match n / real.len() {
            0 => real[n].to_string(),
            round => format!("{}~{round}", real[n % real.len()]),
        })
        .collect()
}

async fn backfill(granularity: &str, coins: &[String]) -> Result<CliRun> {
    let app = spawn_app().await;
    ChartBook::default().serve_on(&app.coingecko).await;
    let env = environment(
        &app,
        &[("VS_CURRENCIES", CURRENCIES[..BACKFILL_CURRENCIES].join(","))],
    );
    let ids = coins.join(",");
    let args = [
        "backfill",
        "--days",
        "365",
        "--granularity",
        granularity,
        "--coins",
        &ids,
    ];
    let run = run_cli(&args, &app.database_url, &env).await?;
    ensure!(run.summary["outcome"] == "finished", "{}", run.summary);
    Ok(run)
}

#[tokio::main]
async fn main() -> Result<()> {
    let samples: usize = setting("SAMPLES", 3);
    println!("# calls per run (medians of {samples})");
    println!("coins   currencies  pages  calls  fetch ms  apply ms  run ms  peak RSS MiB");
    for coins in list("SIZES", "250,17500") {
        let coins: usize = coins.parse()?;
        for currencies in [1, 3, 10] {
            let mut runs = Vec::new();
            for _ in 0..samples {
                runs.push(live_run(coins, currencies).await?);
            }
            let m = |key: &str| median(runs.iter().map(|r| figure(r, key) as f64).collect());
            let rss = median(
                runs.iter()
                    .map(|r| r.peak_rss_kib as f64 / 1024.0)
                    .collect(),
            );
            println!(
                "{coins:>6}  {currencies:>10}  {:>5}  {:>5}  {:>8}  {:>8}  {:>6}  {rss:>12.1}",
                m("pages"),
                m("calls"),
                m("fetch_ms"),
                m("apply_ms"),
                m("duration_ms"),
            );
        }
    }

    let coins = backfill_coins();
    println!(
        "\n# backfill of {BACKFILL_COINS} coins x 365 days x {BACKFILL_CURRENCIES} currencies, pacing off (medians of {samples})"
    );
    println!(
        "granularity  chunks  calls  points  history rows  wall s  rows/s  points/s  peak RSS MiB"
    );
    for granularity in list("GRANULARITIES", "daily,hourly") {
        let mut runs = Vec::new();
        for _ in 0..samples {
            runs.push(backfill(&granularity, &coins).await?);
        }
        let wall = median(runs.iter().map(|r| r.wall.as_secs_f64()).collect());
        let per_second = |key: &str| {
            median(
                runs.iter()
                    .map(|r| figure(r, key) as f64 / r.wall.as_secs_f64())
                    .collect(),
            )
        };
        let rss = median(
            runs.iter()
                .map(|r| r.peak_rss_kib as f64 / 1024.0)
                .collect(),
        );
        let first = &runs[0];
        println!(
            "{granularity:<11}  {:>6}  {:>5}  {:>6}  {:>12}  {wall:>6.1}  {:>6.0}  {:>8.0}  {rss:>12.1}",
            figure(first, "chunks_done"),
            figure(first, "calls"),
            figure(first, "points"),
            figure(first, "history_inserted"),
            per_second("history_inserted"),
            per_second("points"),
        );
    }
    // The stub's last answers may still be in flight when a database is dropped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok(())
}
