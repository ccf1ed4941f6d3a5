//! The apply of a steady-state run, against the per-coin design it replaces and a bare insert.
//!
//! `cargo bench --bench apply` serves coins derived from the recorded answers
//! (`tests/fixtures/coingecko`) from a local CoinGecko stub, in pages of 250, and writes to fresh
//! databases `cdc_bench_<uuid>` on the local PostgreSQL (`DATABASE_URL` names another server).
//! For each size, run 1 loads every coin into a template database; each sample then starts from a
//! copy of it and measures run 2, in which one coin in ten moved +2% and every coin has a new
//! `last_updated`:
//! - ours: a real run, `Ingest::run`, timed by the phases of its summary (`fetch_ms`, `apply_ms`,
//!   `raw_ms`, `duration_ms`);
//! - baseline: the per-coin design (a prepared read, then an insert and an upsert per coin);
//! - floor: one bare INSERT of the same rows into an unindexed copy of `current_prices`;
//! - the real `coingecko-cdc run` process: its peak RSS, and that an identical re-run writes nothing.
//!
//! A proxy counts the statements the client sends, and tells the apply's from the raw pages' by
//! their text. Settings: `SIZES` (default `250,2500,17500`), `SAMPLES` (default 5; medians are
//! printed), `CDC_THRESHOLD_PCT` (default 0.5), `RAW_STORAGES` (default 0; 1 also compares ways of
//! storing the raw pages at every size), and for history at scale (`scale.rs`): `HISTORY_ROWS`
//! (default 0; otherwise, at the largest size, the apply with that many rows of history against
//! none, the size of that history and analysts' queries on it), `PERIODS` (default `week`; any of
//! `month,week,day`: the partition lengths to measure that with), `COLD` (default 0; 1 also times
//! the queries after restarting PostgreSQL and dropping the page cache: root and a Debian cluster),
//! `V5_ROWS` (default 0; otherwise that much history is loaded into V5's tables, sized, migrated to
//! V6 and sized again), and for the change feed (`feed.rs`): `FEED` (default 0; 1 also times, at the
//! largest size, the apply with the feed's writes against it without them, and publishing run 2's
//! events), `FEED_ROWS` (default 0; with `FEED=1`, the feed's bytes per row and a read of 1,000
//! changes after a position at that many rows).

#[path = "support/cli_process.rs"]
mod cli_process;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "apply/feed.rs"]
mod feed;
#[path = "apply/scale.rs"]
mod scale;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::ops::{Add, Sub};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use chrono::{TimeZone, Utc};
use cli_process::run_cli;
use coingecko_cdc::cdc;
use coingecko_cdc::coingecko::{CoinGeckoClient, LogProgress, PER_PAGE};
use coingecko_cdc::config::{Config, DbTls, SslMode};
use coingecko_cdc::ingest::{Ingest, Outcome, Source};
use coingecko_cdc::market::{exact_decimal, jsonb_storable, Quote};
use coingecko_cdc::store::{Connector, Store};
use coingecko_cdc::summary::Summary;
use rust_decimal::Decimal;
use serde_json::value::RawValue;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;
use uuid::Uuid;
use wiremock::MockServer;

const FIXTURES: [&str; 3] = [
    "markets-2024-09-05.json",
    "markets-2024-09-08.json",
    "markets-2026-04-30.json",
];
/// In every run after the first, one coin in this many moves past the threshold.
const MOVED_ONE_IN: usize = 10;
const ROUND_TRIP: Duration = Duration::from_millis(1);
/// Times each analyst query is run warm, for its median.
const QUERY_SAMPLES: usize = 20;

type CoinObject = BTreeMap<String, Box<RawValue>>;
type Param<'a> = &'a (dyn ToSql + Sync);

fn recorded_coins() -> Result<Vec<CoinObject>> {
    let mut coins = Vec::new();
    for name in FIXTURES {
        let parsed: Vec<CoinObject> = serde_json::from_str(&common::fixture(name))
            .with_context(|| format!("{name}: not an array of coin objects"))?;
        coins.extend(parsed);
    }
    Ok(coins)
}

/// The pages CoinGecko would serve in `round` (1: the first load). Coin `i` is recorded coin
/// `i % 300` renamed `<id>-<i>`; from round 2 on, another tenth of the coins moves +2% in each
/// round (rounded to 8 significant digits, as CoinGecko writes prices) and every coin has a new
/// `last_updated`.
fn answer(recorded: &[CoinObject], coins: usize, round: usize) -> Result<Vec<String>> {
    let raw = |json: String| RawValue::from_string(json).context("generated JSON");
    let at = Utc.with_ymd_and_hms(2026, 11, 27, 15, 0, 0).unwrap()
        + chrono::Duration::minutes(5 * round as i64);
    let last_updated = raw(format!("\"{}\"", at.format("%Y-%m-%dT%H:%M:%S%.3fZ")))?;
    let mut objects = Vec::with_capacity(coins);
    for i in 0..coins {
        let mut coin = recorded[i % recorded.len()].clone();
        let id: String = serde_json::from_str(coin["id"].get())?;
        coin.insert("id".into(), raw(format!("\"{id}-{i}\""))?);
        let moves = (2..=round).filter(|r| r % MOVED_ONE_IN == i % MOVED_ONE_IN);
        let mut price = exact_decimal(coin["current_price"].get()).map_err(anyhow::Error::msg)?;
        for _ in moves {
            price = (price * Decimal::new(102, 2))
                .round_sf(8)
                .unwrap()
                .normalize();
            coin.insert("current_price".into(), raw(price.to_string())?);
        }
        coin.insert("last_updated".into(), last_updated.clone());
        objects.push(serde_json::to_string(&coin)?);
    }
    Ok(objects
        .chunks(PER_PAGE)
        .map(|page| format!("[{}]", page.join(",")))
        .collect())
}

/// What crossed the wire from the client to PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
struct Wire {
    /// Simple queries ('Q') and executes ('E').
    statements: u64,
    /// Messages tokio-postgres waits for an answer to: 'Q', 'E' and 'P' (parsing a statement that
    /// was not prepared beforehand takes a round trip of its own).
    round_trips: u64,
}

