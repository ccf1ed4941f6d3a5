//! The apply of one run: one transaction, under the run lock, in a fixed number of
//! set-based statements whatever the number of coins.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use tokio_postgres::types::Json;
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::error::{During, StoreError};
use super::runs::{find_succeeded, FINISH_RUN};
use super::Store;
use crate::market::{jsonb_storable, Quote, RawPage};
use crate::summary::Summary;

/// Raw pages per statement: about 2 MB of text for full pages.
const RAW_PAGES_PER_STATEMENT: usize = 10;
/// The advisory lock that serialises the apply of runs (also for operators who need to hold runs off).
pub const RUN_LOCK: i64 = 0x6367_6364_635f_726e;

impl Store {
    /// Opens the transaction that applies a run, once no other run is applying.
    /// Bounded: past `lock_timeout` the run fails (SQLSTATE 55P03) rather than wait until the
    /// Lambda's own timeout kills it; a statement past `statement_timeout` fails it too (57014).
    pub async fn begin_apply(
        &mut self,
        lock_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Apply<'_>, StoreError> {
        let tx = self
            .client
            .transaction()
            .await
            .during("starting the apply")?;
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        // Without JIT: the planner prices the write (joins of its CTEs) far above what it costs,
        // and at 17,500 coins spent about 1 s compiling a statement that runs in 0.3 s.
        tx.execute(
            "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true),
                    set_config('jit', 'off', true)",
            &[&millis(lock_timeout), &millis(statement_timeout)],
        )
        .await
        .during("setting the apply's time limits")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RUN_LOCK])
            .await
            .during("waiting for an overlapping run to finish (DB_LOCK_TIMEOUT_SECS)")?;
        Ok(Apply { tx })
    }
}

/// What the write of one run changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub history_inserted: u64,
    pub upserted: u64,
}

/// A coin the store has keyed, as a run's apply needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldCoin {
    pub coin_key: i32,
    /// The CDC reference in the run's currency: the price of the coin's last history row.
    pub recorded_price: Option<Decimal>,
}

/// The transaction of one run's apply: everything in it lands together or not at all.
pub struct Apply<'a> {
    pub(super) tx: Transaction<'a>,
}

