//! The run summary every run returns, and the states a run goes through. Pure: no I/O.

use std::str::FromStr;

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
}

impl RunState {
    const ALL: [RunState; 4] = [
        RunState::Running,
        RunState::Succeeded,
        RunState::Failed,
        RunState::Duplicate,
    ];

    /// The name used in the summary and in `ingest_runs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Running => "running",
            RunState::Succeeded => "succeeded",
            RunState::Failed => "failed",
            RunState::Duplicate => "duplicate",
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

/// What one run did. Always `fetched = rejected + history_inserted + unchanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: Uuid,
    pub trigger_id: Option<String>,
    /// `succeeded`, or `duplicate` for a trigger that had already succeeded.
    pub status: RunState,
    pub vs_currency: String,
    /// Distinct coins received.
    pub fetched: u64,
    /// Coins left out for a missing, non-numeric or negative price.
    pub rejected: u64,
    /// `current_prices` rows inserted or changed.
    pub upserted: u64,
    pub history_inserted: u64,
    /// Valid coins whose price did not move past the threshold.
    pub unchanged: u64,
    pub pages: u64,
    pub duration_ms: u64,
}

/// The counts a run's apply produces, before they become a [`Summary`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub fetched: u64,
    pub rejected: u64,
    pub upserted: u64,
    pub history_inserted: u64,
    pub pages: u64,
}

impl Summary {
    pub fn succeeded(
        run_id: Uuid,
        trigger_id: Option<String>,
        vs_currency: String,
        counts: Counts,
        duration_ms: u64,
    ) -> Self {
        Self {
            run_id,
            trigger_id,
            status: RunState::Succeeded,
            vs_currency,
            fetched: counts.fetched,
            rejected: counts.rejected,
            upserted: counts.upserted,
            history_inserted: counts.history_inserted,
            unchanged: counts.fetched - counts.rejected - counts.history_inserted,
            pages: counts.pages,
            duration_ms,
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

    fn summary() -> Summary {
        Summary::succeeded(
            Uuid::from_u128(0x019ac6f2_0000_7000_8000_000000000001),
            Some("t1".into()),
            "usd".into(),
            Counts {
                fetched: 100,
                rejected: 3,
                upserted: 40,
                history_inserted: 12,
                pages: 1,
            },
            250,
        )
    }

    #[test]
    fn unchanged_is_what_remains_so_the_counts_add_up() {
        let s = summary();
        assert_eq!(s.unchanged, 85);
        assert_eq!(s.fetched, s.rejected + s.history_inserted + s.unchanged);
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
            "pages",
            "duration_ms",
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
}
