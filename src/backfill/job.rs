//! One backfill invocation: lease the job (or start it), then fetch and apply its chunks in order
//! until none is left or the time or the monthly calls run out. Each chunk lands in its own
//! transaction, so an invocation cut off anywhere leaves whole chunks, and the next continues.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use super::plan::{plan_chunks, window_for_days, BackfillRequest, PlanError, Window};
use crate::cdc;
use crate::coingecko::{Call, ChartSession, CoinGeckoClient, FetchError, TimeLimit};
use crate::config::{ApiPlan, CoinSelection, IngestConfig};
use crate::market::ChartPoint;
use crate::store::{
    Apply, BackfillCoins, BackfillJob, Claim, NewBackfill, PendingChunk, Store, StoreError,
    LEASE_MARGIN,
};
use crate::summary::{BackfillOutcome, BackfillSummary, RefusedCoin};

/// The summary's last words: how the invocation ended, for which job, in how long.
fn ended(
    summary: BackfillSummary,
    outcome: BackfillOutcome,
    job: Option<&BackfillJob>,
    started: Instant,
) -> BackfillSummary {
    BackfillSummary {
        outcome,
        job_id: job.map(|j| j.job_id),
        window_from: job.map(|j| j.window_from),
        window_to: job.map(|j| j.window_to),
        granularity: job.map(|j| j.granularity.as_str().to_string()),
        duration_ms: started.elapsed().as_millis() as u64,
        ..summary
    }
}

/// How long an invocation's hold on the job lasts past its last chunk: a dead invocation's
/// job is taken over after this.
const LEASE: TimeDelta = TimeDelta::minutes(5);
/// The Demo plan refuses a `from` older than 365 days when the request arrives, not when the job
/// was planned: requests made later start this much inside the limit.
const DEMO_HISTORY_MARGIN: TimeDelta = TimeDelta::minutes(5);

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one invocation works with: built once, borrowed from the ingest.
pub struct Backfill<'a> {
    pub coingecko: &'a CoinGeckoClient,
    pub settings: &'a IngestConfig,
}

