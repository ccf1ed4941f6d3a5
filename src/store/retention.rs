//! Retention: which history rows have no period to go to, because the owner retired it
//! (detached, dropped, older than `price_points_partitioning.retention`) or no run may make it.
//! The runs and backfills leave those rows out and count them; `price_history_make_partitions`
//! refuses their times.

use chrono::{DateTime, Utc};

use super::apply::Apply;
use super::error::StoreError;
use super::params::typed;

impl Apply<'_> {
    /// For each of `times` (`None`: the database's now, as a row without a time is stamped), why
    /// no history row may be written at it, or `None` when one may. One statement.
    pub async fn outside_retention(
        &self,
        times: &[Option<DateTime<Utc>>],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if times.is_empty() {
            return Ok(Vec::new());
        }
        let row = self
            .bounded(
                "judging the rows' periods against retention",
                self.tx.query_typed_one(
                    "SELECT price_points_outside_retention($1::timestamptz[])",
                    &[typed(&times)],
                ),
            )
            .await?;
        Ok(row.get(0))
    }
}
