//! The run summary every run returns, and the states a run goes through. Pure: no I/O.

use std::str::FromStr;

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A run's state in the ledger, `ingest_runs.status`: `running` until it ends in one of the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    Succeeded,
    Failed,
    /// A run with this trigger id had already succeeded: its summary is returned, nothing is done.
    Duplicate,
    /// Its process died (a Lambda timeout, an out-of-memory kill, `kill -9`): still `running`
    /// when its lease ran out, recorded so by a later run or `status`. Nothing of it was applied.
    Abandoned,
}

impl RunState {
    const ALL: [RunState; 5] = [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Duplicate,
        RunState::Abandoned,
    ];

    /// The name used in the summary and in `ingest_runs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Duplicate => "duplicate",
            RunState::Abandoned => "abandoned",
        }
    }
}

/// A value of `ingest_runs.status` that names no [`RunState`]: a schema newer than this binary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ingest_runs.status holds {0:?}, a run state this binary does not know")]
pub struct UnknownRunState(pub String);

impl FromStr for RunState {
    type Err = UnknownRunState;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        RunState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| UnknownRunState(text.to_string()))
    }
}

/// What one run did. Always `fetched = rejected + history_inserted + unchanged + out_of_order +
/// outside_retention`, in total and in each currency; the totals add up the currencies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: Uuid,
    pub trigger_id: Option<String>,
    /// `succeeded`, or `duplicate` for a trigger that had already succeeded.
    pub status: RunState,
    /// The quote currencies, comma-separated in the order configured (`usd` or `usd,eur,btc`).
    pub vs_currency: String,
    /// Distinct coins received, once in each currency.
    pub fetched: u64,
    /// Coins left out for a missing, non-numeric or negative price.
    pub rejected: u64,
    /// `current_prices` rows inserted or changed.
    pub upserted: u64,
    pub history_inserted: u64,
    /// Valid coins whose price did not move past the threshold.
    pub unchanged: u64,
    /// Valid coins older than what the database holds of them (an overlapping run applied a newer
    /// answer first, or a stale cache answered): they changed nothing and were not judged.
    /// Summaries written before the guard lack it: it reads as 0.
    #[serde(default)]
    pub out_of_order: u64,
    /// Coins the answer carried that `COIN_IDS` did not ask for: left out, not in `fetched`.
    #[serde(default)]
    pub unrequested: u64,
    /// Coins whose moved price falls in a period the owner retired (detached, dropped, older than
    /// the retention horizon) or no run may make: left out whole, and named in the log.
    #[serde(default)]
    pub outside_retention: u64,
    /// Pages of `/coins/markets`.
    pub pages: u64,
    /// Dead runs this run found and recorded `abandoned` before it started.
    #[serde(default)]
    pub abandoned_runs: u64,
    /// Requests to CoinGecko, retries included: the pages and the `/simple/price` batches.
    /// Summaries written before several currencies lack it: it reads as 0.
    #[serde(default)]
    pub calls: u64,
    /// One entry a currency, in the order configured.
    #[serde(default)]
    pub currencies: Vec<CurrencySummary>,
    /// The whole run, from its start to its commit.
    pub duration_ms: u64,
    /// Fetching and parsing every page; 0 for a recorded answer. Summaries written before the
    /// phases were timed lack the three phases: they read as 0.
    #[serde(default)]
    pub fetch_ms: u64,
    /// The apply of the price tables: from opening the transaction (the wait for the run lock
    /// included) through writing the prices, and the commit, when they land.
    #[serde(default)]
    pub apply_ms: u64,
    /// Pruning old raw pages and storing this run's.
    #[serde(default)]
    pub raw_ms: u64,
    /// Changes put on EventBridge after the commit, this run's and the backlog's (absent when
    /// `EVENT_BUS_NAME` is unset). Not in the summary stored with the run, which commits first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_published: Option<u64>,
    /// Changes still to publish afterwards: the next runs take them, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_backlog: Option<u64>,
    /// Why publishing stopped short (the bus, the permission, the network): the run succeeded all
    /// the same, and nothing is lost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events_error: Option<String>,
}

