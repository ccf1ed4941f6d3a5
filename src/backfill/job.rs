//! One backfill invocation: lease the open job, or start one for the coins and currencies that
//! earlier backfills do not cover, then fetch and apply its chunks in order until none is left or
//! the time or the monthly calls run out. Each chunk lands in its own transaction, so an
//! invocation cut off anywhere leaves whole chunks, and the next continues.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use super::plan::{plan_chunks, window_for_days, BackfillRequest, PlanError, Window, DEMO_HISTORY};
use crate::cdc;
use crate::coingecko::{Call, ChartSession, CoinGeckoClient, FetchError, TimeLimit};
use crate::config::{ApiPlan, CoinSelection, IngestConfig};
use crate::market::ChartPoint;
use crate::store::{
    Apply, BackfillCoins, BackfillJob, BackfillWindow, Claim, NewBackfill, PendingChunk, RunKind,
    Store, StoreError, LEASE_MARGIN,
};
use crate::summary::{BackfillOutcome, BackfillSummary, RefusedCoin};
use rust_decimal::Decimal;

/// The Demo plan serves the past 365 days, counted when a request arrives: a window reaching
/// back to the limit starts this much inside it, so that its first requests, minutes later, can
/// still ask for all of it.
const DEMO_WINDOW_MARGIN: TimeDelta = TimeDelta::minutes(5);
/// A request of a chunk planned that long ago that it reaches past the limit by now starts this
/// much inside it (what lies before is not covered).
const DEMO_REQUEST_MARGIN: TimeDelta = TimeDelta::minutes(1);

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

/// The time bounds of one invocation, worked out before it leases anything (saturating: no
/// setting can make them overflow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    /// The fetches end by then: `FETCH_BUDGET_SECS`, or the Lambda's time left less the apply.
    limit: TimeLimit,
    /// The ledger row's lease, as a run's: the limit, the wait for the run lock, a margin.
    run_lease: Duration,
    /// The job's lease: by then the invocation has ended, its last apply included (the limit,
    /// `DB_LOCK_TIMEOUT_SECS`, `DB_STATEMENT_TIMEOUT_SECS`, a margin). A process that dies holding
    /// the job is taken over once it has passed.
    job_lease: TimeDelta,
}

impl Bounds {
    fn new(
        coingecko: &CoinGeckoClient,
        settings: &IngestConfig,
        time_left: Option<Duration>,
    ) -> Self {
        let apply = settings
            .lock_timeout
            .saturating_add(settings.statement_timeout);
        let limit = coingecko.time_limit(time_left.map(|left| left.saturating_sub(apply)));
        let run_lease = limit
            .duration
            .saturating_add(settings.lock_timeout)
            .saturating_add(LEASE_MARGIN);
        let job_lease = limit
            .duration
            .saturating_add(apply)
            .saturating_add(LEASE_MARGIN);
        Self {
            limit,
            run_lease,
            job_lease: TimeDelta::from_std(job_lease).unwrap_or(TimeDelta::MAX),
        }
    }
}

/// The coins a backfill without coins asks for: `COIN_IDS`, else the `TOP_N` the live runs track.
pub fn default_coins(coingecko: &CoinGeckoClient) -> BackfillCoins {
    match coingecko.selection() {
        CoinSelection::Ids(ids) => BackfillCoins::Ids(ids.clone()),
        CoinSelection::Top(n) => BackfillCoins::Tracked {
            vs_currency: coingecko.vs_currencies()[0].clone(),
            limit: i64::try_from(*n).unwrap_or(i64::MAX),
        },
    }
}

/// The summary's description of the job worked on, or of the window asked for.
fn describe(summary: &mut BackfillSummary, job_id: Option<Uuid>, window: &BackfillWindow) {
    summary.job_id = job_id;
    summary.window_from = Some(window.from);
    summary.window_to = Some(window.to);
    summary.granularity = Some(window.granularity.as_str().to_string());
}

fn job_window(job: &BackfillJob) -> BackfillWindow {
    BackfillWindow {
        from: job.window_from,
        to: job.window_to,
        ends_now: false,
        granularity: job.granularity,
    }
}

