//! One run: fetch every page first, then apply it all in one transaction.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use crate::cdc;
use crate::coingecko::{CoinGeckoClient, FetchError, FetchProgress, LogProgress};
use crate::config::{CoinGeckoConfig, IngestConfig};
use crate::market::{Market, Quote};
use crate::replay::RecordedAnswer;
use crate::store::{Apply, HeldCoin, RunKind, Store, StoreError, LEASE_MARGIN};
use crate::summary::{Counts, Requests, Summary, Timings};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A recorded answer older than prices the database already holds: applying it would move
    /// `current_prices` back in time.
    #[error("{file} was recorded at {recorded_at}, but the database already holds {vs_currency} prices up to {held}: a replay goes forward in time only; replay into a fresh database")]
    OutOfOrder {
        file: String,
        vs_currency: String,
        recorded_at: DateTime<Utc>,
        held: DateTime<Utc>,
    },
}

/// How a run that started (has its `running` row in `ingest_runs`) ended.
#[derive(Debug)]
pub enum Outcome {
    Finished(Summary),
    /// Nothing reached the price tables. The failure is not recorded yet: the caller does it, as
    /// it can reach the database again when the run's connection died with the run.
    Failed {
        run_id: Uuid,
        error: RunError,
    },
}

/// Where a run's coins come from.
#[derive(Clone, Copy)]
pub enum Source<'a> {
    /// CoinGecko, now; `time_left` bounds the fetch when the caller has a deadline (the Lambda's).
    Live { time_left: Option<Duration> },
    /// An answer recorded earlier, applied as of the time it was recorded.
    Recorded(&'a RecordedAnswer),
}

/// What every run needs and is built once: the HTTP client and the settings.
pub struct Ingest {
    coingecko: CoinGeckoClient,
    settings: IngestConfig,
    progress: Box<dyn FetchProgress>,
}

impl Ingest {
    pub fn new(coingecko: CoinGeckoConfig, settings: IngestConfig) -> Result<Self, FetchError> {
        Ok(Self {
            coingecko: CoinGeckoClient::new(coingecko)?,
            settings,
            progress: Box::new(LogProgress),
        })
    }

    /// Reports the fetch's pages to `progress` instead of the log.
    pub fn report_progress_to(&mut self, progress: Box<dyn FetchProgress>) {
        self.progress = progress;
    }

    pub fn coingecko(&self) -> &CoinGeckoClient {
        &self.coingecko
    }

    pub fn settings(&self) -> &IngestConfig {
        &self.settings
    }

    /// How many pages a run should fetch.
    pub fn expected_pages(&self) -> u64 {
        self.coingecko.expected_pages()
    }

    /// One run. A failed run writes nothing to the price tables; an `Err` is a run that could not
    /// start (its trigger not looked up, its row not written), so there is nothing to record.
    pub async fn run(
        &self,
        store: &mut Store,
        trigger_id: Option<String>,
        source: Source<'_>,
    ) -> Result<Outcome, RunError> {
        let started = Instant::now();
        if let Some(trigger) = &trigger_id {
            if let Some(done) = store.succeeded_summary(trigger).await? {
                tracing::info!(trigger_id = %trigger, run_id = %done.run_id, "this trigger already succeeded: nothing to do");
                return Ok(Outcome::Finished(done.into_duplicate()));
            }
        }
        let abandoned = store.abandon_dead_runs().await?.len() as u64;
        let run_id = Uuid::now_v7();
        let (trigger, lease) = (trigger_id.as_deref(), self.lease(source));
        let kind = match source {
            Source::Live { .. } => RunKind::Live,
            Source::Recorded(_) => RunKind::Replay,
        };
        store.start_run(run_id, kind, trigger, lease).await?;
        match self
            .fetch_and_apply(store, run_id, trigger_id, started, source)
            .await
            .map(|summary| Summary {
                abandoned_runs: abandoned,
                ..summary
            }) {
            Ok(summary) => {
                tracing::info!(
                    summary = %serde_json::to_string(&summary).unwrap_or_default(),
                    "run finished"
                );
                Ok(Outcome::Finished(summary))
            }
            Err(error) => {
                tracing::error!(%run_id, error = %error, "run failed");
                Ok(Outcome::Failed { run_id, error })
            }
        }
    }

    /// How long the run may stay `running` without applying: by then its fetch has stopped at
    /// its time limit and its wait for the run lock at `DB_LOCK_TIMEOUT_SECS`.
    fn lease(&self, source: Source<'_>) -> Duration {
        let fetch = match source {
            Source::Live { time_left } => {
                self.coingecko
                    .time_limit(self.fetch_time_left(time_left))
                    .duration
            }
            Source::Recorded(_) => Duration::ZERO,
        };
        fetch
            .saturating_add(self.settings.lock_timeout)
            .saturating_add(LEASE_MARGIN)
    }

