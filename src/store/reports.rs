//! What `status` and `chart` read: the coins held and their recorded prices over a window.

use chrono::{DateTime, Utc};

use super::error::{During, StoreError};
use super::params::typed;
use super::Store;
use crate::series::Series;

impl Store {
    /// Which of `coin_ids` have ever been ingested in `vs_currency`.
    pub async fn known_coins(
        &self,
        vs_currency: &str,
        coin_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client
            .query_typed(
                "SELECT coin_id FROM current_prices WHERE vs_currency = $1 AND coin_id = ANY($2)",
                &[typed(&vs_currency), typed(&coin_ids)],
            )
            .await
            .during("looking up the coins")?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    /// Each coin's price in effect when the window opens, its recorded changes inside the
    /// window, and its current price when that falls inside the window; in `coin_ids` order.
    pub async fn price_steps(
        &self,
        vs_currency: &str,
        coin_ids: &[String],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Series>, StoreError> {
        let rows = self
            .client
            .query_typed(
                PRICE_STEPS,
                &[
                    typed(&vs_currency),
                    typed(&coin_ids),
                    typed(&from),
                    typed(&to),
                ],
            )
            .await
            .during("reading price_history")?;
        let mut series: Vec<Series> = coin_ids
            .iter()
            .map(|id| Series {
                coin_id: id.clone(),
                points: Vec::new(),
            })
            .collect();
        for row in rows {
            let coin_id: String = row.get(0);
            if let Some(s) = series.iter_mut().find(|s| s.coin_id == coin_id) {
                s.points.push((row.get(1), row.get(2)));
            }
        }
        Ok(series)
    }
}

const PRICE_STEPS: &str = include_str!("price_steps.sql");