/// What one run did in one quote currency: its own CDC stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencySummary {
    pub vs_currency: String,
    pub fetched: u64,
    pub rejected: u64,
    pub upserted: u64,
    pub history_inserted: u64,
    pub unchanged: u64,
    #[serde(default)]
    pub out_of_order: u64,
    #[serde(default)]
    pub unrequested: u64,
    pub outside_retention: u64,
}

/// How a backfill invocation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackfillOutcome {
    /// No chunk is left: the backfill is complete.
    Finished,
    /// The time budget ran out (the Lambda's deadline or `FETCH_BUDGET_SECS`): invoke again.
    OutOfTime,
    /// `COINGECKO_MONTHLY_CALL_BUDGET` is spent: it continues next month, or with a larger one.
    OutOfMonthlyCalls,
    /// Another invocation is working on the backfill.
    Busy,
    /// Every coin and currency asked for is covered over the window: nothing to do.
    AlreadyDone,
    /// No coin to backfill: name them (`--coins`, `COIN_IDS`) or let a live run find them first.
    NoCoins,
}

/// A coin whose backfill ended early, and why (the plan's limit, an unknown id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedCoin {
    pub coin_id: String,
    pub error: String,
}

/// What one backfill invocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackfillSummary {
    pub run_id: Uuid,
    pub outcome: BackfillOutcome,
    pub job_id: Option<Uuid>,
    pub window_from: Option<chrono::DateTime<chrono::Utc>>,
    pub window_to: Option<chrono::DateTime<chrono::Utc>>,
    pub granularity: Option<String>,
    /// Chunks fetched and applied by this invocation.
    pub chunks_done: u64,
    /// Chunks given up with their coin.
    pub chunks_refused: u64,
    /// Chunks of the backfill still to do.
    pub chunks_left: u64,
    /// Points received.
    pub points: u64,
    /// History rows written: the points the rule records, before the coin's first live row.
    pub history_inserted: u64,
    /// Points in a period the owner retired, or no backfill may make: left out, before the rule.
    #[serde(default)]
    pub outside_retention: u64,
    /// Requests to CoinGecko, retries included.
    pub calls: u64,
    pub refused: Vec<RefusedCoin>,
    pub duration_ms: u64,
}

impl BackfillSummary {
    pub fn new(run_id: Uuid) -> Self {
        Self {
            run_id,
            outcome: BackfillOutcome::Finished,
            job_id: None,
            window_from: None,
            window_to: None,
            granularity: None,
            chunks_done: 0,
            chunks_refused: 0,
            chunks_left: 0,
            points: 0,
            history_inserted: 0,
            outside_retention: 0,
            calls: 0,
            refused: Vec::new(),
            duration_ms: 0,
        }
    }
}

/// Where a run's time went. The phases do not overlap and all fall within `duration`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    pub duration: Duration,
    pub fetch: Duration,
    pub apply: Duration,
    pub raw: Duration,
}

/// The counts a run's apply produces in one currency, before they become a [`Summary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counts {
    pub vs_currency: String,
    pub fetched: u64,
    pub rejected: u64,
    pub upserted: u64,
    pub history_inserted: u64,
    pub out_of_order: u64,
    pub unrequested: u64,
    pub outside_retention: u64,
}

/// The requests a run made to CoinGecko.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requests {
    pub pages: u64,
    pub calls: u64,
}