impl Backfill<'_> {
    /// One invocation, within `time_left` (the Lambda's) or `FETCH_BUDGET_SECS`.
    pub async fn run(
        &self,
        store: &mut Store,
        request: &BackfillRequest,
        time_left: Option<Duration>,
    ) -> Result<BackfillSummary, BackfillError> {
        let started = Instant::now();
        let run_id = Uuid::now_v7();
        let now = Utc::now();
        let (from, to) = match request.window {
            Window::Days(days) => window_for_days(days, now),
            Window::Range { from, to } => (from, to.unwrap_or(now)),
        };
        let currencies = self.coingecko.vs_currencies().to_vec();
        let new = NewBackfill {
            window_from: from,
            window_to: to.min(now),
            granularity: request.granularity,
            coins: self.coins(request),
            chunks: plan_chunks(from, to, self.coingecko.plan(), request.granularity, now)?,
            currencies,
        };
        let mut summary = BackfillSummary::new(run_id);
        let claim = store
            .begin_apply(self.settings.lock_timeout, self.settings.statement_timeout)
            .await?
            .claim_backfill(run_id, now + LEASE, &new)
            .await?;
        let job = match claim {
            Claim::Leased { job, created } => {
                if !created {
                    tracing::info!(job_id = %job.job_id, from = %job.window_from, to = %job.window_to, "continuing the open backfill");
                }
                job
            }
            Claim::Busy { job, until } => {
                tracing::info!(job_id = %job.job_id, %until, "another invocation is working on the backfill");
                return Ok(ended(summary, BackfillOutcome::Busy, Some(&job), started));
            }
            Claim::Covered(job) => {
                tracing::info!(job_id = %job.job_id, "a finished backfill already covers this window");
                return Ok(ended(
                    summary,
                    BackfillOutcome::AlreadyDone,
                    Some(&job),
                    started,
                ));
            }
            Claim::NoCoins => {
                return Ok(ended(summary, BackfillOutcome::NoCoins, None, started));
            }
        };
        // Before a deadline, the last chunk's apply may wait this long for the lock and its
        // statement: the fetch leaves it that, as a run's does.
        let apply_bound = self.settings.lock_timeout + self.settings.statement_timeout;
        let limit = self
            .coingecko
            .time_limit(time_left.map(|left| left.saturating_sub(apply_bound)));
        let lease = limit.duration + self.settings.lock_timeout + LEASE_MARGIN;
        store.start_backfill_run(run_id, lease).await?;
        let result = self.work(store, &job, run_id, limit, &mut summary).await;
        let outcome = match result {
            Ok(outcome) => outcome,
            Err(error) => {
                // The lease goes back at once: the next invocation need not wait for it.
                let _ = store.release_backfill(job.job_id, run_id).await;
                if let Err(e) = store.fail_run(run_id, &error.to_string()).await {
                    tracing::warn!(%run_id, error = %e, "could not record the failure");
                }
                return Err(error);
            }
        };
        if outcome != BackfillOutcome::Finished {
            store.release_backfill(job.job_id, run_id).await?;
        }
        if let Some(progress) = store.backfill_progress().await? {
            summary.chunks_left = progress.chunks_left;
        }
        let summary = ended(summary, outcome, Some(&job), started);
        store.finish_backfill_run(run_id, &summary).await?;
        tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "backfill invocation finished");
        Ok(summary)
    }

    fn coins(&self, request: &BackfillRequest) -> BackfillCoins {
        match (&request.coins, self.coingecko.selection()) {
            (Some(ids), _) | (None, CoinSelection::Ids(ids)) => BackfillCoins::Ids(ids.clone()),
            (None, CoinSelection::Top(n)) => BackfillCoins::Tracked {
                vs_currency: self.coingecko.vs_currencies()[0].clone(),
                limit: *n as i64,
            },
        }
    }

    /// The chunks, one after the other, until none is left or a budget runs out.
    async fn work(
        &self,
        store: &mut Store,
        job: &BackfillJob,
        run_id: Uuid,
        limit: TimeLimit,
        summary: &mut BackfillSummary,
    ) -> Result<BackfillOutcome, BackfillError> {
        let mut session = self.coingecko.chart_session(limit);
        let budget = self.coingecko.monthly_call_budget();
        let mut spent = match budget {
            Some(_) => store.calls_this_month().await?,
            None => 0,
        };
        loop {
            let Some(chunk) = store.next_chunk(job.job_id).await? else {
                store.finish_backfill_if_done(job.job_id).await?;
                return Ok(BackfillOutcome::Finished);
            };
            if Instant::now() >= session.deadline() {
                return Ok(BackfillOutcome::OutOfTime);
            }
            if budget.is_some_and(|budget| spent >= budget) {
                return Ok(BackfillOutcome::OutOfMonthlyCalls);
            }
            let calls_before = session.calls();
            let fetched = self.fetch(&mut session, &chunk).await;
            let calls = (session.calls() - calls_before) as i32;
            spent += calls as u64;
            summary.calls += calls as u64;
            let chart = match fetched {
                Ok(chart) => chart,
                Err(error @ (FetchError::OutOfPlanRange { .. } | FetchError::Refused { .. })) => {
                    tracing::warn!(coin_id = %chunk.coin_id, error = %error, "the coin's backfill ends here");
                    let refused = store
                        .refuse_coin(job.job_id, &chunk, calls, &error.to_string())
                        .await?;
                    summary.chunks_refused += refused;
                    summary.refused.push(RefusedCoin {
                        coin_id: chunk.coin_id.clone(),
                        error: error.to_string(),
                    });
                    continue;
                }
                Err(FetchError::OutOfTime { .. }) => {
                    store.add_calls(job.job_id, chunk.position, calls).await?;
                    return Ok(BackfillOutcome::OutOfTime);
                }
                Err(error) => {
                    store.add_calls(job.job_id, chunk.position, calls).await?;
                    return Err(error.into());
                }
            };
            for skipped in &chart.skipped {
                tracing::warn!(coin_id = %chunk.coin_id, vs_currency = %chunk.vs_currency, at = ?skipped.at, reason = %skipped.reason, "chart point skipped");
            }
            let apply = store
                .begin_apply(self.settings.lock_timeout, self.settings.statement_timeout)
                .await?;
            apply.hold_run(run_id).await?;
            if !apply
                .chunk_is_ours(job.job_id, chunk.position, run_id)
                .await?
            {
                tracing::warn!(job_id = %job.job_id, "another invocation took the backfill over: stopping");
                return Ok(BackfillOutcome::Busy);
            }
            let bounds = apply
                .series_bounds(chunk.coin_key, &chunk.vs_currency, chunk.chunk.from)
                .await?;
            let fillable: Vec<&ChartPoint> = chart
                .points
                .iter()
                .filter(|p| {
                    chunk.chunk.contains(p.at) && bounds.fill_until.is_none_or(|u| p.at < u)
                })
                .collect();
            let (fillable, outside) = within_retention(&apply, &chunk, fillable).await?;
            summary.outside_retention += outside;
            let recordable = cdc::recordable_series(
                fillable.iter().map(|p| p.price),
                bounds.reference,
                self.settings.threshold_pct,
            );
            let recorded: Vec<&ChartPoint> = fillable
                .iter()
                .zip(recordable)
                .filter_map(|(p, record)| record.then_some(*p))
                .collect();
            let written = apply
                .write_chunk(
                    run_id,
                    job.job_id,
                    &chunk,
                    &recorded,
                    chart.points.len() as i32,
                    calls,
                    Utc::now() + LEASE,
                )
                .await?;
            apply.commit().await?;
            summary.chunks_done += 1;
            summary.points += chart.points.len() as u64;
            summary.history_inserted += written;
        }
    }

    async fn fetch(
        &self,
        session: &mut ChartSession,
        pending: &PendingChunk,
    ) -> Result<crate::market::Chart, FetchError> {
        let mut chunk = pending.chunk;
        if self.coingecko.plan() == ApiPlan::Demo {
            let earliest = Utc::now() - TimeDelta::days(365) + DEMO_HISTORY_MARGIN;
            chunk.from = chunk.from.max(earliest);
            // A backfill resumed long after it started: CoinGecko would refuse the whole chunk.
            if chunk.from >= chunk.to {
                return Err(FetchError::OutOfPlanRange {
                    call: Call::Chart {
                        coin_id: pending.coin_id.clone(),
                        vs_currency: pending.vs_currency.clone(),
                        from: pending.chunk.from,
                        to: pending.chunk.to,
                    },
                    message: format!("not asked: it ends before {earliest}, by now"),
                });
            }
        }
        self.coingecko
            .chart(session, &pending.coin_id, &pending.vs_currency, &chunk)
            .await
    }
}

/// The points of `points` in periods history may hold, and how many were left out (in periods the
/// owner retired, or no backfill may make), logged once for the chunk.
async fn within_retention<'p>(
    apply: &Apply<'_>,
    chunk: &PendingChunk,
    points: Vec<&'p ChartPoint>,
) -> Result<(Vec<&'p ChartPoint>, u64), StoreError> {
    let times: Vec<_> = points.iter().map(|p| Some(p.at)).collect();
    let reasons = apply.outside_retention(&times).await?;
    let first_reason = reasons.iter().flatten().next().cloned();
    let kept: Vec<&ChartPoint> = points
        .into_iter()
        .zip(&reasons)
        .filter_map(|(p, reason)| reason.is_none().then_some(p))
        .collect();
    let outside = (reasons.len() - kept.len()) as u64;
    if let Some(reason) = first_reason {
        tracing::warn!(coin_id = %chunk.coin_id, vs_currency = %chunk.vs_currency, outside, %reason, "chart points outside retention: left out");
    }
    Ok((kept, outside))
}
