//! coingecko-cdc: CoinGecko market data into PostgreSQL with exact, idempotent
//! price-based change data capture.
//!
//! The pure core ([`market`], [`cdc`], [`summary`], [`trigger`]) does no I/O; the edges
//! ([`coingecko`], [`store`], [`cli`]) do, and [`ingest`] ties one run together.

pub mod cdc;
pub mod cli;
pub mod coingecko;
pub mod config;
pub mod ingest;
pub mod market;
pub mod store;
pub mod summary;
pub mod trigger;
