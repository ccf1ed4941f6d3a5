//! Backfilling history from `/coins/{id}/market_chart/range`. Pure: no I/O.
//!
//! [`plan`] splits a window into requests that CoinGecko answers at the wanted granularity
//! and within what the API plan serves.

mod plan;

pub use plan::{plan_chunks, window_for_days, Chunk, Granularity, PlanError, UnknownGranularity};
