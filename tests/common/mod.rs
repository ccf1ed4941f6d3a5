//! Test harness: a fresh PostgreSQL database and a local CoinGecko stub per test.
#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod market_chart;
pub mod moto;
pub mod put_events;
pub mod secure_postgres;
pub mod simple_price;
pub mod wire;

use std::collections::HashMap;
use std::process::Output;
use std::str::FromStr;

use coingecko_cdc::app::{App, AppError};
use coingecko_cdc::config::Config;
use coingecko_cdc::config::{DbTls, SslMode};
use coingecko_cdc::secrets::{SecretSource, SecretsManager};
use coingecko_cdc::store::{Connector, Store};
use coingecko_cdc::summary::Summary;
use tokio_postgres::types::FromSql;
use tokio_postgres::{Client, NoTls};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// The server the tests use: `DATABASE_URL` when set, else the local one.
pub fn server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/coingecko/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading fixture {path}: {e}"))
}

/// A minimal coin object named after its id; `price` is JSON text, written as given.
pub fn coin(id: &str, price: &str, last_updated: &str) -> String {
    let text = |s: &str| serde_json::to_string(s).unwrap();
    format!(
        r#"{{"id":{},"symbol":{},"name":{},"current_price":{price},"market_cap":1000,"total_volume":10,"last_updated":"{last_updated}"}}"#,
        text(id),
        text(id),
        text(&format!("Coin {id}")),
    )
}

/// `bytes` characters that do not compress: PostgreSQL may not shrink them below its limits.
pub fn incompressible_text(bytes: usize) -> String {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 94) as u8)
        })
        .collect()
}

pub fn page(coins: &[String]) -> String {
    format!("[{}]", coins.join(","))
}

/// `count` coins `coin-0001`… with the same price.
pub fn numbered_coins(range: std::ops::Range<usize>, price: &str) -> Vec<String> {
    range
        .map(|n| coin(&format!("coin-{n:04}"), price, "2026-11-27T15:00:00.000Z"))
        .collect()
}

/// The value of a query parameter of a request the stub received.
pub fn param_of(request: &wiremock::Request, name: &str) -> Option<String> {
    request
        .url
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Serves `pages` as pages 1, 2, … of `/coins/markets` on `stub`, replacing what it served before.
pub async fn serve_on(stub: &MockServer, pages: &[String]) {
    stub.reset().await;
    for (i, body) in pages.iter().enumerate() {
        Mock::given(method("GET"))
            .and(path("/coins/markets"))
            .and(query_param("page", (i + 1).to_string()))
            .respond_with(ResponseTemplate::new(200).set_body_string(body.clone()))
            .mount(stub)
            .await;
    }
}

/// Connections as the product makes them by default (`DB_SSLMODE=prefer`).
pub fn connector() -> Connector {
    Connector::new(&DbTls {
        mode: SslMode::Prefer,
        root_cert: None,
        warning: None,
    })
    .unwrap()
}

pub struct TestApp {
    pub coingecko: MockServer,
    pub database_url: String,
    pub db: Client,
    env: HashMap<String, String>,
    pub database: TestDatabase,
}

/// A fresh, migrated database and an empty CoinGecko stub.
pub async fn spawn_app() -> TestApp {
    spawn_app_migrated_to(None).await
}

/// A fresh database migrated up to `version` (all migrations when `None`), and an empty stub.
pub async fn spawn_app_migrated_to(version: Option<i32>) -> TestApp {
    let database = fresh_database().await;
    let database_url = database.url.clone();
    let db = connect(&database_url).await;
    let coingecko = MockServer::start().await;
    let env = HashMap::from([
        ("DATABASE_URL".to_string(), database_url.clone()),
        ("COINGECKO_BASE_URL".to_string(), coingecko.uri()),
        // The stub has no rate limit to respect; the pacing tests set their own.
        (
            "COINGECKO_MAX_CALLS_PER_MIN".to_string(),
            "60000".to_string(),
        ),
    ]);
    let app = TestApp {
        coingecko,
        database_url,
        db,
        env,
        database,
    };
    app.store()
        .await
        .migrate_to(version)
        .await
        .expect("migrating");
    app
}

/// A database made for one test, dropped with the roles made for it when the test ends, passing
/// or failing. `KEEP_TEST_DATABASES=1` keeps them, to look at a failure.
pub struct TestDatabase {
    pub url: String,
    name: String,
    roles: std::sync::Mutex<Vec<String>>,
}

/// A new empty database on the test server.
pub async fn fresh_database() -> TestDatabase {
    let server = server_url();
    let name = format!("cdc_test_{}", uuid::Uuid::now_v7().simple());
    // A generated identifier: database names cannot be bound as parameters.
    connect(&server)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("creating the test database");
    TestDatabase {
        url: with_dbname(&server, &name),
        name,
        roles: Default::default(),
    }
}

impl TestDatabase {
    /// The database's name (for `ALTER DATABASE`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A name for a role this test makes on the server (roles outlive databases): it is dropped
    /// after the database.
    pub fn role_name(&self, prefix: &str) -> String {
        let name = format!("{prefix}_{}", uuid::Uuid::now_v7().simple());
        self.roles.lock().unwrap().push(name.clone());
        name
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if std::env::var_os("KEEP_TEST_DATABASES").is_some() {
            eprintln!("kept {}", self.url);
            return;
        }
        // One statement at a time: DROP DATABASE cannot run in the transaction of a batch.
        let mut statements = vec![format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.name
        )];
        for role in self.roles.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            statements.push(format!("DROP ROLE IF EXISTS {role}"));
        }
        // The test's runtime cannot block on itself from here: a thread and a runtime of its own.
        let dropped = std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(async {
                    let (client, connection) =
                        tokio_postgres::connect(&server_url(), NoTls).await?;
                    tokio::spawn(connection);
                    for statement in &statements {
                        client.batch_execute(statement).await?;
                    }
                    Ok::<(), tokio_postgres::Error>(())
                })
                .map_err(std::io::Error::other)
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!(
                "could not drop the test database {}: {dropped:?}",
                self.name
            );
        }
    }
}

