//! The apply of one run: one transaction, under the run lock, in a fixed number of
//! set-based statements whatever the number of coins.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio::time::Instant;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::Json;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::error::{During, StoreError};
use super::params::typed;
use super::runs::{find_succeeded, FINISH_RUN};
use super::{Canceller, Store};
use crate::market::{jsonb_storable, Quote, RawPage};
use crate::summary::{RunState, Summary};

/// Raw pages per statement: about 2 MB of text for full pages.
const RAW_PAGES_PER_STATEMENT: usize = 10;
/// The advisory lock that serialises the apply of runs (also for operators who need to hold runs off).
pub const RUN_LOCK: i64 = 0x6367_6364_635f_726e;

impl Store {
    /// Opens the transaction that applies a run, once no other run is applying.
    /// Bounded on this side, with no session setting (which RDS Proxy would pin the session
    /// for): past `lock_timeout` of waiting for the run lock the run fails (as SQLSTATE 55P03),
    /// and a statement with no answer within `statement_timeout` is cancelled and fails it (57014),
    /// rather than the Lambda's own timeout killing it.
    pub async fn begin_apply(
        &mut self,
        lock_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Apply<'_>, StoreError> {
        let canceller = self.canceller();
        let tx = self
            .client
            .transaction()
            .await
            .during("starting the apply")?;
        let mut apply = Apply {
            tx,
            statement_timeout,
            canceller,
            locked_at: DateTime::<Utc>::MIN_UTC,
            feed: Mutex::new(None),
        };
        apply.locked_at = apply.take_run_lock(lock_timeout).await?;
        Ok(apply)
    }
}

/// What the write of one run changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub history_inserted: u64,
    pub upserted: u64,
}

/// The feed positions a transaction took, for the message that marks its end in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FeedTaken {
    run_id: Uuid,
    first: i64,
    last: i64,
}

/// A coin the store has keyed, as a run's apply needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCoin {
    pub coin_key: i32,
    /// The CDC reference in the run's currency: the price of the coin's last history row.
    pub recorded_price: Option<Decimal>,
    /// The `last_updated` of the latest price held in the run's currency: an observation older
    /// than it is out of order.
    pub latest_at: Option<DateTime<Utc>>,
}

/// The transaction of one run's apply: everything in it lands together or not at all.
pub struct Apply<'a> {
    pub(super) tx: Transaction<'a>,
    statement_timeout: Duration,
    canceller: Canceller,
    /// When the run lock was taken: a live run's rows are stamped with it, not with the start of
    /// the transaction, so that the run that applies later also reads later.
    locked_at: DateTime<Utc>,
    /// The feed positions taken so far (statements take `&self`, hence the lock).
    feed: Mutex<Option<FeedTaken>>,
}

