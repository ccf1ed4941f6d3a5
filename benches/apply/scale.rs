//! History at scale, for `benches/apply.rs`: loading it, sizing it, timing analysts' queries on it,
//! and timing the V5 → V6 migration of it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use chrono::{DateTime, TimeZone, Utc};
use tokio_postgres::Client;

/// The currencies loaded history is spread over: several currencies' worth of rows per coin.
pub const CURRENCIES: [&str; 3] = ["usd", "eur", "btc"];
/// The loaded history ends here, just before the measured runs' answers, and spans a year back.
fn history_end() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, 15, 0, 0).unwrap()
}

/// Drops the (empty) partitions a fresh database has and makes `period` the length of the next ones.
pub async fn set_partition_period(db: &Client, period: &str) -> Result<()> {
    let partitions: Vec<String> = db
        .query(
            "SELECT inhrelid::regclass::text FROM pg_inherits WHERE inhparent = 'price_points'::regclass",
            &[],
        )
        .await?
        .into_iter()
        .map(|row| row.get(0))
        .collect();
    for partition in partitions {
        db.batch_execute(&format!("DROP TABLE {partition}")).await?;
    }
    db.execute(
        "UPDATE price_points_partitioning SET period = $1",
        &[&period],
    )
    .await?;
    Ok(())
}

/// Adds about `rows` rows to `price_points`: for every coin of `quotes` in each of `CURRENCIES`, the
/// same number of points evenly spaced over the year before `history_end()`, time after time as runs
/// append them, under one dummy run. Then vacuums, analyses and checkpoints, as a live database
/// would have been. Returns the rows added.
pub async fn load_history(db: &Client, rows: i64) -> Result<u64> {
    let run_id = uuid::Uuid::now_v7();
    db.execute(
        "INSERT INTO ingest_runs (run_id, status) VALUES ($1, 'succeeded')",
        &[&run_id],
    )
    .await?;
    let coins: i64 = db
        .query_one("SELECT count(DISTINCT coin_key) FROM quotes", &[])
        .await?
        .get(0);
    let (steps, every) = year_of_points(db, coins, rows).await?;
    let added = db
        .execute(
            "INSERT INTO price_points
                 (source_updated_at, recorded_at, run_id, coin_key, vs_currency, price, market_cap, total_volume)
             SELECT at, at, $1, q.coin_key, vs, 1 + (step * 7 % 100000) / 100.0, step * 1000.0, step::numeric
             FROM generate_series($2::bigint, 1, -1) AS step
                  CROSS JOIN (SELECT DISTINCT coin_key FROM quotes) q
                  CROSS JOIN unnest($3::text[]) AS vs,
                  LATERAL (SELECT $4::timestamptz - step * $5::text::interval AS at) t",
            &[&run_id, &steps, &CURRENCIES.as_slice(), &history_end(), &every],
        )
        .await
        .context("loading price_points")?;
    settle(db).await?;
    Ok(added)
}

/// How many points each coin gets in each of `CURRENCIES` for about `rows` rows, and the interval
/// between them (as text) over the year before `history_end()`; makes that year's partitions.
async fn year_of_points(db: &Client, coins: i64, rows: i64) -> Result<(i64, String)> {
    db.execute(
        "SELECT price_history_make_partitions(array(
             SELECT generate_series($1::timestamptz - interval '366 days', $1::timestamptz, interval '1 day')))",
        &[&history_end()],
    )
    .await
    .context("making a year of partitions")?;
    let steps = (rows / coins / CURRENCIES.len() as i64).max(1);
    Ok((steps, format!("{} seconds", 365 * 24 * 3600 / steps)))
}

/// VACUUM ANALYZE and a checkpoint: a live database is vacuumed, and a checkpoint in the middle of
/// a measurement would be timed with it.
pub async fn settle(db: &Client) -> Result<()> {
    db.batch_execute("VACUUM ANALYZE").await?;
    db.batch_execute("CHECKPOINT")
        .await
        .context("CHECKPOINT needs superuser or the pg_checkpoint role")
}

/// The bytes of a table and of its partitions: heap (with TOAST) and indexes.
#[derive(Debug, Clone, Copy)]
pub struct Size {
    pub rows: i64,
    pub heap: i64,
    pub indexes: i64,
}

impl Size {
    pub fn per_row(&self) -> f64 {
        (self.heap + self.indexes) as f64 / self.rows.max(1) as f64
    }
}