impl Apply<'_> {
    /// Checked again under the lock: an overlapping run with the same trigger may have just finished.
    pub async fn succeeded_summary(&self, trigger_id: &str) -> Result<Option<Summary>, StoreError> {
        find_succeeded(&self.tx, trigger_id).await
    }

    /// The coins of `coin_ids` already keyed, with the price of their last history row in
    /// `vs_currency` (none when never recorded in it); coins never seen are absent.
    pub async fn held_coins(
        &self,
        vs_currency: &str,
        coin_ids: &[&str],
    ) -> Result<HashMap<String, HeldCoin>, StoreError> {
        let rows = self
            .tx
            .query(
                "SELECT c.coin_id, c.coin_key, q.recorded_price
                 FROM coins c LEFT JOIN quotes q ON q.coin_key = c.coin_key AND q.vs_currency = $1
                 WHERE c.coin_id = ANY($2)",
                &[&vs_currency, &coin_ids],
            )
            .await
            .during("reading the coins' keys and last recorded prices")?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let held = HeldCoin {
                    coin_key: r.get(1),
                    recorded_price: r.get(2),
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
            .tx
            .query_one(
                "SELECT max(source_updated_at) FROM quotes WHERE vs_currency = $1",
                &[&vs_currency],
            )
            .await
            .during("reading the newest price time")?;
        Ok(row.get(0))
    }

    /// Keys new coins, appends history for the quotes marked recordable and brings the latest
    /// prices to the quotes, rewriting only rows whose values changed. One statement, whatever
    /// the count. `keys`: each quote's coin key from [`Apply::held_coins`], none for a coin never
    /// seen. `as_of`: when the quotes were seen, for a recorded answer; a live run's is now.
    pub async fn write_prices(
        &self,
        run_id: Uuid,
        vs_currency: &str,
        quotes: &[&Quote],
        keys: &[Option<i32>],
        recordable: &[bool],
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Written, StoreError> {
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
        // ahead, off the critical path of its first run). Rows without a time get `as_of`.
        self.tx
            .execute(
                "SELECT price_history_make_partitions($1::timestamptz[] || coalesce($2, now()))",
                &[&recorded_times, &as_of],
            )
            .await
            .during("making the partitions of price_history")?;
        let row = self
            .tx
            .query_one(
                WRITE_PRICES,
                &[
                    &run_id,
                    &vs_currency,
                    &ids,
                    &symbols,
                    &names,
                    &images,
                    &prices,
                    &column(|q| q.market_cap),
                    &ranks,
                    &column(|q| q.total_volume),
                    &column(|q| q.high_24h),
                    &column(|q| q.low_24h),
                    &column(|q| q.price_change_24h),
                    &column(|q| q.price_change_percentage_24h),
                    &column(|q| q.circulating_supply),
                    &column(|q| q.total_supply),
                    &column(|q| q.max_supply),
                    &updated,
                    &recordable,
                    &as_of,
                    &keys,
                ],
            )
            .await
            .during("writing coins, quotes and price_points")?;
        Ok(Written {
            history_inserted: row.get::<_, i64>(0) as u64,
            upserted: row.get::<_, i64>(1) as u64,
        })
    }

    /// Stores the pages a batch at a time: one statement per batch keeps the statement count
    /// independent of the coins while bounding the memory of the encoded batch.
    pub async fn store_raw_pages(&self, run_id: Uuid, pages: &[RawPage]) -> Result<(), StoreError> {
        for batch in pages.chunks(RAW_PAGES_PER_STATEMENT) {
            let endpoints: Vec<&str> = batch.iter().map(|p| p.endpoint).collect();
            let numbers: Vec<i32> = batch.iter().map(|p| p.number as i32).collect();
            let fetched_at: Vec<_> = batch.iter().map(|p| p.fetched_at).collect();
            let bodies: Vec<Cow<str>> = batch.iter().map(|p| jsonb_storable(&p.body)).collect();
            self.tx
                .execute(
                    "INSERT INTO raw_pages (run_id, endpoint, page, fetched_at, payload)
                     SELECT $1, endpoint, page, fetched_at, body
                     FROM unnest($2::text[], $3::int[], $4::timestamptz[], $5::text[])
                         AS p(endpoint, page, fetched_at, body)",
                    &[&run_id, &endpoints, &numbers, &fetched_at, &bodies],
                )
                .await
                .during("storing the raw pages")?;
        }
        Ok(())
    }

    /// Deletes raw pages older than the retention; returns how many went.
    pub async fn prune_raw_pages(&self, retention_days: u32) -> Result<u64, StoreError> {
        self.tx
            .execute(
                "DELETE FROM raw_pages WHERE fetched_at < now() - make_interval(days => $1)",
                &[&(retention_days as i32)],
            )
            .await
            .during("pruning old raw pages")
    }

    /// Commits what was written: a backfill's chunk.
    pub async fn commit(self) -> Result<(), StoreError> {
        self.tx.commit().await.during("committing the chunk")
    }

    /// Records the run's outcome and commits everything the run wrote.
    pub async fn finish(self, run_id: Uuid, summary: &Summary) -> Result<(), StoreError> {
        self.tx
            .execute(
                FINISH_RUN,
                &[&run_id, &summary.status.as_str(), &Json(summary)],
            )
            .await
            .during("recording the run's summary")?;
        self.tx.commit().await.during("committing the run")
    }
}

/// `history` appends the recordable quotes (a repeated `source_updated_at` adds nothing);
/// `upserted` moves the CDC reference only for coins whose history row was really written.
const WRITE_PRICES: &str = include_str!("write_prices.sql");
