//! Backfilling history from `/coins/{id}/market_chart/range`.
//!
//! [`plan`] (pure) splits a window into requests that CoinGecko answers at the wanted granularity
//! and within what the API plan serves; [`job`] ties one invocation together, as `ingest` does a
//! run: the CoinGecko client, the store and the CDC rule.

mod job;
mod plan;

pub use job::{default_coins, Backfill, BackfillError};
pub use plan::{
    parse_instant, plan_chunks, window_for_days, BackfillRequest, Chunk, CoinsError, Granularity,
    PlanError, UnknownGranularity, Window,
};
