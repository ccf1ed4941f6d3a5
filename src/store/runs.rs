//! The run ledger, `ingest_runs`: each run's start, outcome and summary.

use std::error::Error;

use tokio_postgres::types::{FromSql, Json, Type};
use uuid::Uuid;

use super::error::{During, StoreError};
use super::Store;
use crate::status::{HealthFacts, RunRecord};
use crate::summary::{BackfillSummary, RunState, Summary};

/// A run's outcome: `clock_timestamp()`, because `now()` is when its transaction began, before any
/// wait for the run lock.
pub(super) const FINISH_RUN: &str =
    "UPDATE ingest_runs SET status = $2, finished_at = clock_timestamp(), summary = $3 WHERE run_id = $1";

impl Store {
    /// The summary of the succeeded run with this trigger id, if there is one.
    pub async fn succeeded_summary(&self, trigger_id: &str) -> Result<Option<Summary>, StoreError> {
        find_succeeded(&self.client, trigger_id).await
    }

    pub async fn start_run(
        &self,
        run_id: Uuid,
        trigger_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.record_start(run_id, trigger_id, "live").await
    }

    /// Records a backfill invocation in the ledger: its rows point at it.
    pub async fn start_backfill_run(&self, run_id: Uuid) -> Result<(), StoreError> {
        self.record_start(run_id, None, "backfill").await
    }

    async fn record_start(
        &self,
        run_id: Uuid,
        trigger_id: Option<&str>,
        kind: &str,
    ) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO ingest_runs (run_id, trigger_id, status, kind) VALUES ($1, $2, $3, $4)",
                &[&run_id, &trigger_id, &RunState::Running.as_str(), &kind],
            )
            .await
            .during("recording the start of the run")?;
        Ok(())
    }

    /// Records how a backfill invocation ended.
    pub async fn finish_backfill_run(
        &self,
        run_id: Uuid,
        summary: &BackfillSummary,
    ) -> Result<(), StoreError> {
        self.client
            .execute(
                FINISH_RUN,
                &[&run_id, &RunState::Succeeded.as_str(), &Json(summary)],
            )
            .await
            .during("recording the end of the backfill")?;
        Ok(())
    }

    pub async fn fail_run(&self, run_id: Uuid, error: &str) -> Result<(), StoreError> {
        self.client
            .execute(
                "UPDATE ingest_runs SET status = $3, finished_at = clock_timestamp(), error = $2 WHERE run_id = $1",
                &[&run_id, &error, &RunState::Failed.as_str()],
            )
            .await
            .during("recording the failure of the run")?;
        Ok(())
    }

    /// The most recent live runs, newest first (backfills show their progress apart).
    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        const READING: &str = "reading ingest_runs";
        let rows = self
            .client
            .query(
                "SELECT run_id, trigger_id, started_at, finished_at, status, summary, error
                 FROM ingest_runs WHERE kind = 'live' ORDER BY started_at DESC LIMIT $1",
                &[&limit],
            )
            .await
            .during(READING)?;
        rows.into_iter()
            .map(|r| {
                Ok(RunRecord {
                    run_id: r.get(0),
                    trigger_id: r.get(1),
                    started_at: r.get(2),
                    finished_at: r.get(3),
                    status: r.try_get(4).during(READING)?,
                    summary: r.get(5),
                    error: r.get(6),
                })
            })
            .collect()
    }

    /// What health is judged from, whatever runs are shown: the most recent finished run (in the
    /// order the runs are shown, newest start first) and the last success.
    pub async fn health_facts(&self) -> Result<HealthFacts, StoreError> {
        const READING: &str = "reading ingest_runs";
        let row = self
            .client
            .query_one(
                "SELECT (SELECT status FROM ingest_runs WHERE status <> $1 AND kind = 'live'
                         ORDER BY started_at DESC LIMIT 1),
                        (SELECT max(finished_at) FROM ingest_runs WHERE status = $2 AND kind = 'live')",
                &[&RunState::Running.as_str(), &RunState::Succeeded.as_str()],
            )
            .await
            .during(READING)?;
        Ok(HealthFacts {
            last_finished_status: row.try_get(0).during(READING)?,
            last_success: row.get(1),
        })
    }
}

pub(super) async fn find_succeeded(
    client: &impl tokio_postgres::GenericClient,
    trigger_id: &str,
) -> Result<Option<Summary>, StoreError> {
    // 'succeeded' spelt out, as in the predicate of the partial index on trigger_id: a generic
    // plan for a parameter there could not use the index.
    let row = client
        .query_opt(
            "SELECT summary FROM ingest_runs WHERE trigger_id = $1 AND status = 'succeeded'",
            &[&trigger_id],
        )
        .await
        .during("looking up the trigger id")?;
    Ok(row.map(|row| row.get::<_, Json<Summary>>(0).0))
}

/// `ingest_runs.status` read as a [`RunState`]; a name this binary does not know is an error
/// that names it, not a panic.
impl<'a> FromSql<'a> for RunState {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        Ok(<&str as FromSql>::from_sql(ty, raw)?.parse()?)
    }

    fn accepts(ty: &Type) -> bool {
        <&str as FromSql>::accepts(ty)
    }
}
