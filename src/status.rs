//! `coingecko-cdc status`: what the last runs did and whether the ingest is healthy. Pure: no I/O.

use chrono::{DateTime, Utc};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Table};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use crate::summary::RunState;
use crate::trigger;

/// One row of `ingest_runs`.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    pub run_id: Uuid,
    pub trigger_id: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub status: RunState,
    pub summary: Option<Value>,
    pub error: Option<String>,
}

/// How far the newest backfill has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BackfillProgress {
    pub job_id: Uuid,
    pub window_from: DateTime<Utc>,
    pub window_to: DateTime<Utc>,
    pub granularity: String,
    pub finished_at: Option<DateTime<Utc>>,
    pub coins: u64,
    /// Coins with no chunk left to do (refused ones included).
    pub coins_done: u64,
    pub chunks_done: u64,
    pub chunks_refused: u64,
    pub chunks_left: u64,
    /// Requests spent so far, retries included.
    pub calls: u64,
    pub history_inserted: u64,
}

/// Whether earlier backfills hold a coin's history in a currency over a window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CoverageState {
    Covered,
    /// In the open backfill, not done yet.
    Pending,
    /// CoinGecko refused it (the plan's history, an unknown id); a new backfill asks again.
    Refused,
    /// No backfill asked for it over the window: a coin or currency added since.
    NotCovered,
}

/// One coin in one currency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PairCoverage {
    pub coin_id: String,
    pub vs_currency: String,
    pub state: CoverageState,
}

/// What the backfills cover of the coins and currencies a backfill would now ask for, since the
/// newest backfill's start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Coverage {
    pub from: DateTime<Utc>,
    pub granularity: String,
    pub pairs: Vec<PairCoverage>,
}

/// The pairs named in a coverage line, at most: the count says the rest.
const PAIRS_NAMED: usize = 10;

/// The coverage as one line: how many pairs are covered, and the first of those that are not.
pub fn coverage_line(coverage: &Coverage) -> String {
    let count = |state| coverage.pairs.iter().filter(|p| p.state == state).count();
    let open: Vec<String> = coverage
        .pairs
        .iter()
        .filter(|p| p.state != CoverageState::Covered)
        .map(|p| {
            let state = match p.state {
                CoverageState::Pending => " (pending)",
                CoverageState::Refused => " (refused)",
                CoverageState::Covered | CoverageState::NotCovered => "",
            };
            format!("{} {}{state}", p.coin_id, p.vs_currency)
        })
        .collect();
    let mut line = format!(
        "backfill coverage since {} ({}): {} of {} coins and currencies covered",
        coverage.from.format("%Y-%m-%d"),
        coverage.granularity,
        count(CoverageState::Covered),
        coverage.pairs.len(),
    );
    if !open.is_empty() {
        line.push_str("; not covered: ");
        line.push_str(&open[..open.len().min(PAIRS_NAMED)].join(", "));
        if open.len() > PAIRS_NAMED {
            line.push_str(&format!(" and {} more", open.len() - PAIRS_NAMED));
        }
        if count(CoverageState::NotCovered) > 0 {
            line.push_str(" (run the backfill again to cover them)");
        }
    }
    line
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// The most recent finished run failed.
    LastRunFailed,
    /// No run succeeded within `--max-age`.
    Stale,
    /// No run has finished yet: a new database, or one whose first run is still going.
    NoRuns,
    /// The last runs all died (`--abandoned-in-a-row` of them): timeouts or kills, not one-offs.
    RunsAbandoned,
}

impl Health {
    const ALL: [Health; 5] = [
        Health::Healthy,
        Health::LastRunFailed,
        Health::Stale,
        Health::NoRuns,
        Health::RunsAbandoned,
    ];

    /// The exit code cron and monitoring see. 1 (the check itself failed) and 2 (clap's usage
    /// error) are left out, so that no mistake reads as a verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Healthy => 0,
            Health::LastRunFailed => 3,
            Health::Stale => 4,
            Health::NoRuns => 5,
            Health::RunsAbandoned => 6,
        }
    }

    /// The name in `--json` and on the table's last line.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::LastRunFailed => "last_run_failed",
            Health::Stale => "stale",
            Health::NoRuns => "no_runs",
            Health::RunsAbandoned => "runs_abandoned",
        }
    }

    fn meaning(self) -> &'static str {
        match self {
            Health::Healthy => "the last finished run succeeded (within --max-age, when given)",
            Health::LastRunFailed => "the most recent finished run failed",
            Health::Stale => "no run succeeded within --max-age",
            Health::NoRuns => "no run has finished yet",
            Health::RunsAbandoned => {
                "the last runs died without finishing (--abandoned-in-a-row of them, or more)"
            }
        }
    }
}