impl Sub for Wire {
    type Output = Wire;
    fn sub(self, earlier: Wire) -> Wire {
        Wire {
            statements: self.statements - earlier.statements,
            round_trips: self.round_trips - earlier.round_trips,
        }
    }
}

impl Add for Wire {
    type Output = Wire;
    fn add(self, other: Wire) -> Wire {
        Wire {
            statements: self.statements + other.statements,
            round_trips: self.round_trips + other.round_trips,
        }
    }
}

/// Where a statement falls in a run, told from its text and whether a transaction is open.
#[derive(Debug, Clone, Copy)]
enum Part {
    /// In the transaction, from its BEGIN to its COMMIT, except the raw pages.
    Apply,
    /// Statements on `raw_pages`: pruning and storing.
    Raw,
    /// Outside any transaction, such as the row that opens a run in `ingest_runs`.
    Outside,
}

/// The wire, part by part.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    apply: Wire,
    raw: Wire,
    outside: Wire,
}

impl Tally {
    fn total(self) -> Wire {
        self.apply + self.raw + self.outside
    }

    fn count(&mut self, part: Part, statement: bool) {
        let wire = match part {
            Part::Apply => &mut self.apply,
            Part::Raw => &mut self.raw,
            Part::Outside => &mut self.outside,
        };
        wire.statements += statement as u64;
        wire.round_trips += 1;
    }
}

impl Sub for Tally {
    type Output = Tally;
    fn sub(self, earlier: Tally) -> Tally {
        Tally {
            apply: self.apply - earlier.apply,
            raw: self.raw - earlier.raw,
            outside: self.outside - earlier.outside,
        }
    }
}

#[derive(Default)]
struct WireCounts(Mutex<Tally>);

impl WireCounts {
    fn read(&self) -> Tally {
        *self.0.lock().unwrap()
    }

    fn count(&self, part: Part, statement: bool) {
        self.0.lock().unwrap().count(part, statement);
    }
}

/// Splits the client's stream into messages: first the startup packet (length, no type byte),
/// then type byte + length. Only the bodies that carry SQL text ('Q' and 'P') are kept; the
/// others are skipped as they stream past.
#[derive(Default)]
struct FrontendParser {
    started: bool,
    header: Vec<u8>,
    kind: u8,
    body: Vec<u8>,
    remaining: usize,
    in_transaction: bool,
    /// The part of the statement parsed last. Every statement of a run is sent as text and
    /// parsed just before it is executed, so the next 'E' runs it.
    parsed: Option<Part>,
}

impl FrontendParser {
    fn feed(&mut self, mut bytes: &[u8], counts: &WireCounts) {
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let n = self.remaining.min(bytes.len());
                if matches!(self.kind, b'Q' | b'P') {
                    self.body.extend_from_slice(&bytes[..n]);
                }
                self.remaining -= n;
                bytes = &bytes[n..];
                if self.remaining == 0 {
                    self.message(counts);
                }
                continue;
            }
            let header_len = if self.started { 5 } else { 4 };
            let n = (header_len - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            if self.header.len() < header_len {
                return;
            }
            let length = &self.header[header_len - 4..];
            self.remaining = u32::from_be_bytes(length.try_into().unwrap()) as usize - 4;
            // The startup packet has no type: 0 stands for it.
            self.kind = if self.started { self.header[0] } else { 0 };
            self.started = true;
            self.header.clear();
            if self.remaining == 0 {
                self.message(counts);
            }
        }
    }

    /// One whole message: `kind` and, for 'Q' and 'P', its `body`.
    fn message(&mut self, counts: &WireCounts) {
        let body = std::mem::take(&mut self.body);
        // 'Q': the query; 'P': the statement's name, then the query. Both end with a NUL.
        let mut texts = body.split(|&b| b == 0).map(String::from_utf8_lossy);
        match self.kind {
            b'Q' => {
                let part = self.part_of(&texts.next().unwrap_or_default());
                counts.count(part, true);
            }
            b'P' => {
                let part = self.part_of(&texts.nth(1).unwrap_or_default());
                self.parsed = Some(part);
                counts.count(part, false);
            }
            b'E' => counts.count(self.parsed.unwrap_or(Part::Outside), true),
            _ => {}
        }
    }

    fn part_of(&mut self, sql: &str) -> Part {
        let first_word = sql.split_whitespace().next().unwrap_or_default();
        match first_word.to_ascii_uppercase().as_str() {
            "BEGIN" | "START" => self.in_transaction = true,
            "COMMIT" | "ROLLBACK" | "END" => {
                self.in_transaction = false;
                return Part::Apply;
            }
            _ => {}
        }
        if sql.contains("raw_pages") {
            Part::Raw
        } else if self.in_transaction {
            Part::Apply
        } else {
            Part::Outside
        }
    }
}

/// A TCP proxy in front of PostgreSQL: forwards bytes unchanged and counts the client's messages.
async fn start_proxy(upstream: String, counts: Arc<WireCounts>) -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            match TcpStream::connect(&upstream).await {
                Ok(server) => drop(tokio::spawn(relay(client, server, counts.clone()))),
                // Dropping the client makes its connect fail, which says where it was going.
                Err(e) => eprintln!("proxy: PostgreSQL at {upstream} is not reachable: {e}"),
            }
        }
    });
    Ok(address)
}

async fn relay(client: TcpStream, server: TcpStream, counts: Arc<WireCounts>) {
    let (mut from_client, mut to_client) = client.into_split();
    let (mut from_server, mut to_server) = server.into_split();
    let upstream = async {
        let mut parser = FrontendParser::default();
        let mut buffer = vec![0; 64 * 1024];
        loop {
            let n = from_client.read(&mut buffer).await?;
            if n == 0 {
                return to_server.shutdown().await;
            }
            parser.feed(&buffer[..n], &counts);
            to_server.write_all(&buffer[..n]).await?;
        }
    };
    let downstream = tokio::io::copy(&mut from_server, &mut to_client);
    // Either side hanging up ends the session; how it ended does not matter to the counts.
    let _ = tokio::join!(upstream, downstream);
}

/// The server the bench creates its databases on, and the counting proxy in front of it.
struct Server {
    url: url::Url,
    /// Opened again when it has closed: cold measurements restart the server.
    admin: tokio::sync::Mutex<Client>,
    proxy: SocketAddr,
    wire: Arc<WireCounts>,
    /// Databases not dropped yet, so that a failed bench leaves none behind.
    created: Mutex<Vec<String>>,
}

