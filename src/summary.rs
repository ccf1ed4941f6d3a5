//! The run summary every run returns. Pure: no I/O.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Succeeded,
    /// A run with this trigger id had already succeeded: its summary is returned, nothing is done.
    Duplicate,
}

impl RunStatus {
    /// The name used in the summary and in `ingest_runs.status`.
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Duplicate => "duplicate",
        }
    }
}

/// What one run did. Always `fetched = rejected + history_inserted + unchanged`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub run_id: String,
    pub trigger_id: Option<String>,
    pub status: RunStatus,
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
        run_id: String,
        trigger_id: Option<String>,
        vs_currency: String,
        counts: Counts,
        duration_ms: u64,
    ) -> Self {
        Self {
            run_id,
            trigger_id,
            status: RunStatus::Succeeded,
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
            status: RunStatus::Duplicate,
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> Summary {
        Summary::succeeded(
            "r1".into(),
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
        assert_eq!(RunStatus::Duplicate.as_str(), "duplicate");
        assert_eq!(
            serde_json::to_value(RunStatus::Succeeded).unwrap(),
            RunStatus::Succeeded.as_str()
        );
        assert_eq!(json["trigger_id"], "t1");
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
}