    /// Before a deadline, the apply may wait for the lock and its statement: the fetch leaves it that.
    fn fetch_time_left(&self, time_left: Option<Duration>) -> Option<Duration> {
        let apply_bound = self
            .settings
            .lock_timeout
            .saturating_add(self.settings.statement_timeout);
        time_left.map(|left| left.saturating_sub(apply_bound))
    }

    async fn fetch_and_apply(
        &self,
        store: &mut Store,
        run_id: Uuid,
        trigger_id: Option<String>,
        started: Instant,
        source: Source<'_>,
    ) -> Result<Summary, RunError> {
        let fetched;
        // A live run's own clock, as its pages are stamped: raw pages older than the retention
        // by it are pruned. A replay's clock is in its file's past, and it prunes nothing.
        let mut raw_clock = None;
        let (markets, pages, recorded_at, fetch, calls) = match source {
            Source::Live { time_left } => {
                let time_left = self.fetch_time_left(time_left);
                raw_clock = Some(Utc::now());
                let fetch_started = Instant::now();
                fetched = self
                    .coingecko
                    .fetch(self.progress.as_ref(), time_left)
                    .await?;
                let markets: Vec<(&str, &Market)> = fetched
                    .markets
                    .iter()
                    .map(|m| (m.vs_currency.as_str(), &m.market))
                    .collect();
                let fetch = fetch_started.elapsed();
                (
                    markets,
                    fetched.pages.as_slice(),
                    None,
                    fetch,
                    fetched.calls,
                )
            }
            // A recorded answer is a `/coins/markets` answer in the first currency; the files are
            // the archive of the raw answers: no raw pages.
            Source::Recorded(answer) => (
                vec![(self.coingecko.vs_currencies()[0].as_str(), &answer.market)],
                &[][..],
                Some(answer.recorded_at),
                Duration::ZERO,
                0,
            ),
        };

        let apply_started = Instant::now();
        let apply = store
            .begin_apply(self.settings.lock_timeout, self.settings.statement_timeout)
            .await?;
        apply.hold_run(run_id).await?;
        if let Some(trigger) = &trigger_id {
            if let Some(done) = apply.succeeded_summary(trigger).await? {
                tracing::info!(trigger_id = %trigger, run_id = %done.run_id, "an overlapping run with this trigger succeeded first: nothing applied");
                let duplicate = done.into_duplicate();
                apply.finish(run_id, &duplicate).await?;
                return Ok(duplicate);
            }
        }
        if self.settings.publishes_events {
            apply.start_outbox().await?;
        }
        // The tracked set follows the newest answer, as the prices do: read before this run writes.
        let held_until = match markets.first() {
            Some(&(vs_currency, _)) => apply.latest_price_time(vs_currency).await?,
            None => None,
        };
        // A recorded answer is in the first currency only, whose newest price was just read.
        if let (Source::Recorded(answer), Some(held)) = (source, held_until) {
            if held > answer.recorded_at {
                return Err(RunError::OutOfOrder {
                    file: answer.file.clone(),
                    vs_currency: markets[0].0.to_string(),
                    recorded_at: answer.recorded_at,
                    held,
                });
            }
        }
        let mut counts = Vec::with_capacity(markets.len());
        for &(vs_currency, market) in &markets {
            log_problems(vs_currency, market);
            counts.push(
                self.write_currency(&apply, run_id, vs_currency, market, recorded_at)
                    .await?,
            );
        }
        // The further currencies price the first one's coins: its answer is the tracked set,
        // unless it is older than the prices held (a stale cache, an overlapping run that applied
        // after a newer one) or holds no usable coin, which change nothing, this either.
        if let Some(&(_, primary)) = markets.first() {
            let answer_time = primary.quotes().filter_map(|q| q.source_updated_at).max();
            if answer_time.is_some_and(|at| !cdc::is_out_of_order(at, held_until)) {
                let coin_ids: Vec<&str> = primary.coin_ids().collect();
                apply.track_coins(&coin_ids).await?;
            }
        }
        let apply_before_raw = apply_started.elapsed();
        let raw_started = Instant::now();
        // Pruned first, so that a run always keeps its own pages, even with a retention of 0 days.
        if let Some(now) = raw_clock {
            let pruned = apply
                .prune_raw_pages(self.settings.raw_retention_days, now)
                .await?;
            if pruned > 0 {
                tracing::info!(pruned, "old raw pages pruned");
            }
        }
        if self.settings.store_raw {
            apply.store_raw_pages(run_id, pages).await?;
        }
        let raw = raw_started.elapsed();

        let requests = Requests {
            pages: pages
                .iter()
                .filter(|p| p.endpoint == "coins/markets")
                .count() as u64,
            calls,
        };
        let mut timings = Timings {
            duration: started.elapsed(),
            fetch,
            apply: apply_before_raw,
            raw,
        };
        let summary = Summary::succeeded(run_id, trigger_id, counts, requests, timings);
        // The summary is stored in the transaction it describes, so the stored one cannot time
        // the commit; the one returned does, as part of the apply.
        let finish_started = Instant::now();
        apply.finish(run_id, &summary).await?;
        timings.apply += finish_started.elapsed();
        timings.duration = started.elapsed();
        Ok(summary.timed(timings))
    }