impl Summary {
    pub fn succeeded(
        run_id: Uuid,
        trigger_id: Option<String>,
        counts: Vec<Counts>,
        requests: Requests,
        timings: Timings,
    ) -> Self {
        let currencies: Vec<CurrencySummary> = counts
            .into_iter()
            .map(|c| CurrencySummary {
                unchanged: c.fetched
                    - c.rejected
                    - c.history_inserted
                    - c.out_of_order
                    - c.outside_retention,
                vs_currency: c.vs_currency,
                fetched: c.fetched,
                rejected: c.rejected,
                upserted: c.upserted,
                history_inserted: c.history_inserted,
                out_of_order: c.out_of_order,
                unrequested: c.unrequested,
                outside_retention: c.outside_retention,
            })
            .collect();
        let total = |count: fn(&CurrencySummary) -> u64| currencies.iter().map(count).sum();
        let summary = Self {
            run_id,
            trigger_id,
            status: RunState::Succeeded,
            vs_currency: currencies
                .iter()
                .map(|c| c.vs_currency.as_str())
                .collect::<Vec<_>>()
                .join(","),
            fetched: total(|c| c.fetched),
            rejected: total(|c| c.rejected),
            upserted: total(|c| c.upserted),
            history_inserted: total(|c| c.history_inserted),
            unchanged: total(|c| c.unchanged),
            out_of_order: total(|c| c.out_of_order),
            unrequested: total(|c| c.unrequested),
            outside_retention: total(|c| c.outside_retention),
            pages: requests.pages,
            abandoned_runs: 0,
            calls: requests.calls,
            currencies,
            duration_ms: 0,
            fetch_ms: 0,
            apply_ms: 0,
            raw_ms: 0,
            events_published: None,
            events_backlog: None,
            events_error: None,
        };
        summary.timed(timings)
    }

    /// The same run with these timings. Whole milliseconds rounded down, phase by phase: the
    /// phases then never add up to more than the run.
    pub fn timed(self, timings: Timings) -> Self {
        let ms = |d: Duration| d.as_millis() as u64;
        Self {
            duration_ms: ms(timings.duration),
            fetch_ms: ms(timings.fetch),
            apply_ms: ms(timings.apply),
            raw_ms: ms(timings.raw),
            ..self
        }
    }