fn with_dbname(server: &str, name: &str) -> String {
    let mut url = url::Url::parse(server).expect("DATABASE_URL must be a postgres:// URL");
    url.set_path(&format!("/{name}"));
    url.to_string()
}

/// Makes every apply take `seconds` longer in the server (a trigger on `quotes`): a slow disk, a
/// big load, a lock held outside the ingest.
pub async fn slow_applies(db: &Client, seconds: u32) {
    db.batch_execute(&format!(
        "CREATE FUNCTION slow_apply() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN PERFORM pg_sleep({seconds}); RETURN NULL; END $$;
         CREATE TRIGGER slow_apply AFTER INSERT ON quotes
             FOR EACH STATEMENT EXECUTE FUNCTION slow_apply();"
    ))
    .await
    .unwrap();
}

/// Every node of an `EXPLAIN (FORMAT JSON)` plan, depth first: its type and the relation it reads.
pub fn plan_nodes(plan: &serde_json::Value) -> Vec<(String, Option<String>)> {
    let mut nodes = vec![(
        plan["Node Type"].as_str().unwrap_or_default().to_string(),
        plan["Relation Name"].as_str().map(String::from),
    )];
    for child in plan["Plans"].as_array().into_iter().flatten() {
        nodes.extend(plan_nodes(child));
    }
    nodes
}

/// The first column of every row `sql` returns.
pub async fn column<T: for<'a> FromSql<'a>>(db: &Client, sql: &str) -> Vec<T> {
    db.query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.get(0))
        .collect()
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap_or_else(|e| {
        panic!(
            "PostgreSQL is not reachable at {url}: {e}. Start it (pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start) or set DATABASE_URL."
        )
    });
    tokio::spawn(connection);
    client
}

impl TestApp {
    /// Sets an environment setting for the runs of this app only.
    pub fn set(&mut self, var: &str, value: &str) {
        self.env.insert(var.into(), value.into());
    }

    pub fn env(&self) -> &HashMap<String, String> {
        &self.env
    }

    pub async fn store(&self) -> Store {
        connector()
            .connect(&tokio_postgres::Config::from_str(&self.database_url).unwrap())
            .await
            .expect("connecting the store")
    }

    /// One run, as the CLI does it, on its own connection.
    pub async fn try_run(&self, trigger_id: Option<&str>) -> Result<Summary, AppError> {
        self.try_run_from(&self.coingecko.uri(), trigger_id).await
    }

    /// One run against another CoinGecko stub.
    pub async fn try_run_from(
        &self,
        stub_uri: &str,
        trigger_id: Option<&str>,
    ) -> Result<Summary, AppError> {
        let app = self
            .app_with(
                &[("COINGECKO_BASE_URL", stub_uri)],
                SecretsManager::default(),
            )
            .await;
        app.run(trigger_id.map(String::from), None).await
    }