impl Server {
    async fn start() -> Result<Self> {
        let server = common::server_url();
        let url = url::Url::parse(&server).context("DATABASE_URL must be a postgres:// URL")?;
        let host = url.host_str().context("DATABASE_URL needs a host")?;
        let wire = Arc::new(WireCounts::default());
        let upstream = format!("{host}:{}", url.port().unwrap_or(5432));
        Ok(Self {
            admin: tokio::sync::Mutex::new(common::connect(&server).await),
            proxy: start_proxy(upstream, wire.clone()).await?,
            url,
            wire,
            created: Mutex::default(),
        })
    }

    /// A new database `cdc_bench_<uuid>`: empty, or a copy of `template`.
    async fn create(&self, template: Option<&str>) -> Result<String> {
        let name = format!("cdc_bench_{}", Uuid::now_v7().simple());
        let copy = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        // Generated identifiers: database names cannot be bound as parameters.
        self.execute(&format!("CREATE DATABASE {name}{copy}"))
            .await?;
        self.created.lock().unwrap().push(name.clone());
        Ok(name)
    }

    async fn drop_database(&self, name: &str) -> Result<()> {
        self.execute(&format!("DROP DATABASE {name} WITH (FORCE)"))
            .await?;
        self.created
            .lock()
            .unwrap()
            .retain(|created| created != name);
        Ok(())
    }

    async fn execute(&self, sql: &str) -> Result<()> {
        let mut admin = self.admin.lock().await;
        if admin.is_closed() {
            *admin = common::connect(&common::server_url()).await;
        }
        admin.batch_execute(sql).await.context(sql.to_string())
    }

    async fn drop_remaining(&self) -> Result<()> {
        let remaining = std::mem::take(&mut *self.created.lock().unwrap());
        for name in remaining {
            self.drop_database(&name).await?;
        }
        Ok(())
    }

    /// The URL of database `name`, through the counting proxy or directly.
    fn url(&self, name: &str, counted: bool) -> String {
        let mut url = self.url.clone();
        url.set_path(&format!("/{name}"));
        // Plain text: the proxy must read the protocol, and direct timings must compare with it.
        // Appended, so that it wins over a mode in DATABASE_URL and keeps its other parameters.
        url.query_pairs_mut().append_pair("sslmode", "disable");
        if counted {
            url.set_host(Some(&self.proxy.ip().to_string())).unwrap();
            url.set_port(Some(self.proxy.port())).unwrap();
        }
        url.to_string()
    }
}

async fn connect_store(url: &str) -> Result<Store> {
    let plain = DbTls {
        mode: SslMode::Disable,
        root_cert: None,
        warning: None,
    };
    let config = tokio_postgres::Config::from_str(url)?;
    let store = Connector::new(&plain)?.connect(&config).await;
    store.context("start PostgreSQL or set DATABASE_URL")
}

/// The settings of every run at this size, for `Config::from_lookup` and the command line.
fn settings(stub: &MockServer, coins: usize) -> HashMap<String, String> {
    let mut env = HashMap::from([
        ("COINGECKO_BASE_URL".to_string(), stub.uri()),
        ("TOP_N".to_string(), coins.to_string()),
        // The stub has no rate limit: the least pacing the setting allows (its bound).
        (
            "COINGECKO_MAX_CALLS_PER_MIN".to_string(),
            "60000".to_string(),
        ),
        // Every database is migrated before run 1.
        ("AUTO_MIGRATE".to_string(), "false".to_string()),
    ]);
    if let Ok(pct) = std::env::var("CDC_THRESHOLD_PCT") {
        env.insert("CDC_THRESHOLD_PCT".into(), pct);
    }
    env
}

struct Ours {
    summary: Summary,
    wire: Tally,
}

impl Ours {
    fn fetch(&self) -> Duration {
        Duration::from_millis(self.summary.fetch_ms)
    }
    fn apply(&self) -> Duration {
        Duration::from_millis(self.summary.apply_ms)
    }
    fn raw(&self) -> Duration {
        Duration::from_millis(self.summary.raw_ms)
    }
    fn duration(&self) -> Duration {
        Duration::from_millis(self.summary.duration_ms)
    }
}

/// One real run, `Ingest::run` as the command line and the Lambda call it, timed by its summary.
async fn real_run(ingest: &Ingest, db_url: &str, wire: &WireCounts) -> Result<Ours> {
    let mut store = connect_store(db_url).await?;
    let before = wire.read();
    let live = Source::Live { time_left: None };
    let summary = match ingest.run(&mut store, None, live).await? {
        Outcome::Finished(summary) => summary,
        Outcome::Failed { error, .. } => return Err(error.into()),
    };
    Ok(Ours {
        summary,
        wire: wire.read() - before,
    })
}

// The SQL of the other designs (baseline, floor), on the tables of migration V6.

/// The baseline's read of one coin's key and latest price.
const BASELINE_READ: &str = "SELECT c.coin_key, q.price FROM coins c
    LEFT JOIN quotes q ON q.coin_key = c.coin_key AND q.vs_currency = $2
    WHERE c.coin_id = $1";
/// The baseline's key for a coin never seen before.
const BASELINE_ADD_COIN: &str =
    "INSERT INTO coins (coin_id, symbol, name, image, first_seen_at, last_seen_at)
    VALUES ($1, $2, $3, $4, now(), now()) RETURNING coin_key";
/// The baseline's description of a known coin, rewritten when the apply would rewrite it.
const BASELINE_DESCRIBE_COIN: &str =
    "UPDATE coins SET symbol = $2, name = $3, image = $4, last_seen_at = now() WHERE coin_key = $1
     AND ((symbol, name, image) IS DISTINCT FROM ($2, $3, $4) OR last_seen_at < now() - interval '1 hour')";
/// The baseline's history row of one coin.
const BASELINE_APPEND: &str = "INSERT INTO price_points
        (coin_key, vs_currency, price, market_cap, total_volume, source_updated_at, recorded_at, run_id)
    VALUES ($1, $2, $3, $4, $5, coalesce($6, now()), now(), $7)
    ON CONFLICT DO NOTHING";
