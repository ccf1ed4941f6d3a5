//! The run ledger, `ingest_runs`: each run's start, outcome and summary.

use std::error::Error;
use std::time::Duration;

use chrono::{DateTime, Utc};

use tokio_postgres::types::{FromSql, Json, Type};
use uuid::Uuid;

use super::error::{During, StoreError};
use super::params::typed;
use super::Store;
use crate::status::{HealthFacts, RunRecord};
use crate::summary::{BackfillSummary, RunState, Summary};

/// A run's outcome: `clock_timestamp()`, because `now()` is when its transaction began, before any
/// wait for the run lock. Only a running row: one recorded abandoned keeps that verdict.
pub(super) const FINISH_RUN: &str =
    "UPDATE ingest_runs SET status = $2, finished_at = clock_timestamp(), summary = $3
     WHERE run_id = $1 AND status = 'running'";

/// What a run's lease allows beyond its own limits (its fetch's time limit, its wait for the run
/// lock): the round trips between them, and the parsing of the last answer.
pub const LEASE_MARGIN: Duration = Duration::from_secs(5);

/// What a run in the ledger is: the health and the status table judge the live runs only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunKind {
    Live,
    /// A recorded answer replayed.
    Replay,
    /// A backfill invocation: its rows point at it.
    Backfill,
}

impl RunKind {
    fn as_str(self) -> &'static str {
        match self {
            RunKind::Live => "live",
            RunKind::Replay => "replay",
            RunKind::Backfill => "backfill",
        }
    }
}

/// A run found dead: what `status` and the log say of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbandonedRun {
    pub run_id: Uuid,
    pub kind: String,
    pub started_at: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
}

impl Store {
    /// The summary of the succeeded run with this trigger id, if there is one.
    pub async fn succeeded_summary(&self, trigger_id: &str) -> Result<Option<Summary>, StoreError> {
        find_succeeded(&self.client, trigger_id).await
    }

    /// Records a run's start, with its lease: the time by which it has finished or holds its row
    /// in its apply (see [`Store::abandon_dead_runs`]).
    pub async fn start_run(
        &self,
        run_id: Uuid,
        kind: RunKind,
        trigger_id: Option<&str>,
        lease: Duration,
    ) -> Result<(), StoreError> {
        self.client
            .execute_typed(
                "INSERT INTO ingest_runs (run_id, trigger_id, status, kind, lease_until)
                 VALUES ($1, $2, $3, $4, clock_timestamp() + make_interval(secs => $5))",
                &[
                    typed(&run_id),
                    typed(&trigger_id),
                    typed(&RunState::Running.as_str()),
                    typed(&kind.as_str()),
                    typed(&lease.as_secs_f64()),
                ],
            )
            .await
            .during("recording the start of the run")?;
        Ok(())
    }