    /// What the CLI and the Lambda build, from this app's settings plus `extra`.
    pub async fn app_with<S: SecretSource>(&self, extra: &[(&str, &str)], secrets: S) -> App<S> {
        let mut env = self.env.clone();
        env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config =
            Config::from_lookup(move |name| env.get(name).cloned()).expect("test configuration");
        App::new(config, secrets).await.expect("building the app")
    }

    pub async fn run(&self) -> Summary {
        self.try_run(None).await.expect("run failed")
    }

    /// Serves `pages` as pages 1, 2, … of `/coins/markets`, replacing what was served before.
    pub async fn serve(&self, pages: &[String]) {
        serve_on(&self.coingecko, pages).await;
    }

    pub async fn count(&self, table: &str) -> i64 {
        self.db
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }

    /// `column::text` of one coin's current row, as PostgreSQL stores it.
    pub async fn current(&self, coin_id: &str, column: &str) -> Option<String> {
        self.db
            .query_one(
                &format!("SELECT {column}::text FROM current_prices WHERE coin_id = $1"),
                &[&coin_id],
            )
            .await
            .unwrap_or_else(|e| panic!("{coin_id} not in current_prices: {e}"))
            .get(0)
    }

    /// The recorded prices of one coin, oldest first, as text.
    pub async fn history(&self, coin_id: &str) -> Vec<String> {
        self.db
            .query(
                "SELECT price::text FROM price_history WHERE coin_id = $1 ORDER BY recorded_at, source_updated_at",
                &[&coin_id],
            )
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// A fingerprint of every row of the price tables, to prove that nothing changed: the coins
    /// and the latest prices with their row versions (`xmin`), then the history.
    pub async fn price_tables(&self) -> (Vec<String>, Vec<String>) {
        (
            column(
                &self.db,
                "SELECT * FROM (SELECT (c.*, c.xmin)::text FROM coins c ORDER BY coin_key) c
                 UNION ALL
                 SELECT * FROM (SELECT (q.*, q.xmin)::text FROM quotes q ORDER BY vs_currency, coin_key) q",
            )
            .await,
            column(
                &self.db,
                "SELECT h::text FROM price_history h ORDER BY coin_id, source_updated_at",
            )
            .await,
        )
    }

    /// The errors of the failed runs, oldest first.
    pub async fn failed_runs(&self) -> Vec<String> {
        column(
            &self.db,
            "SELECT error FROM ingest_runs WHERE status = 'failed' ORDER BY started_at",
        )
        .await
    }
}

/// docs/ingest-role.sql creates a role of the server: two tests creating it at once could collide.
static GRANTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The test database's URL for a new login role with only `docs/ingest-role.sql`'s grants; the
/// role is dropped with the test's database, passing or failing.
pub async fn ingest_login(app: &TestApp) -> String {
    let grants =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ingest-role.sql"))
            .unwrap();
    let granting = GRANTING.lock().await;
    app.db
        .batch_execute(&grants)
        .await
        .expect("docs/ingest-role.sql runs as the owner");
    drop(granting);
    let name = app.database.role_name("ingest");
    // A generated name: roles cannot be bound as parameters.
    app.db
        .batch_execute(&format!(
            "CREATE ROLE {name} LOGIN IN ROLE coingecko_cdc_ingest"
        ))
        .await
        .unwrap();
    let url = app
        .database_url
        .replacen("postgres@", &format!("{name}@"), 1);
    assert_ne!(url, app.database_url, "the test server URL names its user");
    url
}

/// Runs the `coingecko-cdc` binary with only the app's settings (plus `extra`) in its environment.
pub async fn cli(app: &TestApp, args: &[&str], extra: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(app.env())
        .envs(extra.iter().copied())
        .output()
        .await
        .expect("starting coingecko-cdc")
}

/// The binary with nothing but `env` in its environment: no database, no CoinGecko stub.
pub async fn cli_alone(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .await
        .expect("starting coingecko-cdc")
}

/// What a command printed on stdout, as one JSON object; the whole output when it is not.
pub fn stdout_json(output: &Output) -> serde_json::Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not one JSON object ({e}), exit {:?}: {}\nstderr: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

/// Where the command line puts its one-line cause.
pub fn last_stderr_line(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}