impl Serialize for Health {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// The exit codes, for `status --help`.
pub fn exit_codes_help() -> String {
    let mut codes: Vec<(u8, String)> = Health::ALL
        .iter()
        .map(|h| (h.exit_code(), format!("{}: {}", h.as_str(), h.meaning())))
        .collect();
    codes.push((
        1,
        "the status could not be read (a bad setting, the database unreachable)".into(),
    ));
    codes.push((2, "usage error (bad arguments)".into()));
    codes.sort();
    let lines: Vec<String> = codes
        .iter()
        .map(|(code, meaning)| format!("  {code}  {meaning}"))
        .collect();
    format!("Exit codes:\n{}", lines.join("\n"))
}

/// What health is judged from; read apart from the runs shown, so `--limit` cannot hide it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HealthFacts {
    /// The state of the most recent run that ended by itself (not abandoned), if any has.
    pub last_finished_status: Option<RunState>,
    /// Abandoned runs that started after the last run that ended by itself had finished.
    pub abandoned_in_a_row: u64,
    /// When the last successful run finished.
    pub last_success: Option<DateTime<Utc>>,
}

/// Judges the ingest: runs still in progress do not count, and fewer than `abandoned_limit`
/// abandoned runs in a row (a routine timeout) do not either.
pub fn health(
    facts: &HealthFacts,
    now: DateTime<Utc>,
    max_age: Option<std::time::Duration>,
    abandoned_limit: u64,
) -> Health {
    if facts.abandoned_in_a_row >= abandoned_limit.max(1) {
        return Health::RunsAbandoned;
    }
    match facts.last_finished_status {
        None => return Health::NoRuns,
        Some(RunState::Failed) => return Health::LastRunFailed,
        Some(_) => {}
    }
    let Some(max_age) = max_age else {
        return Health::Healthy;
    };
    match facts.last_success {
        Some(at) if (now - at).to_std().is_ok_and(|age| age <= max_age) => Health::Healthy,
        Some(at) if at > now => Health::Healthy,
        _ => Health::Stale,
    }
}

/// What finishing a backfill still takes: a call per chunk left, at the pace allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct BackfillEstimate {
    pub calls_left: u64,
    pub seconds_left: u64,
}

pub fn backfill_estimate(progress: &BackfillProgress, calls_per_min: u32) -> BackfillEstimate {
    BackfillEstimate {
        calls_left: progress.chunks_left,
        seconds_left: (progress.chunks_left * 60).div_ceil(u64::from(calls_per_min.max(1))),
    }
}