pub async fn size_of(db: &Client, table: &str) -> Result<Size> {
    let row = db
        .query_one(
            &format!(
                "SELECT (SELECT count(*) FROM {table}),
                        coalesce(sum(pg_table_size(relid)), 0)::bigint,
                        coalesce(sum(pg_indexes_size(relid)), 0)::bigint
                 FROM (SELECT relid FROM pg_partition_tree('{table}') UNION SELECT '{table}'::regclass) t"
            ),
            &[],
        )
        .await?;
    Ok(Size {
        rows: row.get(0),
        heap: row.get(1),
        indexes: row.get(2),
    })
}

/// Fills a database migrated to V5 with `coins` coins in each of `CURRENCIES` and about `rows`
/// history rows shaped as `load_history` shapes them, as V5's ingest wrote them.
pub async fn load_v5(db: &Client, coins: i64, rows: i64) -> Result<()> {
    let run_id = uuid::Uuid::now_v7();
    db.execute(
        "INSERT INTO ingest_runs (run_id, status) VALUES ($1, 'succeeded')",
        &[&run_id],
    )
    .await?;
    db.execute(
        "INSERT INTO current_prices
             (coin_id, vs_currency, symbol, name, price, market_cap, total_volume, source_updated_at,
              first_seen_at, last_changed_at, recorded_price, recorded_at, coin_key)
         SELECT id, vs, 'c' || n, 'Coin ' || n, n, n * 1e6, n * 1e3, $2::timestamptz, $2::timestamptz,
                $2::timestamptz, n, $2::timestamptz, coin_key(id)
         FROM generate_series(1, $1::bigint) AS n, unnest($3::text[]) AS vs,
              LATERAL (SELECT 'coin-number-' || n AS id) i",
        &[&coins, &history_end(), &CURRENCIES.as_slice()],
    )
    .await?;
    let (steps, every) = year_of_points(db, coins, rows).await?;
    db.execute(
        "INSERT INTO price_history
             (coin_id, vs_currency, price, market_cap, total_volume, source_updated_at, recorded_at, run_id)
         SELECT c.coin_id, c.vs_currency, 1 + (step * 7 % 100000) / 100.0, step * 1000.0, step::numeric, at, at, $1
         FROM generate_series($2::bigint, 1, -1) AS step CROSS JOIN current_prices c,
              LATERAL (SELECT $3::timestamptz - step * $4::text::interval AS at) t",
        &[&run_id, &steps, &history_end(), &every],
    )
    .await
    .context("loading V5's price_history")?;
    settle(db).await
}

/// The queries analysts run most, by natural names, on a coin of the loaded history.
pub const QUERIES: [(&str, &str); 3] = [
    (
        "one coin, 30 days",
        "SELECT source_updated_at, price FROM price_history
         WHERE coin_id = $1 AND vs_currency = 'usd'
           AND source_updated_at >= $2::timestamptz - interval '30 days'
         ORDER BY source_updated_at",
    ),
    (
        "one coin, a year",
        "SELECT source_updated_at, price FROM price_history
         WHERE coin_id = $1 AND vs_currency = 'usd'
           AND source_updated_at >= $2::timestamptz - interval '365 days'
         ORDER BY source_updated_at",
    ),
    (
        "latest prices, every coin",
        "SELECT coin_id, price, source_updated_at FROM latest_prices WHERE vs_currency = 'usd'",
    ),
];

/// One query's time, planning included, and the rows it returned. A query by coin takes the coin
/// as `$1` and the end of the history as `$2`.
pub async fn time_query(db: &Client, sql: &str, coin_id: &str) -> Result<(Duration, usize)> {
    let started = Instant::now();
    let rows = if sql.contains("$1") {
        db.query(sql, &[&coin_id, &history_end()]).await?
    } else {
        db.query(sql, &[]).await?
    };
    Ok((started.elapsed(), rows.len()))
}

/// Restarts PostgreSQL and empties the operating system's page cache, so that the next query reads
/// from disk. Needs root and a Debian cluster (`pg_ctlcluster`).
pub fn go_cold() -> Result<()> {
    let cluster = std::fs::read_dir("/etc/postgresql")
        .context("no /etc/postgresql: cold measurements need a Debian PostgreSQL")?
        .next()
        .context("no cluster in /etc/postgresql")??
        .file_name();
    let restarted = std::process::Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect"])
        .arg(&cluster)
        .args(["main", "restart", "-m", "fast"])
        .status()?;
    anyhow::ensure!(restarted.success(), "pg_ctlcluster restart failed");
    std::process::Command::new("sync").status()?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache needs root")
}
