//! The release `coingecko-cdc` binary as a process: what it printed, its peak RSS, its wall time.
#![allow(dead_code)] // each bench reads its own part of a run

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};

pub struct CliRun {
    /// The JSON summary it printed on stdout.
    pub summary: serde_json::Value,
    pub peak_rss_kib: u64,
    pub wall: Duration,
}

/// One `coingecko-cdc <args>` with exactly `settings` as its environment, on `db_url`.
pub async fn run_cli(
    args: &[&str],
    db_url: &str,
    settings: &HashMap<String, String>,
) -> Result<CliRun> {
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .args(args)
        .env_clear()
        .envs(settings)
        .env("DATABASE_URL", db_url)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting coingecko-cdc")?;
    let pid = child.id().context("coingecko-cdc exited at once")?;
    let output = tokio::spawn(child.wait_with_output());
    let mut peak_rss_kib = 0;
    // VmHWM only grows, so the last reading before the process exits is its peak.
    while !output.is_finished() {
        peak_rss_kib = vm_hwm_kib(pid).unwrap_or(peak_rss_kib);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let output = output.await??;
    let wall = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let cause = stderr.lines().last().unwrap_or_default();
    ensure!(
        output.status.success(),
        "coingecko-cdc {} failed: {cause}",
        args.join(" ")
    );
    let summary = serde_json::from_slice(&output.stdout).context("no summary on stdout")?;
    Ok(CliRun {
        summary,
        peak_rss_kib,
        wall,
    })
}

/// The process's peak resident set; `None` once it has exited.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    line.trim().trim_end_matches("kB").trim().parse().ok()
}