impl Backfill<'_> {
    /// One invocation, within `time_left` (the Lambda's) or `FETCH_BUDGET_SECS`. Everything that
    /// can fail without I/O (the plan, the bounds) is done before the job is leased.
    pub async fn run(
        &self,
        store: &mut Store,
        request: &BackfillRequest,
        time_left: Option<Duration>,
    ) -> Result<BackfillSummary, BackfillError> {
        let started = Instant::now();
        let run_id = Uuid::now_v7();
        let now = Utc::now();
        let new = self.plan(request, now)?;
        let bounds = Bounds::new(self.coingecko, self.settings, time_left);
        let lease_until = now
            .checked_add_signed(bounds.job_lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut session = self.coingecko.chart_session(bounds.limit);
        let mut summary = BackfillSummary::new(run_id);
        store
            .start_run(run_id, RunKind::Backfill, None, bounds.run_lease)
            .await?;
        let outcome = self
            .claim_and_work(store, &new, run_id, lease_until, &mut session, &mut summary)
            .await;
        let outcome = match outcome {
            Ok(outcome) => outcome,
            Err(error) => {
                if let Err(e) = store
                    .fail_run(run_id, &error.to_string(), summary.calls)
                    .await
                {
                    tracing::warn!(%run_id, error = %e, "could not record the failure");
                }
                return Err(error);
            }
        };
        if summary.job_id.is_some() && outcome != BackfillOutcome::Busy {
            if let Some(progress) = store.backfill_progress().await? {
                summary.chunks_left = progress.chunks_left;
            }
        }
        summary.outcome = outcome;
        summary.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        store.finish_backfill_run(run_id, &summary).await?;
        tracing::info!(summary = %serde_json::to_string(&summary).unwrap_or_default(), "backfill invocation finished");
        Ok(summary)
    }

    /// The request's window, granularity, coins, currencies and chunks.
    fn plan(
        &self,
        request: &BackfillRequest,
        now: DateTime<Utc>,
    ) -> Result<NewBackfill, PlanError> {
        let (from, to) = match request.window() {
            Window::Days(days) => window_for_days(days, now),
            Window::Range { from, to } => (from, to.unwrap_or(now)),
        };
        let plan = self.coingecko.plan();
        // Within the Demo year (a window reaching further back is refused by the plan).
        let from = match plan {
            ApiPlan::Demo if from >= now - DEMO_HISTORY => {
                from.max(now - DEMO_HISTORY + DEMO_WINDOW_MARGIN)
            }
            _ => from,
        };
        let chunks = plan_chunks(from, to, plan, request.granularity(), now)?;
        Ok(NewBackfill {
            window: BackfillWindow {
                from,
                to: to.min(now),
                ends_now: to >= now,
                // One granularity a plan: the one its rows carry.
                granularity: chunks
                    .first()
                    .map_or(request.granularity(), |c| c.granularity),
            },
            coins: self.coins(request),
            chunks,
            currencies: self.coingecko.vs_currencies().to_vec(),
        })
    }

    /// Leases the open job, or starts one for what is not covered, and works it. An open job
    /// continued may be another request's: once it is finished, this request's coins and
    /// currencies get their own job, in the same invocation.
    async fn claim_and_work(
        &self,
        store: &mut Store,
        new: &NewBackfill,
        run_id: Uuid,
        lease_until: DateTime<Utc>,
        session: &mut ChartSession,
        summary: &mut BackfillSummary,
    ) -> Result<BackfillOutcome, BackfillError> {
        let mut finished_one = false;
        loop {
            let claim = store
                .begin_apply(self.settings.lock_timeout, self.settings.statement_timeout)
                .await?
                .claim_backfill(run_id, lease_until, new)
                .await?;
            let (job, created) = match claim {
                Claim::Leased { job, created } => (job, created),
                Claim::Busy { job, until } => {
                    tracing::info!(job_id = %job.job_id, %until, "another invocation is working on the backfill");
                    describe(summary, Some(job.job_id), &job_window(&job));
                    return Ok(BackfillOutcome::Busy);
                }
                Claim::Covered if finished_one => return Ok(BackfillOutcome::Finished),
                Claim::Covered => {
                    tracing::info!("earlier backfills already cover every coin and currency asked for over this window");
                    describe(summary, None, &new.window);
                    return Ok(BackfillOutcome::AlreadyDone);
                }
                Claim::NoCoins if finished_one => return Ok(BackfillOutcome::Finished),
                Claim::NoCoins => return Ok(BackfillOutcome::NoCoins),
            };
            if !created {
                tracing::info!(job_id = %job.job_id, from = %job.window_from, to = %job.window_to, "continuing the open backfill");
            }
            describe(summary, Some(job.job_id), &job_window(&job));
            let outcome = match self.work(store, &job, run_id, session, summary).await {
                Ok(outcome) => outcome,
                Err(error) => {
                    // The lease goes back at once: the next invocation need not wait for it.
                    let _ = store.release_backfill(job.job_id, run_id).await;
                    return Err(error);
                }
            };
            if outcome != BackfillOutcome::Finished {
                store.release_backfill(job.job_id, run_id).await?;
                return Ok(outcome);
            }
            if created || finished_one {
                return Ok(outcome);
            }
            finished_one = true;
        }
    }

    fn coins(&self, request: &BackfillRequest) -> BackfillCoins {
        match request.coins() {
            Some(ids) => BackfillCoins::Ids(ids.to_vec()),
            None => default_coins(self.coingecko),
        }
    }

    /// The chunks, one after the other, until none is left or a budget runs out.
    async fn work(
        &self,
        store: &mut Store,
        job: &BackfillJob,
        run_id: Uuid,
        session: &mut ChartSession,
        summary: &mut BackfillSummary,
    ) -> Result<BackfillOutcome, BackfillError> {
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
            let fetched = self.fetch(session, &chunk).await;
            let made = session.calls().saturating_sub(calls_before);
            let calls = i32::try_from(made).unwrap_or(i32::MAX);
            spent = spent.saturating_add(made);
            summary.calls += made;
            let (chart, asked) = match fetched {
                Ok(fetched) => fetched,
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
            let written = match self.apply(store, job, run_id, &asked, &chart, calls).await {
                Ok(Some((written, outside))) => {
                    summary.outside_retention += outside;
                    written
                }
                Ok(None) => {
                    tracing::warn!(job_id = %job.job_id, "another invocation took the backfill over: stopping");
                    store.add_calls(job.job_id, chunk.position, calls).await?;
                    return Ok(BackfillOutcome::Busy);
                }
                Err(error) => {
                    // The calls were made: they count against the monthly budget all the same.
                    if let Err(e) = store.add_calls(job.job_id, chunk.position, calls).await {
                        tracing::warn!(job_id = %job.job_id, error = %e, "could not count the chunk's calls");
                    }
                    return Err(error.into());
                }
            };
            summary.chunks_done += 1;
            summary.points += chart.points.len() as u64;
            summary.history_inserted += written;
        }
    }

    /// Writes a fetched chunk (`chunk` as it was asked) in its own transaction: the points inside
    /// the job's window and the chunk, before the coin's first live row and inside retention,
    /// walked by the rule among the rows held. Points an earlier chunk holds are walked too: one
    /// that moved from a row this chunk adds before it is recorded, so that the series has no
    /// unrecorded move where two backfills meet. Returns the rows written and the points left out
    /// for retention; `None`: the job is no longer ours.
    async fn apply(
        &self,
        store: &mut Store,
        job: &BackfillJob,
        run_id: Uuid,
        chunk: &PendingChunk,
        chart: &crate::market::Chart,
        calls: i32,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let apply = store
            .begin_apply(self.settings.lock_timeout, self.settings.statement_timeout)
            .await?;
        apply.hold_run(run_id).await?;
        if !apply
            .chunk_is_ours(job.job_id, chunk.position, run_id)
            .await?
        {
            return Ok(None);
        }
        // What this chunk may write: its span inside the job's window (it may be fetched wider).
        let span = (
            chunk.chunk.from.max(job.window_from),
            chunk.chunk.to.min(job.window_to),
        );
        let around = apply
            .series_around(chunk.coin_key, &chunk.vs_currency, span)
            .await?;
        let fillable: Vec<&ChartPoint> = chart
            .points
            .iter()
            .filter(|p| {
                chunk.chunk.contains(p.at)
                    && job.window_from <= p.at
                    && p.at < job.window_to
                    && around.first_live.is_none_or(|live| p.at < live)
            })
            .collect();
        let (fillable, outside) = within_retention(&apply, chunk, fillable).await?;
        let offered: Vec<_> = fillable.iter().map(|p| (p.at, p.price)).collect();
        let recordable = cdc::recordable_series(
            &offered,
            &around.held,
            around.reference,
            self.settings.threshold_pct,
        );
        let recorded: Vec<(&ChartPoint, Option<Decimal>)> = fillable
            .iter()
            .zip(recordable)
            .filter_map(|(p, recorded)| recorded.map(|r| (*p, r.previous)))
            .collect();
        let fetched = i32::try_from(chart.points.len()).unwrap_or(i32::MAX);
        let written = apply
            .write_chunk(run_id, job.job_id, chunk, &recorded, fetched, calls)
            .await?;
        if outside > 0 {
            apply
                .note_outside_retention(job.job_id, chunk.position, outside)
                .await?;
        }
        apply.commit().await?;
        Ok(Some((written, outside)))
    }

    /// Fetches a chunk; returns the answer and the chunk as asked. On the Demo plan, a chunk that
    /// starts beyond the plan's year by now (a backfill resumed later, or one started at the
    /// limit) is asked from the limit, over the same length (a shorter range could come at a
    /// finer granularity than planned), and covers only from there.
    async fn fetch(
        &self,
        session: &mut ChartSession,
        pending: &PendingChunk,
    ) -> Result<(crate::market::Chart, PendingChunk), FetchError> {
        let mut request = pending.chunk;
        let mut asked = pending.clone();
        let earliest = Utc::now() - DEMO_HISTORY + DEMO_REQUEST_MARGIN;
        if self.coingecko.plan() == ApiPlan::Demo && request.from < earliest {
            if earliest >= request.to {
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
            request.to += earliest - request.from;
            request.from = earliest;
            asked.chunk.from = earliest;
        }
        let chart = self
            .coingecko
            .chart(session, &pending.coin_id, &pending.vs_currency, &request)
            .await?;
        Ok((chart, asked))
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