/// The floor's table: the columns of `current_prices`, no index.
const FLOOR_TABLE: &str = "CREATE TABLE floor_copy (LIKE current_prices)";

/// The columns of `current_prices` a quote fills: the text ones, then those of `numbers`.
const QUOTE_COLUMNS: &str = "coin_id, vs_currency, symbol, name, market_cap_rank, source_updated_at, \
    price, market_cap, total_volume, high_24h, low_24h, price_change_24h, price_change_percentage_24h, \
    circulating_supply, total_supply, max_supply";
/// The columns of `quotes` the baseline's upsert fills: the key's, then those of `numbers`.
const BASELINE_QUOTE_COLUMNS: &str = "coin_key, vs_currency, market_cap_rank, source_updated_at, \
    price, market_cap, total_volume, high_24h, low_24h, price_change_24h, price_change_percentage_24h, \
    circulating_supply, total_supply, max_supply";

fn numbers(q: &Quote) -> [Option<Decimal>; 10] {
    [
        Some(q.price),
        q.market_cap,
        q.total_volume,
        q.high_24h,
        q.low_24h,
        q.price_change_24h,
        q.price_change_percentage_24h,
        q.circulating_supply,
        q.total_supply,
        q.max_supply,
    ]
}

/// The upsert of one coin's quote: `$1`…`$14` in `BASELINE_QUOTE_COLUMNS` order, `$15` whether
/// history was written.
fn baseline_upsert() -> String {
    let values: Vec<String> = (1..=14).map(|i| format!("${i}")).collect();
    let updates: Vec<String> = BASELINE_QUOTE_COLUMNS
        .split(", ")
        .skip(2)
        .map(|c| format!("{c} = excluded.{c}"))
        .collect();
    format!(
        "INSERT INTO quotes AS cur ({BASELINE_QUOTE_COLUMNS}, first_seen_at, last_changed_at, recorded_price, recorded_at)
         VALUES ({}, now(), now(), CASE WHEN $15::bool THEN $5::numeric END, CASE WHEN $15::bool THEN now() END)
         ON CONFLICT (vs_currency, coin_key) DO UPDATE SET {}, last_changed_at = now(),
             recorded_price = coalesce(excluded.recorded_price, cur.recorded_price),
             recorded_at = coalesce(excluded.recorded_at, cur.recorded_at)",
        values.join(", "),
        updates.join(", ")
    )
}

struct Baseline {
    apply: Duration,
    wire: Wire,
    history_inserted: u64,
}

/// The per-coin design this project replaced, in one transaction: a prepared read of the coin's
/// price, its history row if it moved past the threshold (or is new), then an upsert.
async fn run_baseline(
    db_url: &str,
    wire: &WireCounts,
    quotes: &[&Quote],
    vs: &str,
    threshold_pct: Decimal,
) -> Result<Baseline> {
    let mut client = common::connect(db_url).await;
    let run_id = Uuid::now_v7();
    let start_run = "INSERT INTO ingest_runs (run_id, status) VALUES ($1, 'running')";
    client.execute(start_run, &[&run_id]).await?;
    let at_start = wire.read();
    let started = Instant::now();
    let tx = client.transaction().await?;
    let read = tx.prepare(BASELINE_READ).await?;
    let add_coin = tx.prepare(BASELINE_ADD_COIN).await?;
    let describe_coin = tx.prepare(BASELINE_DESCRIBE_COIN).await?;
    let append = tx.prepare(BASELINE_APPEND).await?;
    let upsert = tx.prepare(&baseline_upsert()).await?;
    let mut history_inserted = 0;
    for q in quotes {
        let known = tx.query_opt(&read, &[&q.coin_id, &vs]).await?;
        let (coin_key, last): (i32, Option<Decimal>) = match known {
            Some(row) => {
                let coin_key = row.get(0);
                let description: [Param; 4] = [&coin_key, &q.symbol, &q.name, &q.image];
                tx.execute(&describe_coin, &description).await?;
                (coin_key, row.get(1))
            }
            None => {
                let description: [Param; 4] = [&q.coin_id, &q.symbol, &q.name, &q.image];
                (tx.query_one(&add_coin, &description).await?.get(0), None)
            }
        };
        let history: [Param; 7] = [
            &coin_key,
            &vs,
            &q.price,
            &q.market_cap,
            &q.total_volume,
            &q.source_updated_at,
            &run_id,
        ];
        let recorded = cdc::is_recordable(q.price, last, threshold_pct)
            && tx.execute(&append, &history).await? == 1;
        history_inserted += recorded as u64;
        let numbers = numbers(q);
        let mut current: Vec<Param> =
            vec![&coin_key, &vs, &q.market_cap_rank, &q.source_updated_at];
        current.extend(numbers.iter().map(|n| n as Param));
        current.push(&recorded);
        tx.execute(&upsert, &current).await?;
    }
    tx.commit().await?;
    Ok(Baseline {
        apply: started.elapsed(),
        wire: (wire.read() - at_start).total(),
        history_inserted,
    })
}

/// One bare INSERT of the incoming rows into a copy of `current_prices` without indexes: what
/// writing the data costs with no CDC and no conflict handling.
async fn run_floor(
    db_url: &str,
    wire: &WireCounts,
    quotes: &[&Quote],
    vs: &str,
) -> Result<(Duration, Wire)> {
    let client = common::connect(db_url).await;
    client.batch_execute(FLOOR_TABLE).await?;
    let at_start = wire.read();
    let started = Instant::now();
    let ids: Vec<&str> = quotes.iter().map(|q| q.coin_id.as_str()).collect();
    let symbols: Vec<Option<&str>> = quotes.iter().map(|q| q.symbol.as_deref()).collect();
    let names: Vec<Option<&str>> = quotes.iter().map(|q| q.name.as_deref()).collect();
    let ranks: Vec<Option<i32>> = quotes.iter().map(|q| q.market_cap_rank).collect();
    let updated: Vec<_> = quotes.iter().map(|q| q.source_updated_at).collect();
    let numbers: Vec<Vec<Option<Decimal>>> = (0..10)
        .map(|c| quotes.iter().map(|q| numbers(q)[c]).collect())
        .collect();
    let keys: Vec<i32> = (1..=quotes.len() as i32).collect();
    let mut params: Vec<Param> = vec![&vs, &ids, &symbols, &names, &ranks, &updated];
    params.extend(numbers.iter().map(|column| column as Param));
    params.push(&keys);

    let types = ["text", "text", "text", "int", "timestamptz"]
        .into_iter()
        .chain(["numeric"; 10]);
    let arrays: Vec<String> = types
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + 2))
        .collect();
    let unnested = QUOTE_COLUMNS.replace("vs_currency, ", "");
    let sql = format!(
        "INSERT INTO floor_copy ({QUOTE_COLUMNS}, coin_key, first_seen_at, last_changed_at)
         SELECT {QUOTE_COLUMNS}, coin_key, now(), now()
         FROM unnest({}, ${}::int[]) AS q({unnested}, coin_key), (SELECT $1::text AS vs_currency) AS v",
        arrays.join(", "),
        arrays.len() + 2
    );
    client.execute(&sql, &params).await?;
    Ok((started.elapsed(), (wire.read() - at_start).total()))
}