    /// The summary to return when this run's trigger had already succeeded.
    pub fn into_duplicate(self) -> Self {
        Self {
            status: RunState::Duplicate,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(vs_currency: &str, fetched: u64, rejected: u64, history_inserted: u64) -> Counts {
        Counts {
            vs_currency: vs_currency.into(),
            fetched,
            rejected,
            upserted: 40,
            history_inserted,
            out_of_order: 0,
            unrequested: 0,
            outside_retention: 0,
        }
    }

    fn summary() -> Summary {
        Summary::succeeded(
            Uuid::from_u128(0x019ac6f2_0000_7000_8000_000000000001),
            Some("t1".into()),
            vec![counts("usd", 100, 3, 12)],
            Requests { pages: 1, calls: 1 },
            Timings {
                duration: Duration::from_millis(250),
                ..Timings::default()
            },
        )
    }

    #[test]
    fn unchanged_is_what_remains_so_the_counts_add_up() {
        let s = summary();
        assert_eq!(s.unchanged, 85);
        assert_eq!(s.fetched, s.rejected + s.history_inserted + s.unchanged);
    }

    #[test]
    fn coins_outside_retention_are_neither_recorded_nor_unchanged() {
        let s = Summary::succeeded(
            Uuid::nil(),
            None,
            vec![
                Counts {
                    outside_retention: 4,
                    ..counts("usd", 100, 3, 12)
                },
                Counts {
                    outside_retention: 1,
                    ..counts("eur", 10, 0, 2)
                },
            ],
            Requests::default(),
            Timings::default(),
        );
        assert_eq!((s.outside_retention, s.unchanged), (5, 88));
        assert_eq!(
            s.fetched,
            s.rejected + s.history_inserted + s.unchanged + s.outside_retention
        );
        let per_currency: Vec<(u64, u64)> = s
            .currencies
            .iter()
            .map(|c| (c.outside_retention, c.unchanged))
            .collect();
        assert_eq!(per_currency, [(4, 81), (1, 7)]);
    }

    #[test]
    fn the_totals_add_up_the_currencies_and_each_currency_adds_up() {
        let s = Summary::succeeded(
            Uuid::nil(),
            None,
            vec![
                counts("usd", 100, 3, 12),
                Counts {
                    out_of_order: 4,
                    unrequested: 2,
                    ..counts("eur", 100, 7, 1)
                },
                counts("btc", 100, 100, 0),
            ],
            Requests { pages: 1, calls: 2 },
            Timings::default(),
        );
        assert_eq!(s.vs_currency, "usd,eur,btc");
        assert_eq!(
            (s.fetched, s.rejected, s.history_inserted, s.upserted),
            (300, 110, 13, 120)
        );
        assert_eq!((s.out_of_order, s.unrequested), (4, 2));
        assert_eq!(
            s.fetched,
            s.rejected + s.history_inserted + s.unchanged + s.out_of_order
        );
        let unchanged: Vec<u64> = s.currencies.iter().map(|c| c.unchanged).collect();
        assert_eq!(unchanged, [85, 88, 0]);
        for c in &s.currencies {
            assert_eq!(
                c.fetched,
                c.rejected + c.history_inserted + c.unchanged + c.out_of_order,
                "{c:?}"
            );
        }
    }

    #[test]
    fn serialises_with_the_documented_names() {
        let json = serde_json::to_value(summary().into_duplicate()).unwrap();
        assert_eq!(json["status"], "duplicate");
        assert_eq!(json["trigger_id"], "t1");
        assert_eq!(json["run_id"], "019ac6f2-0000-7000-8000-000000000001");
        for key in [
            "run_id",
            "fetched",
            "rejected",
            "upserted",
            "history_inserted",
            "unchanged",
            "out_of_order",
            "unrequested",
            "outside_retention",
            "pages",
            "calls",
            "currencies",
            "duration_ms",
            "fetch_ms",
            "apply_ms",
            "raw_ms",
        ] {
            assert!(json.get(key).is_some(), "{key} missing from {json}");
        }
    }

    #[test]
    fn every_state_reads_back_from_its_name_and_an_unknown_one_is_named() {
        for state in RunState::ALL {
            assert_eq!(state.as_str().parse(), Ok(state));
            assert_eq!(serde_json::to_value(state).unwrap(), state.as_str());
        }
        let error = "paused".parse::<RunState>().unwrap_err();
        assert_eq!(error, UnknownRunState("paused".into()));
        assert!(error.to_string().contains("\"paused\""), "{error}");
    }

    #[test]
    fn the_phases_in_whole_milliseconds_never_add_up_to_more_than_the_run() {
        let micros = Duration::from_micros;
        // Rounded to the nearest millisecond, 1.5 + 1.5 would make 4 of a 3.0 ms run.
        let s = summary().timed(Timings {
            duration: micros(3_000),
            fetch: micros(1_500),
            apply: micros(1_500),
            raw: micros(0),
        });
        assert_eq!(
            (s.fetch_ms, s.apply_ms, s.raw_ms, s.duration_ms),
            (1, 1, 0, 3)
        );
        let s = summary().timed(Timings {
            duration: micros(2_999),
            fetch: micros(999),
            apply: micros(1_001),
            raw: micros(999),
        });
        assert!(s.fetch_ms + s.apply_ms + s.raw_ms <= s.duration_ms, "{s:?}");
    }

    #[test]
    fn a_summary_stored_before_the_phases_were_timed_still_reads() {
        let stored = serde_json::json!({
            "run_id": "01936f0e-0000-7000-8000-000000000001", "trigger_id": null, "status": "succeeded", "vs_currency": "usd",
            "fetched": 100, "rejected": 3, "upserted": 40, "history_inserted": 12,
            "unchanged": 85, "pages": 1, "duration_ms": 250
        });
        let read: Summary = serde_json::from_value(stored).unwrap();
        assert_eq!(
            (read.duration_ms, read.fetch_ms, read.apply_ms, read.raw_ms),
            (250, 0, 0, 0)
        );
        assert_eq!((read.calls, read.currencies.len()), (0, 0));
        assert_eq!(read.into_duplicate().fetched, 100);
    }
}