impl Apply<'_> {
    /// The run lock, a transaction-level advisory lock (which RDS Proxy does not pin for), asked
    /// for again and again until `lock_timeout`: a blocking wait could only be bounded by a
    /// session setting. Returns the server's clock when it was taken.
    async fn take_run_lock(&self, lock_timeout: Duration) -> Result<DateTime<Utc>, StoreError> {
        const WAITING: &str = "waiting for an overlapping run to finish (DB_LOCK_TIMEOUT_SECS)";
        let give_up = Instant::now() + lock_timeout;
        let mut pause = Duration::from_millis(20);
        loop {
            let row = self
                .bounded(
                    WAITING,
                    self.tx.query_typed_one(
                        "SELECT pg_try_advisory_xact_lock($1), clock_timestamp()",
                        &[typed(&RUN_LOCK)],
                    ),
                )
                .await?;
            if row.get(0) {
                return Ok(row.get(1));
            }
            let left = give_up.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::new(
                    WAITING,
                    format!(
                        "another run held the run lock for all of {} s",
                        lock_timeout.as_secs_f64()
                    ),
                    Some(&SqlState::LOCK_NOT_AVAILABLE),
                    None,
                ));
            }
            tokio::time::sleep(pause.min(left)).await;
            pause = (pause * 2).min(Duration::from_millis(250));
        }
    }

    /// One statement of the apply, given `statement_timeout` to answer; past it, the statement
    /// is cancelled on the server and the apply fails.
    pub(super) async fn bounded<T>(
        &self,
        action: &'static str,
        statement: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, StoreError> {
        self.within(action, async { statement.await.during(action) })
            .await
    }

    /// `work` (statements of the apply), given `statement_timeout`.
    pub(super) async fn within<T>(
        &self,
        action: &'static str,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.statement_timeout, work).await {
            Ok(result) => result,
            Err(_) => {
                self.canceller.cancel().await;
                Err(StoreError::new(
                    action,
                    format!(
                        "no answer within DB_STATEMENT_TIMEOUT_SECS ({} s): the statement was cancelled and nothing of the apply lands",
                        self.statement_timeout.as_secs_f64()
                    ),
                    Some(&SqlState::QUERY_CANCELED),
                    None,
                ))
            }
        }
    }

    /// Locks the run's ledger row until the commit, so that nothing records the run abandoned
    /// while it applies, however long that takes. Fails when that already happened: a run that
    /// outlived its lease (a frozen process, a clock jump) applies nothing.
    pub async fn hold_run(&self, run_id: Uuid) -> Result<(), StoreError> {
        const HOLDING: &str = "holding the run's row in ingest_runs";
        let row = self
            .bounded(
                HOLDING,
                self.tx.query_typed_one(
                    "SELECT status, lease_until FROM ingest_runs WHERE run_id = $1 FOR UPDATE",
                    &[typed(&run_id)],
                ),
            )
            .await?;
        let status: RunState = row.try_get(0).during(HOLDING)?;
        if status != RunState::Running {
            let lease_until: Option<DateTime<Utc>> = row.get(1);
            let lease = lease_until.map_or("its lease".to_string(), |at| at.to_rfc3339());
            return Err(StoreError::new(
                HOLDING,
                format!("run {run_id} is recorded {} (it outlived {lease}): nothing of it is applied; give it more time (FETCH_BUDGET_SECS, the Lambda's timeout) if its process was slow rather than stopped", status.as_str()),
                None,
                None,
            ));
        }
        Ok(())
    }

    /// Checked again under the lock: an overlapping run with the same trigger may have just finished.
    pub async fn succeeded_summary(&self, trigger_id: &str) -> Result<Option<Summary>, StoreError> {
        self.within(
            "looking up the trigger id",
            find_succeeded(&self.tx, trigger_id),
        )
        .await
    }

    /// The coins of `coin_ids` already keyed, with the price of their last history row in
    /// `vs_currency` (none when never recorded in it) and the time of their latest price there;
    /// coins never seen are absent.
    pub async fn held_coins(
        &self,
        vs_currency: &str,
        coin_ids: &[&str],
    ) -> Result<HashMap<String, HeldCoin>, StoreError> {
        let rows = self
            .bounded(
                "reading the coins' keys and last recorded prices",
                self.tx.query_typed(
                    "SELECT c.coin_id, c.coin_key, q.recorded_price, q.source_updated_at
                 FROM coins c LEFT JOIN quotes q ON q.coin_key = c.coin_key AND q.vs_currency = $1
                 WHERE c.coin_id = ANY($2)",
                    &[typed(&vs_currency), typed(&coin_ids)],
                ),
            )
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let held = HeldCoin {
                    coin_key: r.get(1),
                    recorded_price: r.get(2),
                    latest_at: r.get(3),
                };
                (r.get(0), held)
            })
            .collect())
    }

    /// The newest `source_updated_at` of the latest prices in `vs_currency`.
    pub async fn latest_price_time(
        &self,
        vs_currency: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = self
            .bounded(
                "reading the newest price time",
                self.tx.query_typed_one(
                    "SELECT max(source_updated_at) FROM quotes WHERE vs_currency = $1",
                    &[typed(&vs_currency)],
                ),
            )
            .await?;
        Ok(row.get(0))
    }

    /// Keys new coins, appends history for the quotes marked recordable and brings the latest
    /// prices to the quotes, rewriting only rows whose values changed, and puts the history rows
    /// on the feed. One statement, whatever the count. `held`: each quote's coin from
    /// [`Apply::held_coins`], none for a coin never seen. `as_of`: when the quotes were seen, for
    /// a recorded answer; a live run's is when it took the run lock.
    pub async fn write_prices(
        &self,
        run_id: Uuid,
        vs_currency: &str,
        quotes: &[&Quote],
        held: &[Option<HeldCoin>],
        recordable: &[bool],
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Written, StoreError> {
        let as_of = as_of.unwrap_or(self.locked_at);
        let keys: Vec<Option<i32>> = held.iter().map(|h| h.map(|h| h.coin_key)).collect();
        let references: Vec<Option<Decimal>> = held
            .iter()
            .map(|h| h.and_then(|h| h.recorded_price))
            .collect();
        let column =
            |f: fn(&Quote) -> Option<Decimal>| quotes.iter().map(|q| f(q)).collect::<Vec<_>>();
        let ids: Vec<&str> = quotes.iter().map(|q| q.coin_id.as_str()).collect();
        let symbols: Vec<Option<&str>> = quotes.iter().map(|q| q.symbol.as_deref()).collect();
        let names: Vec<Option<&str>> = quotes.iter().map(|q| q.name.as_deref()).collect();
        let images: Vec<Option<&str>> = quotes.iter().map(|q| q.image.as_deref()).collect();
        let prices: Vec<Decimal> = quotes.iter().map(|q| q.price).collect();
        let ranks: Vec<Option<i32>> = quotes.iter().map(|q| q.market_cap_rank).collect();
        let updated: Vec<_> = quotes.iter().map(|q| q.source_updated_at).collect();
        let recorded_times: Vec<_> = updated
            .iter()
            .zip(recordable)
            .filter_map(|(at, &record)| record.then_some(*at))
            .collect();
        // History rows need their period's partition (the function also makes the next period's
        // ahead, off the critical path of its first run).
        self.bounded(
            "making the partitions of price_history",
            self.tx.execute_typed(
                "SELECT price_history_make_partitions($1::timestamptz[])",
                &[typed(&recorded_times)],
            ),
        )
        .await?;
        let row = self
            .bounded(
                "writing coins, quotes and price_points",
                self.tx.query_typed_one(
                    WRITE_PRICES,
                    &[
                        typed(&run_id),
                        typed(&vs_currency),
                        typed(&ids),
                        typed(&symbols),
                        typed(&names),
                        typed(&images),
                        typed(&prices),
                        typed(&column(|q| q.market_cap)),
                        typed(&ranks),
                        typed(&column(|q| q.total_volume)),
                        typed(&column(|q| q.high_24h)),
                        typed(&column(|q| q.low_24h)),
                        typed(&column(|q| q.price_change_24h)),
                        typed(&column(|q| q.price_change_percentage_24h)),
                        typed(&column(|q| q.circulating_supply)),
                        typed(&column(|q| q.total_supply)),
                        typed(&column(|q| q.max_supply)),
                        typed(&updated),
                        typed(&recordable),
                        typed(&as_of),
                        typed(&keys),
                        typed(&references),
                    ],
                ),
            )
            .await?;
        let written = Written {
            history_inserted: row.get::<_, i64>(0) as u64,
            upserted: row.get::<_, i64>(1) as u64,
        };
        self.took_positions(run_id, written.history_inserted, row.get(2));
        Ok(written)
    }

    /// Notes the `count` positions up to `last` that a statement took.
    pub(super) fn took_positions(&self, run_id: Uuid, count: u64, last: Option<i64>) {
        let Some(last) = last.filter(|_| count > 0) else {
            return;
        };
        let first = last - count as i64 + 1;
        let mut feed = self
            .feed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        *feed = Some(match *feed {
            Some(taken) => FeedTaken { last, ..taken },
            None => FeedTaken {
                run_id,
                first,
                last,
            },
        });
    }

    /// Ends the transaction's changes in the log with a transactional logical decoding message
    /// (prefix `coingecko_cdc`), so that a log-based consumer can tell it has a whole run: decoded
    /// in the transaction, just before its commit, and never for a rollback. None for a
    /// transaction that wrote no history.
    async fn mark_end_of_changes(&self) -> Result<(), StoreError> {
        let taken = *self
            .feed
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some(FeedTaken {
            run_id,
            first,
            last,
        }) = taken
        else {
            return Ok(());
        };
        let content = serde_json::json!({
            "run_id": run_id,
            "first_seq": first,
            "last_seq": last,
            "changes": last - first + 1,
        });
        self.bounded(
            "marking the end of the run's changes in the log",
            self.tx.execute_typed(
                "SELECT pg_logical_emit_message(true, 'coingecko_cdc', $1::text)",
                &[typed(&content.to_string())],
            ),
        )
        .await?;
        Ok(())
    }

    /// Marks the coins of `coin_ids` tracked and every other coin not, rewriting only the coins
    /// whose mark changes: the set the runs track is the last run's.
    pub async fn track_coins(&self, coin_ids: &[&str]) -> Result<u64, StoreError> {
        self.bounded(
            "marking the tracked coins",
            self.tx.execute_typed(
                "UPDATE coins c SET tracked = s.tracked
                 FROM (SELECT c2.coin_key, i.id IS NOT NULL AS tracked
                       FROM coins c2 LEFT JOIN (SELECT DISTINCT id FROM unnest($1::text[]) AS id) i
                           ON i.id = c2.coin_id) s
                 WHERE c.coin_key = s.coin_key AND c.tracked <> s.tracked",
                &[typed(&coin_ids)],
            ),
        )
        .await
    }

    /// Stores the pages a batch at a time: one statement per batch keeps the statement count
    /// independent of the coins while bounding the memory of the encoded batch.
    pub async fn store_raw_pages(&self, run_id: Uuid, pages: &[RawPage]) -> Result<(), StoreError> {
        for batch in pages.chunks(RAW_PAGES_PER_STATEMENT) {
            let endpoints: Vec<&str> = batch.iter().map(|p| p.endpoint).collect();
            let numbers: Vec<i32> = batch.iter().map(|p| p.number as i32).collect();
            let fetched_at: Vec<_> = batch.iter().map(|p| p.fetched_at).collect();
            let bodies: Vec<Cow<str>> = batch.iter().map(|p| jsonb_storable(&p.body)).collect();
            self.bounded(
                "storing the raw pages",
                self.tx.execute_typed(
                    "INSERT INTO raw_pages (run_id, endpoint, page, fetched_at, payload)
                     SELECT $1, endpoint, page, fetched_at, body
                     FROM unnest($2::text[], $3::int[], $4::timestamptz[], $5::text[])
                         AS p(endpoint, page, fetched_at, body)",
                    &[
                        typed(&run_id),
                        typed(&endpoints),
                        typed(&numbers),
                        typed(&fetched_at),
                        typed(&bodies),
                    ],
                ),
            )
            .await?;
        }
        Ok(())
    }

    /// Deletes the raw pages fetched more than `retention_days` before `now`, the run's own
    /// clock (as its pages are stamped); returns how many went.
    pub async fn prune_raw_pages(
        &self,
        retention_days: u32,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.bounded(
            "pruning old raw pages",
            self.tx.execute_typed(
                "DELETE FROM raw_pages WHERE fetched_at < $2 - make_interval(days => $1)",
                &[typed(&(retention_days as i32)), typed(&now)],
            ),
        )
        .await
    }

    /// Commits what was written: a backfill's chunk.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.mark_end_of_changes().await?;
        self.tx.commit().await.during("committing the chunk")
    }

    /// Records the run's outcome and commits everything the run wrote.
    pub async fn finish(self, run_id: Uuid, summary: &Summary) -> Result<(), StoreError> {
        self.bounded(
            "recording the run's summary",
            self.tx.execute_typed(
                FINISH_RUN,
                &[
                    typed(&run_id),
                    typed(&summary.status.as_str()),
                    typed(&Json(summary)),
                ],
            ),
        )
        .await?;
        self.mark_end_of_changes().await?;
        self.tx.commit().await.during("committing the run")
    }
}

/// `history` appends the recordable quotes (a repeated `source_updated_at` adds nothing), and
/// `feed` puts those written on the feed; `upserted` moves the CDC reference only for coins whose history row was really written.
const WRITE_PRICES: &str = include_str!("write_prices.sql");