/// The backfill's progress as one line.
pub fn backfill_line(progress: &BackfillProgress, estimate: &BackfillEstimate) -> String {
    let state = match progress.finished_at {
        Some(at) => format!("finished {}", at.format("%Y-%m-%d %H:%M")),
        None => format!(
            "{} chunks left, about {} calls and {} to finish",
            progress.chunks_left,
            estimate.calls_left,
            humantime::format_duration(std::time::Duration::from_secs(estimate.seconds_left))
        ),
    };
    format!(
        "backfill {} to {} ({}): {} of {} coins done, {} chunks done, {} refused, {} calls spent, {} history rows; {state}",
        progress.window_from.format("%Y-%m-%d"),
        progress.window_to.format("%Y-%m-%d"),
        progress.granularity,
        progress.coins_done,
        progress.coins,
        progress.chunks_done,
        progress.chunks_refused,
        progress.calls,
        progress.history_inserted,
    )
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
        "fetch / apply / raw",
        "trigger / error",
    ]);
    for run in runs {
        let count = |key: &str| {
            run.summary
                .as_ref()
                .and_then(|s| s.get(key))
                .map_or(String::new(), Value::to_string)
        };
        let seconds = |key: &str| {
            let ms = run.summary.as_ref()?.get(key)?.as_u64()?;
            Some(format!("{:.1}", ms as f64 / 1000.0))
        };
        let duration = seconds("duration_ms").map_or(String::new(), |s| format!("{s} s"));
        // Summaries stored before the phases were timed lack them.
        let phases = match (seconds("fetch_ms"), seconds("apply_ms"), seconds("raw_ms")) {
            (Some(fetch), Some(apply), Some(raw)) => format!("{fetch} / {apply} / {raw} s"),
            _ => String::new(),
        };
        let note = run
            .error
            .clone()
            .or_else(|| run.trigger_id.as_deref().map(trigger::shortened))
            .unwrap_or_default();
        table.add_row([
            run.started_at.format("%Y-%m-%d %H:%M:%S").to_string(),
            run.status.as_str().to_string(),
            count("fetched"),
            count("history_inserted"),
            count("rejected"),
            duration,
            phases,
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

    #[test]
    fn a_backfill_in_progress_says_what_is_left_at_the_pace_allowed() {
        let progress = BackfillProgress {
            job_id: Uuid::nil(),
            window_from: Utc.with_ymd_and_hms(2025, 12, 2, 0, 0, 0).unwrap(),
            window_to: Utc.with_ymd_and_hms(2026, 12, 2, 0, 0, 0).unwrap(),
            granularity: "daily".into(),
            finished_at: None,
            coins: 250,
            coins_done: 100,
            chunks_done: 300,
            chunks_refused: 3,
            chunks_left: 447,
            calls: 305,
            history_inserted: 12_000,
        };
        let estimate = backfill_estimate(&progress, 30);
        assert_eq!(
            estimate,
            BackfillEstimate {
                calls_left: 447,
                seconds_left: 894
            }
        );
        let line = backfill_line(&progress, &estimate);
        assert!(
            line.contains("100 of 250 coins done")
                && line.contains("447 chunks left, about 447 calls and 14m 54s to finish"),
            "{line}"
        );
        let done = BackfillProgress {
            finished_at: Some(progress.window_to),
            chunks_left: 0,
            ..progress
        };
        assert!(backfill_line(&done, &backfill_estimate(&done, 30))
            .ends_with("finished 2026-12-02 00:00"));
    }

    #[test]
    fn coverage_names_the_coins_and_currencies_not_covered() {
        let pair = |coin: &str, vs: &str, state| PairCoverage {
            coin_id: coin.into(),
            vs_currency: vs.into(),
            state,
        };
        let mut coverage = Coverage {
            from: Utc.with_ymd_and_hms(2026, 11, 2, 0, 0, 0).unwrap(),
            granularity: "hourly".into(),
            pairs: vec![
                pair("alpha", "usd", CoverageState::Covered),
                pair("alpha", "eur", CoverageState::NotCovered),
                pair("gamma", "usd", CoverageState::Refused),
            ],
        };
        assert_eq!(
            coverage_line(&coverage),
            "backfill coverage since 2026-11-02 (hourly): 1 of 3 coins and currencies covered; \
             not covered: alpha eur, gamma usd (refused) (run the backfill again to cover them)"
        );
        coverage.pairs = (0..12)
            .map(|n| pair(&format!("coin{n}"), "usd", CoverageState::Pending))
            .collect();
        let line = coverage_line(&coverage);
        assert!(
            line.contains("0 of 12") && line.ends_with("coin9 usd (pending) and 2 more"),
            "{line}"
        );
        coverage.pairs.truncate(0);
        assert!(coverage_line(&coverage).ends_with("0 of 0 coins and currencies covered"));
    }

    fn run(status: RunState, minute: u32) -> RunRecord {
        RunRecord {
            run_id: Uuid::from_u128(minute.into()),
            trigger_id: None,
            started_at: Utc.with_ymd_and_hms(2026, 11, 27, 15, minute, 0).unwrap(),
            finished_at: None,
            status,
            summary: None,
            error: (status == RunState::Failed).then(|| "CoinGecko page 1 failed".into()),
        }
    }

    #[test]
    fn a_long_trigger_id_is_shortened_in_the_table() {
        let mut long = run(RunState::Succeeded, 0);
        long.trigger_id = Some(format!("first-{}-last", "x".repeat(10_000)));
        let text = table(&[long]);
        let widest = text.lines().map(|l| l.chars().count()).max().unwrap();
        assert!(widest < 150, "{widest} characters wide:\n{text}");
        assert!(text.contains("first-") && text.contains("-last"), "{text}");
    }

    fn at(minute: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 15, minute, 0).unwrap()
    }

    fn facts(last_finished: Option<RunState>, last_success: Option<u32>) -> HealthFacts {
        HealthFacts {
            last_finished_status: last_finished,
            last_success: last_success.map(at),
            abandoned_in_a_row: 0,
        }
    }

    #[test]
    fn abandoned_runs_are_unhealthy_only_from_the_limit_in_a_row() {
        let mut after_success = facts(Some(RunState::Succeeded), Some(0));
        after_success.abandoned_in_a_row = 1;
        assert_eq!(health(&after_success, at(5), None, 2), Health::Healthy);
        after_success.abandoned_in_a_row = 2;
        assert_eq!(
            health(&after_success, at(5), None, 2),
            Health::RunsAbandoned
        );
        assert_eq!(health(&after_success, at(5), None, 3), Health::Healthy);
        // Only abandoned runs so far: a new ingest whose every run times out.
        let only_abandoned = HealthFacts {
            abandoned_in_a_row: 1,
            ..HealthFacts::default()
        };
        assert_eq!(health(&only_abandoned, at(5), None, 2), Health::NoRuns);
        assert_eq!(
            health(&only_abandoned, at(5), None, 1),
            Health::RunsAbandoned
        );
        assert_eq!(Health::RunsAbandoned.exit_code(), 6);
    }

    #[test]
    fn a_failed_last_run_is_unhealthy_even_after_an_earlier_success() {
        let failed = facts(Some(RunState::Failed), Some(0));
        assert_eq!(health(&failed, at(11), None, 2), Health::LastRunFailed);
        let fifteen = Some(Duration::from_secs(15 * 60));
        assert_eq!(health(&failed, at(11), fifteen, 2), Health::LastRunFailed);
        assert_eq!(Health::LastRunFailed.exit_code(), 3);
    }

    #[test]
    fn an_old_last_success_is_stale_only_with_a_max_age() {
        let succeeded = facts(Some(RunState::Succeeded), Some(0));
        let fifteen = Some(Duration::from_secs(15 * 60));
        assert_eq!(health(&succeeded, at(15), fifteen, 2), Health::Healthy);
        assert_eq!(health(&succeeded, at(16), fifteen, 2), Health::Stale);
        assert_eq!(health(&succeeded, at(59), None, 2), Health::Healthy);
        assert_eq!(Health::Stale.exit_code(), 4);
    }

    #[test]
    fn no_finished_run_is_not_healthy_with_or_without_a_max_age() {
        let fifteen = Some(Duration::from_secs(15 * 60));
        for max_age in [None, fifteen] {
            assert_eq!(
                health(&HealthFacts::default(), at(0), max_age, 2),
                Health::NoRuns
            );
        }
        assert_eq!(Health::NoRuns.exit_code(), 5);
        assert_eq!(Health::Healthy.exit_code(), 0);
    }

    #[test]
    fn exit_codes_are_distinct_and_clear_of_failure_and_usage_errors() {
        let mut codes: Vec<u8> = Health::ALL.iter().map(|h| h.exit_code()).collect();
        codes.sort();
        codes.dedup();
        assert_eq!(codes, [0, 3, 4, 5, 6]);
        let help = exit_codes_help();
        for health in Health::ALL {
            let line = format!("  {}  {}: ", health.exit_code(), health.as_str());
            assert!(help.contains(&line), "{line:?} missing from\n{help}");
        }
        assert!(
            help.contains("  1  ") && help.contains("  2  usage error"),
            "{help}"
        );
    }

    #[test]
    fn the_table_shows_counts_and_errors() {
        let mut ok = run(RunState::Succeeded, 0);
        ok.summary = Some(
            serde_json::json!({"fetched": 250, "history_inserted": 12, "rejected": 1, "duration_ms": 1840,
                               "fetch_ms": 1210, "apply_ms": 330, "raw_ms": 260}),
        );
        let mut older = run(RunState::Succeeded, 10);
        older.summary = Some(serde_json::json!({"fetched": 250, "duration_ms": 2470}));
        let text = table(&[run(RunState::Failed, 5), ok, older]);
        for expected in [
            "2026-11-27 15:05:00",
            "failed",
            "CoinGecko page 1 failed",
            "250",
            "12",
            "1.8 s",
            "1.2 / 0.3 / 0.3 s",
            "2.5 s",
        ] {
            assert!(text.contains(expected), "{expected} missing from\n{text}");
        }
    }
}