    /// Records as `abandoned` the runs that can no longer finish: still `running` past their
    /// lease, and not applying. An applying run holds its row locked until it commits, so `SKIP
    /// LOCKED` passes over it however slow it is; a run past its lease that is not applying has
    /// outlived its own time limits, so its process is gone (or, frozen, will find its row
    /// abandoned when it tries to apply, and apply nothing).
    pub async fn abandon_dead_runs(&self) -> Result<Vec<AbandonedRun>, StoreError> {
        let rows = self
            .client
            .query_typed(
                "UPDATE ingest_runs r
                 SET status = 'abandoned', finished_at = clock_timestamp(),
                     error = CASE r.kind
                         WHEN 'backfill' THEN 'abandoned: still running when its lease ran out at '
                             || r.lease_until || ' (the process was killed or lost the database); the chunks it applied are kept and the next backfill invocation continues'
                         ELSE 'abandoned: still running when its lease ran out at '
                             || r.lease_until || ' (the process was killed or lost the database); nothing of it was applied'
                     END
                 FROM (SELECT run_id FROM ingest_runs
                       WHERE status = 'running' AND lease_until < clock_timestamp()
                       FOR UPDATE SKIP LOCKED) dead
                 WHERE r.run_id = dead.run_id
                 RETURNING r.run_id, r.kind, r.started_at, r.lease_until", &[])
            .await
            .during("recording dead runs as abandoned")?;
        let abandoned: Vec<AbandonedRun> = rows
            .into_iter()
            .map(|r| AbandonedRun {
                run_id: r.get(0),
                kind: r.get(1),
                started_at: r.get(2),
                lease_until: r.get(3),
            })
            .collect();
        for run in &abandoned {
            tracing::warn!(run_id = %run.run_id, kind = %run.kind, started_at = %run.started_at, lease_until = %run.lease_until, "a run died without finishing: recorded as abandoned");
        }
        Ok(abandoned)
    }

    /// Records how a backfill invocation ended.
    pub async fn finish_backfill_run(
        &self,
        run_id: Uuid,
        summary: &BackfillSummary,
    ) -> Result<(), StoreError> {
        self.client
            .execute_typed(
                FINISH_RUN,
                &[
                    typed(&run_id),
                    typed(&RunState::Succeeded.as_str()),
                    typed(&Json(summary)),
                ],
            )
            .await
            .during("recording the end of the backfill")?;
        Ok(())
    }

    /// Records a run's failure, with the requests it made before it failed (they count against
    /// `COINGECKO_MONTHLY_CALL_BUDGET`: CoinGecko counted them).
    pub async fn fail_run(&self, run_id: Uuid, error: &str, calls: u64) -> Result<(), StoreError> {
        let calls = i32::try_from(calls).unwrap_or(i32::MAX);
        self.client
            .execute_typed(
                "UPDATE ingest_runs SET status = $3, finished_at = clock_timestamp(), error = $2, calls = $4
                 WHERE run_id = $1 AND status = 'running'",
                &[
                    typed(&run_id),
                    typed(&error),
                    typed(&RunState::Failed.as_str()),
                    typed(&calls),
                ],
            )
            .await
            .during("recording the failure of the run")?;
        Ok(())
    }

    /// Whether the run ledger exists: a database never migrated has no runs to judge.
    pub async fn has_ledger(&self) -> Result<bool, StoreError> {
        let row = self
            .client
            .query_typed_one("SELECT to_regclass('ingest_runs') IS NOT NULL", &[])
            .await
            .during("looking for ingest_runs")?;
        Ok(row.get(0))
    }

    /// The most recent live runs, newest first (backfills show their progress apart).
    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        const READING: &str = "reading ingest_runs";
        let rows = self
            .client
            .query_typed(
                "SELECT run_id, trigger_id, started_at, finished_at, status, summary, error
                 FROM ingest_runs WHERE kind = 'live' ORDER BY started_at DESC LIMIT $1",
                &[typed(&limit)],
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

    /// What health is judged from, whatever runs are shown: the run that finished last (not the
    /// one that started last: a later run can fail early while an earlier one goes on to
    /// succeed) and the last success.
    pub async fn health_facts(&self) -> Result<HealthFacts, StoreError> {
        const READING: &str = "reading ingest_runs";
        let row = self
            .client
            .query_typed_one(
                "WITH ended AS (
                     SELECT status, finished_at FROM ingest_runs
                     WHERE status NOT IN ('running', 'abandoned') AND kind = 'live'
                     ORDER BY finished_at DESC LIMIT 1)
                 SELECT (SELECT status FROM ended),
                        (SELECT max(finished_at) FROM ingest_runs WHERE status = 'succeeded' AND kind = 'live'),
                        (SELECT count(*) FROM ingest_runs
                         WHERE status = 'abandoned' AND kind = 'live'
                           AND started_at > coalesce((SELECT finished_at FROM ended), '-infinity'))", &[])
            .await
            .during(READING)?;
        let abandoned: i64 = row.get(2);
        Ok(HealthFacts {
            last_finished_status: row.try_get(0).during(READING)?,
            last_success: row.get(1),
            abandoned_in_a_row: abandoned.unsigned_abs(),
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
        .query_typed_opt(
            "SELECT summary FROM ingest_runs WHERE trigger_id = $1 AND status = 'succeeded'",
            &[typed(&trigger_id)],
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
