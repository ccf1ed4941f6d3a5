//! coingecko-cdc: CoinGecko market data into PostgreSQL with exact, idempotent
//! price-based change data capture.
//!
//! The pure core ([`market`], [`cdc`], [`backfill`], [`summary`], [`trigger`], [`status`],
//! [`replay`], [`feed`], [`series`], [`conninfo`], [`rds_token`], [`redact`], [`error_chain`]) does no I/O; the edges
//! ([`coingecko`], [`store`], [`database`], [`tls`], [`secrets`], [`eventbridge`], [`lambda`],
//! [`cli`], [`chart`], [`archive`]) do; [`ingest`] ties one run together, [`publish`] puts its
//! changes on EventBridge, and [`app`] holds what runs share;
//! [`config`] is read once at the start.

pub mod app;
pub mod archive;
pub mod backfill;
pub mod cdc;
pub mod chart;
pub mod cli;
pub mod coingecko;
pub mod config;
pub mod conninfo;
pub mod database;
pub mod error_chain;
pub mod eventbridge;
pub mod feed;
pub mod ingest;
pub mod lambda;
pub mod market;
pub mod publish;
pub mod rds_token;
pub mod redact;
pub mod replay;
pub mod secrets;
pub mod series;
pub mod status;
pub mod store;
pub mod summary;
pub mod tls;
pub mod trigger;
