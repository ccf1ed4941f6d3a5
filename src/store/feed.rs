//! The change feed as readers see it: the changes after a position (`changes_since`), and the
//! events' outbox cursor.

use super::apply::Apply;
use super::error::{During, StoreError};
use super::params::typed;
use super::Store;
use crate::feed::{Change, Source};

impl Apply<'_> {
    /// Starts the events' outbox at this run's changes when no run has published yet, under the
    /// run lock before the run takes positions: turning events on publishes from then on, not
    /// the history held.
    pub async fn start_outbox(&self) -> Result<(), StoreError> {
        self.bounded(
            "starting the events' outbox (price_feed_published)",
            self.tx.execute_typed(
                "UPDATE price_feed_published SET last_seq = (SELECT last_seq FROM price_feed_counter)
                 WHERE last_seq IS NULL",
                &[],
            ),
        )
        .await?;
        Ok(())
    }
}

impl Store {
    /// At most `limit` changes after position `after`, in order. One index range, however long
    /// the history.
    pub async fn changes_after(&self, after: i64, limit: u32) -> Result<Vec<Change>, StoreError> {
        const READING: &str = "reading the change feed (changes_since)";
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = self
            .client
            .query_typed(
                "SELECT seq, coin_id, symbol, vs_currency, price, previous_price, pct_change::float8,
                        source_updated_at, recorded_at, source, granularity, run_id
                 FROM changes_since($1, $2)",
                &[typed(&after), typed(&limit)],
            )
            .await
            .during(READING)?;
        rows.iter()
            .map(|row| {
                let source: &str = row.get(9);
                Ok(Change {
                    seq: row.get(0),
                    coin_id: row.get(1),
                    symbol: row.get(2),
                    vs_currency: row.get(3),
                    price: row.try_get(4).during(READING)?,
                    previous_price: row.try_get(5).during(READING)?,
                    pct_change: row.get(6),
                    source_updated_at: row.get(7),
                    recorded_at: row.get(8),
                    source: if source == "backfill" {
                        Source::Backfill
                    } else {
                        Source::Live
                    },
                    granularity: row.get(10),
                    run_id: row.get(11),
                })
            })
            .collect()
    }

    /// The last position put on the bus (`None`: events never started).
    pub async fn published_up_to(&self) -> Result<Option<i64>, StoreError> {
        let row = self
            .client
            .query_typed_one("SELECT last_seq FROM price_feed_published", &[])
            .await
            .during("reading the events' outbox cursor (price_feed_published)")?;
        Ok(row.get(0))
    }

    /// Moves the outbox cursor to `seq`, never back (an overlapping publisher may be ahead).
    pub async fn published_through(&self, seq: i64) -> Result<(), StoreError> {
        self.client
            .execute_typed(
                "UPDATE price_feed_published SET last_seq = greatest(last_seq, $1)",
                &[typed(&seq)],
            )
            .await
            .during("moving the events' outbox cursor (price_feed_published)")?;
        Ok(())
    }

    /// The changes after the outbox cursor that are to be published (live ones, or every one
    /// with `include_backfill`).
    pub async fn events_backlog(&self, include_backfill: bool) -> Result<u64, StoreError> {
        let row = self
            .client
            .query_typed_one(
                "SELECT count(*) FROM price_feed
                 WHERE seq > (SELECT last_seq FROM price_feed_published)
                   AND ($1 OR granularity IS NULL)",
                &[typed(&include_backfill)],
            )
            .await
            .during("counting the events' backlog")?;
        Ok(row.get::<_, i64>(0) as u64)
    }
}
