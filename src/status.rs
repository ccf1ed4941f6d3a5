//! `coingecko-cdc status`: what the last runs did and whether the ingest is healthy. Pure: no I/O.

use chrono::{DateTime, Utc};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;
use serde_json::Value;

/// One row of `ingest_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub trigger_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: String,
    pub summary: Option<Value>,
    pub error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Healthy,
    /// The most recent finished run failed.
    LastRunFailed,
    /// No run succeeded within `--max-age` (or none ever did).
    Stale,
}

impl Health {
    /// The exit code cron and monitoring see: 0 healthy, 2 last run failed, 3 stale.
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::LastRunFailed => 2,
            Health::Stale => 3,
        }
    }
}

/// Judges `runs` (newest first), ignoring runs still in progress.
pub fn health(
    runs: &[RunRecord],
    last_success: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    max_age: Option<std::time::Duration>,
) -> Health {
    if runs
        .iter()
        .find(|r| r.status != "running")
        .is_some_and(|r| r.status == "failed")
    {
        return Health::LastRunFailed;
    }
    let Some(max_age) = max_age else {
        return Health::Healthy;
    };
    match last_success {
        Some(at) if (now - at).to_std().is_ok_and(|age| age <= max_age) => Health::Healthy,
        Some(at) if at > now => Health::Healthy,
        _ => Health::Stale,
    }
}

/// The runs as a terminal table, newest first.
pub fn table(runs: &[RunRecord]) -> String {
    let mut table = Table::new();
    table.load_preset(UTF8_FULL_CONDENSED).set_header([
        "started (UTC)",
        "status",
        "fetched",
        "history",
        "rejected",
        "duration",
        "trigger / error",
    ]);
    for run in runs {
        let count = |key: &str| {
            run.summary
                .as_ref()
                .and_then(|s| s.get(key))
                .map_or(String::new(), Value::to_string)
        };
        let duration = run
            .summary
            .as_ref()
            .and_then(|s| s.get("duration_ms"))
            .and_then(Value::as_u64)
            .map_or(String::new(), |ms| format!("{:.1} s", ms as f64 / 1000.0));
        let note = run
            .error
            .clone()
            .or_else(|| run.trigger_id.clone())
            .unwrap_or_default();
        table.add_row([
            run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            run.status.clone(),
            count("fetched"),
            count("history_inserted"),
            count("rejected"),
            duration,
            note,
        ]);
    }
    table.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use std::time::Duration;

    fn run(status: &str, minute: u32) -> RunRecord {
        RunRecord {
            run_id: format!("r{minute}"),
            trigger_id: None,
            started_at: Utc.with_ymd_and_hms(2026, 11, 27, 15, minute, 0).unwrap(),
            finished_at: None,
            status: status.into(),
            summary: None,
            error: (status == "failed").then(|| "CoinGecko page 1 failed".into()),
        }
    }

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 15, minute, 0).unwrap()
    }

    #[test]
    fn a_failed_last_run_is_unhealthy_even_while_another_runs() {
        let runs = [run("running", 10), run("failed", 5), run("succeeded", 0)];
        assert_eq!(
            health(&runs, Some(at(0)), at(11), None),
            Health::LastRunFailed
        );
        assert_eq!(Health::LastRunFailed.exit_code(), 2);
    }

    #[test]
    fn an_old_last_success_is_stale_only_with_a_max_age() {
        let runs = [run("succeeded", 0)];
        let fifteen = Some(Duration::from_secs(15 * 60));
        assert_eq!(health(&runs, Some(at(0)), at(15), fifteen), Health::Healthy);
        assert_eq!(health(&runs, Some(at(0)), at(16), fifteen), Health::Stale);
        assert_eq!(health(&runs, Some(at(0)), at(59), None), Health::Healthy);
        assert_eq!(health(&[], None, at(0), fifteen), Health::Stale);
        assert_eq!(Health::Stale.exit_code(), 3);
    }

    #[test]
    fn the_table_shows_counts_and_errors() {
        let mut ok = run("succeeded", 0);
        ok.summary = Some(
            serde_json::json!({"fetched": 250, "history_inserted": 12, "rejected": 1, "duration_ms": 1840}),
        );
        let text = table(&[run("failed", 5), ok]);
        for expected in [
            "2026-11-27 15:05:00",
            "failed",
            "CoinGecko page 1 failed",
            "250",
            "12",
            "1.8 s",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