/// Rows inserted or updated in the price tables so far, read once every other session of the
/// database has ended (a backend reports its statistics when it exits).
async fn rows_written(db: &Client) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let others = "SELECT count(*) FROM pg_stat_activity
                  WHERE datname = current_database() AND pid <> pg_backend_pid()";
    while db.query_one(others, &[]).await?.get::<_, i64>(0) > 0 {
        ensure!(
            Instant::now() < deadline,
            "a session of the run did not end within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let written = "SELECT coalesce(sum(n_tup_ins + n_tup_upd), 0)::bigint FROM pg_stat_user_tables
                   WHERE relid IN ('coins'::regclass, 'quotes'::regclass)
                      OR relid IN (SELECT relid FROM pg_partition_tree('price_points'))";
    Ok(db.query_one(written, &[]).await?.get(0))
}

/// A digest of every row of the price tables, with the row versions (`xmin`) of `coins` and `quotes`.
async fn fingerprint(db: &Client) -> Result<String> {
    let digest = "SELECT
        (SELECT md5(string_agg((c.*, c.xmin)::text, ',' ORDER BY c.coin_key)) FROM coins c)
        || (SELECT md5(string_agg((q.*, q.xmin)::text, ',' ORDER BY q.vs_currency, q.coin_key)) FROM quotes q)
        || (SELECT md5(string_agg(h::text, ',' ORDER BY h.coin_id, h.source_updated_at)) FROM price_history h)";
    Ok(db.query_one(digest, &[]).await?.get(0))
}

fn median(values: impl Iterator<Item = Duration>) -> Duration {
    let mut values: Vec<Duration> = values.collect();
    values.sort();
    values[values.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// The measured time plus `ROUND_TRIP` for every wait on the server.
fn at_round_trip(measured: Duration, wire: Wire) -> Duration {
    measured + ROUND_TRIP * wire.round_trips as u32
}

/// One row of a size's table; the header is printed by `Bench::size`.
fn line(label: &str, time: Option<Duration>, wire: Option<Wire>) {
    let time_text = time.map(ms).unwrap_or_default();
    let (statements, trips) = match wire {
        Some(w) => (w.statements.to_string(), w.round_trips.to_string()),
        None => Default::default(),
    };
    let modelled = time.zip(wire).map(|(t, w)| ms(at_round_trip(t, w)));
    let modelled = modelled.unwrap_or_default();
    println!("{label:<38}{time_text:>12}{statements:>12}{trips:>13}{modelled:>14}");
}

struct Bench {
    server: Server,
    stub: MockServer,
    recorded: Vec<CoinObject>,
    samples: usize,
    /// Whether to compare the ways of storing the raw pages (`RAW_STORAGES`).
    raw_storages: bool,
    /// The partition periods history at scale is measured with (`PERIODS`).
    periods: Vec<String>,
    /// Whether to time the queries on a cold server too (`COLD`).
    cold: bool,
}

impl Bench {
    async fn size(&self, coins: usize, history_rows: i64) -> Result<()> {
        let (server, wire) = (&self.server, self.server.wire.as_ref());
        let env = settings(&self.stub, coins);
        let config = Config::from_lookup(|name| env.get(name).cloned())?;
        let vs = config.coingecko.vs_currencies[0].clone();

        // Run 1 fills the template that every sample starts from.
        let template = server.create(None).await?;
        let template_url = server.url(&template, false);
        connect_store(&template_url).await?.migrate().await?;
        common::serve_on(&self.stub, &answer(&self.recorded, coins, 1)?).await;
        let first_load = run_cli(&["run"], &template_url, &env).await?;
        // As a steady state would be (autovacuum may be off, as on the build machine).
        common::connect(&template_url)
            .await
            .batch_execute("VACUUM ANALYZE")
            .await?;

        let run2 = answer(&self.recorded, coins, 2)?;
        let pages = run2.len();
        common::serve_on(&self.stub, &run2).await;
        let market = CoinGeckoClient::new(config.coingecko.clone())?
            .fetch(&LogProgress, None)
            .await?
            .markets
            .remove(0)
            .market;
        let quotes: Vec<&Quote> = market.quotes().collect();
        let ingest = Ingest::new(config.coingecko.clone(), config.ingest.clone())?;

        let (mut ours, mut baseline, mut floor) = (Vec::new(), Vec::new(), Vec::new());
        // Sample 0 goes through the counting proxy, which adds latency: its times are not used.
        for sample in 0..=self.samples {
            let db = server.create(Some(&template)).await?;
            ours.push(real_run(&ingest, &server.url(&db, sample == 0), wire).await?);
            server.drop_database(&db).await?;
            let db = server.create(Some(&template)).await?;
            let url = server.url(&db, sample == 0);
            let threshold = config.ingest.threshold_pct;
            baseline.push(run_baseline(&url, wire, &quotes, &vs, threshold).await?);
            floor.push(run_floor(&url, wire, &quotes, &vs).await?);
            server.drop_database(&db).await?;
        }

        // The real binary: run 2, then the identical answer again.
        let db = server.create(Some(&template)).await?;
        let counted = server.url(&db, true);
        let before = wire.read();
        let steady = run_cli(&["run"], &counted, &env).await?;
        let steady_wire = (wire.read() - before).total();
        let reader = common::connect(&server.url(&db, false)).await;
        let (rows_before, digest_before) =
            (rows_written(&reader).await?, fingerprint(&reader).await?);
        let before = wire.read();
        let rerun = run_cli(&["run"], &counted, &env).await?;
        let rerun_wire = (wire.read() - before).total();
        let rows_rewritten = rows_written(&reader).await? - rows_before;
        let unchanged = fingerprint(&reader).await? == digest_before;
        drop(reader);
        server.drop_database(&db).await?;

        let (ours_counted, ours) = (&ours[0], &ours[1..]);
        let (baseline_counted, baseline) = (&baseline[0], &baseline[1..]);
        let ours_apply = median(ours.iter().map(Ours::apply));
        let baseline_apply = median(baseline.iter().map(|b| b.apply));
        let floor_insert = median(floor[1..].iter().map(|f| f.0));
        let written = &ours_counted.summary;
        ensure!(
            baseline_counted.history_inserted == written.history_inserted,
            "the baseline recorded {} changes, ours {}",
            baseline_counted.history_inserted,
            written.history_inserted
        );

        let moved = coins.div_ceil(MOVED_ONE_IN);
        println!("\n== {coins} coins, {pages} pages; run 2: {moved} moved +2%, all a new last_updated; medians of {} ==", self.samples);
        println!(
            "{:<38}{:>12}{:>12}{:>13}{:>14}",
            "", "median", "statements", "round trips", "at 1 ms RTT"
        );
        let (oc, bc) = (&ours_counted.wire, baseline_counted);
        let fetch = median(ours.iter().map(Ours::fetch));
        line("ours: fetch_ms (stub)", Some(fetch), None);
        line("ours: apply_ms", Some(ours_apply), Some(oc.apply));
        let raw = median(ours.iter().map(Ours::raw));
        line("ours: raw_ms (prune + store)", Some(raw), Some(oc.raw));
        let whole = median(ours.iter().map(Ours::duration));
        line(
            "ours: duration_ms (whole run)",
            Some(whole),
            Some(oc.total()),
        );
        line(
            "baseline: per-coin apply",
            Some(baseline_apply),
            Some(bc.wire),
        );
        line(
            "floor: one bare INSERT",
            Some(floor_insert),
            Some(floor[0].1),
        );
        println!(
            "rows written: ours {} history + {} current; baseline {} history + {} current",
            written.history_inserted,
            written.upserted,
            baseline_counted.history_inserted,
            quotes.len()
        );
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        let ours_at_1ms = at_round_trip(ours_apply, oc.apply);
        let baseline_at_1ms = at_round_trip(baseline_apply, baseline_counted.wire);
        println!(
            "apply: ours/baseline {:.3} (ours {:.1}x faster), ours/floor {:.2}; at 1 ms RTT ours/baseline {:.4} ({:.0}x faster)",
            ratio(ours_apply, baseline_apply),
            ratio(baseline_apply, ours_apply),
            ratio(ours_apply, floor_insert),
            ratio(ours_at_1ms, baseline_at_1ms),
            ratio(baseline_at_1ms, ours_at_1ms),
        );
        println!(
            "coingecko-cdc run: peak RSS {} (run 1, first load), {} (run 2); run 2 sent {} statements ({} round trips)",
            mib(first_load.peak_rss_kib),
            mib(steady.peak_rss_kib),
            steady_wire.statements,
            steady_wire.round_trips
        );
        println!(
            "identical re-run: {rows_rewritten} rows inserted or updated (pg_stat_user_tables; run 2: {rows_before}), tables {} (rows and xmin), \
             summary upserted {} history_inserted {}, {} statements",
            if unchanged { "unchanged" } else { "CHANGED" },
            rerun.summary["upserted"],
            rerun.summary["history_inserted"],
            rerun_wire.statements
        );

        if self.raw_storages {
            compare_raw_storages(server, &run2, self.samples).await?;
        }
        if history_rows > 0 {
            self.history_scale(&ingest, coins, history_rows).await?;
        }
        server.drop_database(&template).await
    }

    /// For each partition period: the apply with 0 and with `rows` rows of history, the size of
    /// that history, and analysts' queries on it (warm; cold too when `self.cold`). Both databases
    /// take the same runs 2, 3, … in turn, as a live one would: copying a large database for every
    /// sample would take minutes.
    async fn history_scale(&self, ingest: &Ingest, coins: usize, rows: i64) -> Result<()> {
        let (server, wire) = (&self.server, self.server.wire.as_ref());
        for period in &self.periods {
            let template = server.create(None).await?;
            let template_url = server.url(&template, false);
            connect_store(&template_url).await?.migrate().await?;
            let db = common::connect(&template_url).await;
            scale::set_partition_period(&db, period).await?;
            common::serve_on(&self.stub, &answer(&self.recorded, coins, 1)?).await;
            real_run(ingest, &template_url, wire).await?;
            scale::settle(&db).await?;
            drop(db);
            let (plain, loaded) = (
                server.create(Some(&template)).await?,
                server.create(Some(&template)).await?,
            );
            server.drop_database(&template).await?;
            let (plain_url, loaded_url) = (server.url(&plain, false), server.url(&loaded, false));
            let db = common::connect(&loaded_url).await;
            let started = Instant::now();
            let added = scale::load_history(&db, rows).await?;
            let took = started.elapsed().as_secs_f64();
            let size = scale::size_of(&db, "price_points").await?;
            let partitions: i64 = db
                .query_one(
                    "SELECT count(*) FROM pg_inherits WHERE inhparent = 'price_points'::regclass",
                    &[],
                )
                .await?
                .get(0);
            println!(
                "\n== history at scale, partitions of a {period} ({partitions}): {added} rows over a year in {} currencies, loaded in {took:.0} s ==",
                scale::CURRENCIES.len()
            );
            println!(
                "price_points: {:.1} bytes a row ({:.0} MB heap + {:.0} MB indexes)",
                size.per_row(),
                size.heap as f64 / 1e6,
                size.indexes as f64 / 1e6
            );
            let (mut without, mut with) = (Vec::new(), Vec::new());
            for round in 2..2 + self.samples {
                common::serve_on(&self.stub, &answer(&self.recorded, coins, round)?).await;
                // In turn, each first every other round: neither always follows the other.
                if round % 2 == 0 {
                    without.push(real_run(ingest, &plain_url, wire).await?.apply());
                    with.push(real_run(ingest, &loaded_url, wire).await?.apply());
                } else {
                    with.push(real_run(ingest, &loaded_url, wire).await?.apply());
                    without.push(real_run(ingest, &plain_url, wire).await?.apply());
                }
            }
            let (without, with) = (median(without.into_iter()), median(with.into_iter()));
            println!(
                "apply_ms at {coins} coins, runs 2..={}: {} with no history, {} with {added} rows ({:.2}x)",
                self.samples + 1,
                ms(without),
                ms(with),
                with.as_secs_f64() / without.as_secs_f64()
            );
            let coin_id = format!(
                "bitcoin-{}",
                coins / 2 / self.recorded.len() * self.recorded.len()
            );
            for (label, sql) in scale::QUERIES {
                let mut times = Vec::new();
                let mut returned = 0;
                for _ in 0..QUERY_SAMPLES {
                    let (took, rows) = scale::time_query(&db, sql, &coin_id).await?;
                    times.push(took);
                    returned = rows;
                }
                println!(
                    "{label:<28} {returned:>6} rows: warm {} (median of {QUERY_SAMPLES})",
                    ms(median(times.into_iter()))
                );
            }
            drop(db);
            if self.cold {
                for (label, sql) in scale::QUERIES {
                    scale::go_cold()?;
                    let db = common::connect(&loaded_url).await;
                    let (took, _) = scale::time_query(&db, sql, &coin_id).await?;
                    println!(
                        "{label:<28} cold {} (server restarted, page cache dropped)",
                        ms(took)
                    );
                }
            }
            server.drop_database(&plain).await?;
            server.drop_database(&loaded).await?;
        }
        Ok(())
    }

    /// The same history in V5's tables and in V6's: bytes per row before and after, and the time
    /// migration V6 takes to move it (it holds its locks throughout).
    async fn v5_to_v6(&self, coins: i64, rows: i64) -> Result<()> {
        let server = &self.server;
        let name = server.create(None).await?;
        let url = server.url(&name, false);
        let mut store = connect_store(&url).await?;
        store.migrate_to(Some(5)).await?;
        let db = common::connect(&url).await;
        scale::load_v5(&db, coins, rows).await?;
        let before = scale::size_of(&db, "price_history").await?;
        let current_before = scale::size_of(&db, "current_prices").await?;
        let started = Instant::now();
        store.migrate().await?;
        let took = started.elapsed().as_secs_f64();
        scale::settle(&db).await?;
        let after = scale::size_of(&db, "price_points").await?;
        let quotes = scale::size_of(&db, "quotes").await?;
        let dimension = scale::size_of(&db, "coins").await?;
        println!(
            "\n== V5 -> V6: {coins} coins in {} currencies, {} history rows ==",
            scale::CURRENCIES.len(),
            before.rows
        );
        let mb = |size: scale::Size| (size.heap + size.indexes) as f64 / 1e6;
        println!(
            "history: V5 {:.1} bytes a row ({:.0} MB: {:.0} heap + {:.0} indexes), V6 {:.1} ({:.0} MB: {:.0} + {:.0}): {:.0}% smaller",
            before.per_row(), mb(before), before.heap as f64 / 1e6, before.indexes as f64 / 1e6,
            after.per_row(), mb(after), after.heap as f64 / 1e6, after.indexes as f64 / 1e6,
            100.0 * (1.0 - after.per_row() / before.per_row())
        );
        println!(
            "latest prices: V5 current_prices {:.1} MB; V6 quotes {:.1} MB + coins {:.1} MB",
            mb(current_before),
            mb(quotes),
            mb(dimension)
        );
        println!(
            "migration V6: {took:.1} s, {:.1} s per million history rows",
            took / (before.rows as f64 / 1e6)
        );
        drop(db);
        server.drop_database(&name).await
    }
}

/// A way `raw_pages.payload` could be stored, measured side by side for the schema's owner.
struct RawStorage {
    name: &'static str,
    column_type: &'static str,
    /// How the column is set up after it is created: its TOAST compression or storage.
    alter_column: Option<&'static str>,
    /// Compressed in the client (gzip, fastest level) and sent as `bytea`.
    gzip: bool,
}

const RAW_STORAGES: [RawStorage; 6] = [
    RawStorage {
        name: "jsonb, pglz (V1 to V6)",
        column_type: "jsonb",
        alter_column: None,
        gzip: false,
    },
    RawStorage {
        name: "jsonb, lz4",
        column_type: "jsonb",
        alter_column: Some("SET COMPRESSION lz4"),
        gzip: false,
    },
    RawStorage {
        name: "text, pglz",
        column_type: "text",
        alter_column: None,
        gzip: false,
    },
    RawStorage {
        name: "text, lz4 (V7)",
        column_type: "text",
        alter_column: Some("SET COMPRESSION lz4"),
        gzip: false,
    },
    RawStorage {
        name: "text, not compressed",
        column_type: "text",
        alter_column: Some("SET STORAGE EXTERNAL"),
        gzip: false,
    },
    RawStorage {
        name: "bytea, gzip -1 in the client",
        column_type: "bytea",
        alter_column: Some("SET STORAGE EXTERNAL"),
        gzip: true,
    },
];

/// Pages per statement, as the store sends them.
const RAW_PAGES_PER_STATEMENT: usize = 10;

impl RawStorage {
    fn table(index: usize) -> String {
        format!("raw_storage_{index}")
    }

    /// `raw_pages` of migration V1, without the reference to `ingest_runs`, with this payload.
    fn create(&self, table: &str) -> String {
        let alter = self.alter_column.map_or(String::new(), |how| {
            format!("ALTER TABLE {table} ALTER COLUMN payload {how};")
        });
        format!(
            "CREATE TABLE {table} (run_id uuid NOT NULL, page integer NOT NULL, fetched_at timestamptz NOT NULL,
                 payload {} NOT NULL, PRIMARY KEY (run_id, page));
             CREATE INDEX ON {table} (fetched_at); {alter}",
            self.column_type
        )
    }

    /// The statement of `store_raw_pages`, writing this payload.
    fn insert(&self, table: &str) -> String {
        let (value, sent) = match self.column_type {
            "jsonb" => ("body::jsonb", "text"),
            other => ("body", other),
        };
        format!(
            "INSERT INTO {table} (run_id, page, fetched_at, payload)
             SELECT $1, page, fetched_at, {value}
             FROM unnest($2::int[], $3::timestamptz[], $4::{sent}[]) AS p(page, fetched_at, body)"
        )
    }

    /// Stores `pages` in one transaction, a batch per statement, and commits.
    async fn store(&self, db: &mut Client, table: &str, pages: &[String]) -> Result<()> {
        let insert = self.insert(table);
        let tx = db.transaction().await?;
        let run_id = Uuid::now_v7();
        for (batch_index, batch) in pages.chunks(RAW_PAGES_PER_STATEMENT).enumerate() {
            let first = (batch_index * RAW_PAGES_PER_STATEMENT) as i32 + 1;
            let numbers: Vec<i32> = (first..).take(batch.len()).collect();
            let fetched_at = vec![Utc::now(); batch.len()];
            let texts: Vec<std::borrow::Cow<str>> =
                batch.iter().map(|page| jsonb_storable(page)).collect();
            if self.gzip {
                let gzipped: Vec<Vec<u8>> = texts.iter().map(|t| gzip(t)).collect::<Result<_>>()?;
                tx.execute(&insert, &[&run_id, &numbers, &fetched_at, &gzipped])
                    .await?;
            } else {
                tx.execute(&insert, &[&run_id, &numbers, &fetched_at, &texts])
                    .await?;
            }
        }
        Ok(tx.commit().await?)
    }
}

fn gzip(text: &str) -> Result<Vec<u8>> {
    use std::io::Write;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(text.as_bytes())?;
    Ok(encoder.finish()?)
}

/// Every way of `RAW_STORAGES` storing one run's `pages` on a fresh database: the time of the
/// statements and their commit (median of `samples`, the ways taken in turn), and the table's
/// size on disk, indexes and TOAST included.
async fn compare_raw_storages(server: &Server, pages: &[String], samples: usize) -> Result<()> {
    let name = server.create(None).await?;
    let mut db = common::connect(&server.url(&name, false)).await;
    for (index, storage) in RAW_STORAGES.iter().enumerate() {
        let table = RawStorage::table(index);
        db.batch_execute(&storage.create(&table)).await?;
    }
    let mut times = vec![Vec::new(); RAW_STORAGES.len()];
    for _ in 0..samples {
        for (index, storage) in RAW_STORAGES.iter().enumerate() {
            let table = RawStorage::table(index);
            db.batch_execute(&format!("TRUNCATE {table}")).await?;
            let started = Instant::now();
            storage.store(&mut db, &table, pages).await?;
            times[index].push(started.elapsed());
        }
    }
    let text_bytes: usize = pages.iter().map(String::len).sum();
    println!(
        "raw pages: {} pages, {:.1} MB of text; each way stored {samples} times, fresh each time",
        pages.len(),
        text_bytes as f64 / 1e6
    );
    println!("{:<38}{:>12}{:>14}", "", "median", "on disk");
    for (index, storage) in RAW_STORAGES.iter().enumerate() {
        let size = "SELECT pg_total_relation_size($1::text::regclass)";
        let table = RawStorage::table(index);
        let bytes: i64 = db.query_one(size, &[&table]).await?.get(0);
        let time = median(times[index].iter().copied());
        let on_disk = format!("{:.2} MB", bytes as f64 / 1e6);
        println!("{:<38}{:>12}{on_disk:>14}", storage.name, ms(time));
    }
    drop(db);
    server.drop_database(&name).await
}

/// Other work on the machine skews the timings: printed so that a reader can tell.
fn load_average() -> String {
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    loadavg
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn numbers_setting(name: &str, default: &str) -> Result<Vec<usize>> {
    let text = std::env::var(name).unwrap_or_else(|_| default.into());
    let parsed: Result<Vec<usize>, _> = text.split(',').map(|n| n.trim().parse()).collect();
    parsed.with_context(|| {
        format!("{name}: expected whole numbers separated by commas, got {text:?}")
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let sizes = numbers_setting("SIZES", "250,2500,17500")?;
    let samples = numbers_setting("SAMPLES", "5")?[0].max(1);
    let history_rows = numbers_setting("HISTORY_ROWS", "0")?[0] as i64;
    let server = Server::start().await?;

    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            let line = info.lines().find(|l| l.starts_with("model name"))?;
            Some(line.split_once(':')?.1.trim().to_string())
        });
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let knobs = "SELECT version() || '; ' || string_agg(name || '=' || current_setting(name), ', ' ORDER BY name)
                 FROM pg_settings WHERE name IN ('shared_buffers', 'synchronous_commit', 'fsync', 'autovacuum')";
    let postgres: String = server
        .admin
        .lock()
        .await
        .query_one(knobs, &[])
        .await?
        .get(0);
    println!(
        "machine: {cores} cores, {}",
        cpu.unwrap_or_else(|| "unknown CPU".into())
    );
    println!("server: {postgres}");
    println!("load average at start: {}", load_average());

    let bench = Bench {
        server,
        stub: MockServer::start().await,
        recorded: recorded_coins()?,
        samples,
        raw_storages: numbers_setting("RAW_STORAGES", "0")?[0] > 0,
        periods: std::env::var("PERIODS")
            .unwrap_or_else(|_| "week".into())
            .split(',')
            .map(|period| period.trim().to_string())
            .collect(),
        cold: numbers_setting("COLD", "0")?[0] > 0,
    };
    let v5_rows = numbers_setting("V5_ROWS", "0")?[0] as i64;
    let largest = sizes.iter().copied().max().unwrap_or_default();
    let outcome = async {
        for &coins in &sizes {
            let history = if coins == largest { history_rows } else { 0 };
            bench.size(coins, history).await?;
        }
        if v5_rows > 0 {
            bench.v5_to_v6(largest as i64, v5_rows).await?;
        }
        if numbers_setting("FEED", "0")?[0] > 0 {
            bench
                .feed(largest, numbers_setting("FEED_ROWS", "0")?[0] as i64)
                .await?;
        }
        anyhow::Ok(())
    }
    .await;
    bench.server.drop_remaining().await?;
    println!("\nload average at the end: {}", load_average());
    outcome
}