    /// One currency's CDC stream: the rule against each coin's reference in that currency, for
    /// the coins at least as new as what is held of them. A coin whose history row would fall
    /// outside retention is left out whole.
    async fn write_currency(
        &self,
        apply: &Apply<'_>,
        run_id: Uuid,
        vs_currency: &str,
        market: &Market,
        recorded_at: Option<DateTime<Utc>>,
    ) -> Result<Counts, RunError> {
        let coin_ids: Vec<&str> = market.quotes().map(|q| q.coin_id.as_str()).collect();
        let held = apply.held_coins(vs_currency, &coin_ids).await?;
        let (quotes, older): (Vec<&Quote>, Vec<&Quote>) = market.quotes().partition(|q| {
            let latest_at = held.get(&q.coin_id).and_then(|h| h.latest_at);
            !q.source_updated_at
                .is_some_and(|at| cdc::is_out_of_order(at, latest_at))
        });
        if !older.is_empty() {
            let first: Vec<&str> = older.iter().take(5).map(|q| q.coin_id.as_str()).collect();
            tracing::info!(
                vs_currency,
                out_of_order = older.len(),
                first = ?first,
                "coins older than the prices held of them: left as they are"
            );
        }
        let held: Vec<Option<&HeldCoin>> = quotes.iter().map(|q| held.get(&q.coin_id)).collect();
        let recordable: Vec<bool> = quotes
            .iter()
            .zip(&held)
            .map(|(q, h)| {
                let reference = h.and_then(|h| h.recorded_price);
                cdc::is_recordable(q.price, reference, self.settings.threshold_pct)
            })
            .collect();
        let outside =
            outside_retention(apply, vs_currency, &quotes, &recordable, recorded_at).await?;
        let kept: Vec<usize> = (0..quotes.len())
            .filter(|&i| outside[i].is_none())
            .collect();
        let quotes_kept: Vec<&Quote> = kept.iter().map(|&i| quotes[i]).collect();
        let held_kept: Vec<Option<HeldCoin>> = kept.iter().map(|&i| held[i].copied()).collect();
        let recordable: Vec<bool> = kept.iter().map(|&i| recordable[i]).collect();
        let written = apply
            .write_prices(
                run_id,
                vs_currency,
                &quotes_kept,
                &held_kept,
                &recordable,
                recorded_at,
            )
            .await?;
        Ok(Counts {
            vs_currency: vs_currency.to_string(),
            fetched: market.len() as u64,
            rejected: market.rejections().count() as u64,
            upserted: written.upserted,
            history_inserted: written.history_inserted,
            out_of_order: older.len() as u64,
            unrequested: market.unrequested() as u64,
            outside_retention: (quotes.len() - kept.len()) as u64,
        })
    }
}

/// For each quote, why its history row may not be written (the period it falls in is retired),
/// or `None`: only a recordable quote needs a row. Each one left out is logged with its reason.
async fn outside_retention(
    apply: &Apply<'_>,
    vs_currency: &str,
    quotes: &[&Quote],
    recordable: &[bool],
    recorded_at: Option<DateTime<Utc>>,
) -> Result<Vec<Option<String>>, StoreError> {
    // A row is stamped with the quote's time, else the run's (`write_prices`).
    let times: Vec<Option<DateTime<Utc>>> = quotes
        .iter()
        .zip(recordable)
        .filter(|(_, &record)| record)
        .map(|(q, _)| q.source_updated_at.or(recorded_at))
        .collect();
    let mut judged = apply.outside_retention(&times).await?.into_iter();
    let reasons: Vec<Option<String>> = recordable
        .iter()
        .map(|&record| {
            if record {
                judged.next().flatten()
            } else {
                None
            }
        })
        .collect();
    for (quote, reason) in quotes.iter().zip(&reasons) {
        if let Some(reason) = reason {
            tracing::warn!(vs_currency, coin_id = %quote.coin_id, at = ?quote.source_updated_at, %reason, "coin outside retention: left out");
        }
    }
    Ok(reasons)
}

fn log_problems(vs_currency: &str, market: &Market) {
    for rejection in market.rejections() {
        tracing::warn!(
            vs_currency,
            coin_id = rejection.coin_id.as_deref().unwrap_or("<none>"),
            position = rejection.position,
            reason = %rejection.reason,
            "coin rejected"
        );
    }
    for warning in market.warnings() {
        tracing::warn!(
            vs_currency,
            coin_id = %warning.coin_id,
            field = warning.field,
            problem = %warning.problem,
            "field stored as NULL"
        );
    }
    if market.repeated_ids() > 0 {
        tracing::info!(
            repeated = market.repeated_ids(),
            "coins seen more than once kept once, at their newest valid observation"
        );
    }
    if market.unrequested() > 0 {
        tracing::warn!(
            vs_currency,
            unrequested = market.unrequested(),
            "coins the answer carried that COIN_IDS did not ask for: left out"
        );
    }
}
