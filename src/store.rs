//! The PostgreSQL edge: migrations, run bookkeeping and the set-based apply.
//!
//! Every statement is parameterised, and the number of statements per run does not
//! depend on the number of coins: each table is written by one statement over arrays.

use std::borrow::Cow;
use std::collections::HashMap;
use std::time::Duration;

use postgres_native_tls::{MakeTlsConnector, TlsStream};
use refinery::{SchemaVersion, Target};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tokio_postgres::config::Host;
use tokio_postgres::error::{DbError, Severity, SqlState};
use tokio_postgres::types::Json;
use tokio_postgres::{AsyncMessage, Client, Connection, Socket, Transaction};
use uuid::Uuid;

use chrono::{DateTime, Utc};

use crate::chart::Series;
use crate::coingecko::RawPage;
use crate::config::{DbTls, SslMode};
use crate::error_chain::error_chain;
use crate::market::{jsonb_storable, Quote};
use crate::status::{HealthFacts, RunRecord};
use crate::summary::Summary;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Raw pages per statement: about 2 MB of text for full pages.
const RAW_PAGES_PER_STATEMENT: usize = 10;
/// SQLSTATE class 28, "invalid authorization specification": the server refused the login.
const INVALID_AUTHORIZATION: &str = "28";
/// The advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6367_6364_635f_6d67;
/// What a migration failure says it was doing; its advice depends on it.
const APPLYING_MIGRATIONS: &str = "applying migrations";
/// The advisory lock that serialises the apply of runs (also for operators who need to hold runs off).
pub const RUN_LOCK: i64 = 0x6367_6364_635f_726e;

/// A database failure, with what was being done and PostgreSQL's SQLSTATE when it sent one.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL, {action}: {detail}")]
pub struct StoreError {
    pub action: &'static str,
    pub detail: String,
    pub sqlstate: Option<String>,
}

trait During<T> {
    fn during(self, action: &'static str) -> Result<T, StoreError>;
}

impl<T> During<T> for Result<T, tokio_postgres::Error> {
    fn during(self, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| match e.as_db_error() {
            Some(db) => {
                StoreError::new(action, db.message().to_string(), Some(db.code()), db.hint())
            }
            None => StoreError::new(action, error_chain(&e), None, None),
        })
    }
}

impl StoreError {
    /// `detail`, then the SQLSTATE, PostgreSQL's hint and, where an operator can fix it, what to do.
    fn new(
        action: &'static str,
        mut detail: String,
        code: Option<&SqlState>,
        hint: Option<&str>,
    ) -> Self {
        if let Some(code) = code {
            detail.push_str(&format!(" (SQLSTATE {})", code.code()));
        }
        if let Some(hint) = hint {
            detail.push_str(&format!("; hint: {hint}"));
        }
        if let Some(advice) = code.and_then(|code| advice(action, code)) {
            detail.push_str("; ");
            detail.push_str(advice);
        }
        StoreError {
            action,
            detail,
            sqlstate: code.map(|c| c.code().to_string()),
        }
    }
}

/// What to do about the failures an operator can fix, given what was being done: an SQLSTATE can
/// mean different things (42501 is also the append-only refusal of `price_history`).
fn advice(action: &str, code: &SqlState) -> Option<&'static str> {
    Some(match *code {
        SqlState::INSUFFICIENT_PRIVILEGE if action == APPLYING_MIGRATIONS => {
            "this role may not change the schema (the least-privilege ingest role may not): deploy with AUTO_MIGRATE=false (template parameter AutoMigrate=false) and run the migrations as the owner: `coingecko-cdc migrate` with the owner's DATABASE_URL, or invoke the function once with events/migrate.json using the owner's credentials (DbSecretArn naming the owner's secret)"
        }
        SqlState::UNDEFINED_TABLE => {
            "the schema is missing: run `coingecko-cdc migrate` or leave AUTO_MIGRATE on"
        }
        SqlState::READ_ONLY_SQL_TRANSACTION => {
            "the database accepts no writes: point DB_HOST (or the secret's host) at the primary (writer) endpoint, not a replica, or wait for the failover to finish"
        }
        SqlState::DISK_FULL => {
            "the database server's disk is full: free space (old raw pages: RAW_RETENTION_DAYS) or grow the storage"
        }
        _ => return None,
    })
}

/// PostgreSQL's SQLSTATE, when a failure of another library came from one.
fn sqlstate_in(error: &(dyn std::error::Error + 'static)) -> Option<SqlState> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(code) = cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
        {
            return Some(code.clone());
        }
        source = cause.source();
    }
    None
}

/// Whether a connection failed in the TLS handshake (the certificate, most often).
fn is_tls_failure(error: &tokio_postgres::Error) -> bool {
    std::error::Error::source(error).is_some_and(|cause| cause.is::<native_tls::Error>())
}

/// The Amazon RDS global CA bundle (all regions), as AWS publishes it at
/// https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem. Built in because
/// Amazon Linux's system store lacks these roots; refresh it when AWS rotates its CAs.
const RDS_ROOTS: &[u8] = include_bytes!("rds-global-bundle.pem");

/// Opens connections with the configured TLS; built once, reused for every connection.
#[derive(Clone)]
pub struct Connector {
    tls: MakeTlsConnector,
    mode: SslMode,
}

impl Connector {
    /// Reads the root certificate file (every certificate of the bundle) and builds the TLS setup.
    pub fn new(settings: &DbTls) -> Result<Self, StoreError> {
        let tls_error = |detail: String| StoreError::new("setting up TLS", detail, None, None);
        let mut builder = native_tls::TlsConnector::builder();
        let mut add_roots = |source: &str, bundle: &[u8]| -> Result<(), StoreError> {
            let certificates = pem::parse_many(bundle)
                .map_err(|e| tls_error(format!("{source}: not PEM ({e})")))?;
            if certificates.is_empty() {
                return Err(tls_error(format!("{source}: no certificate in the file")));
            }
            for certificate in certificates {
                let root = native_tls::Certificate::from_der(certificate.contents())
                    .map_err(|e| tls_error(format!("{source}: {e}")))?;
                builder.add_root_certificate(root);
            }
            Ok(())
        };
        add_roots("the built-in RDS bundle", RDS_ROOTS)?;
        if let Some(root_cert) = &settings.root_cert {
            let source = format!("{} {}", root_cert.setting, root_cert.path.display());
            let bundle =
                std::fs::read(&root_cert.path).map_err(|e| tls_error(format!("{source}: {e}")))?;
            add_roots(&source, &bundle)?;
        }
        // As libpq: the chain is verified in the verify modes, and in the others when a root
        // certificate is given; the host name only in verify-full.
        let verify_chain = match settings.mode {
            SslMode::VerifyCa | SslMode::VerifyFull => true,
            SslMode::Disable | SslMode::Allow | SslMode::Prefer | SslMode::Require => {
                settings.root_cert.is_some()
            }
        };
        builder
            .danger_accept_invalid_certs(!verify_chain)
            .danger_accept_invalid_hostnames(settings.mode != SslMode::VerifyFull);
        let connector = builder.build().map_err(|e| tls_error(e.to_string()))?;
        if let Some(warning) = &settings.warning {
            tracing::warn!("{warning}");
        }
        Ok(Self {
            tls: MakeTlsConnector::new(connector),
            mode: settings.mode,
        })
    }

    /// Connects as libpq does in this mode: `allow` tries without TLS first and `prefer` with TLS
    /// first, each trying the other way when the login fails (the server's `pg_hba.conf` may
    /// admit only one of them), `prefer` also when the TLS handshake fails.
    async fn open(
        &self,
        config: &tokio_postgres::Config,
    ) -> Result<(Client, Connection<Socket, TlsStream<Socket>>), tokio_postgres::Error> {
        use tokio_postgres::config::SslMode as Wire;
        let attempt = |mode: Wire| {
            let mut config = config.clone();
            config.ssl_mode(mode);
            async move { config.connect(self.tls.clone()).await }
        };
        let login_refused = |e: &tokio_postgres::Error| {
            e.code()
                .is_some_and(|code| code.code().starts_with(INVALID_AUTHORIZATION))
        };
        match self.mode {
            SslMode::Disable => attempt(Wire::Disable).await,
            SslMode::Allow => match attempt(Wire::Disable).await {
                Err(e) if login_refused(&e) => attempt(Wire::Require).await,
                other => other,
            },
            SslMode::Prefer => match attempt(Wire::Prefer).await {
                Err(e) if login_refused(&e) || is_tls_failure(&e) => attempt(Wire::Disable).await,
                other => other,
            },
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                attempt(Wire::Require).await
            }
        }
    }

    pub async fn connect(&self, config: &tokio_postgres::Config) -> Result<Store, StoreError> {
        let (client, mut connection) = self
            .open(config)
            .await
            .during("connecting")
            .map_err(|mut e| {
                let advice = if e.detail.contains("certificate") {
                    "; the server's certificate must lead to a trusted root (the RDS bundle is built in and the system's roots are trusted; add others with DB_SSL_ROOT_CERT or sslrootcert) and, with sslmode verify-full, match the host name"
                } else if e.sqlstate.is_none() {
                    "; is PostgreSQL running there and reachable from here? Check DATABASE_URL, or DB_HOST and DB_PORT (or the secret's host and port)"
                } else {
                    ""
                };
                e.detail = format!("to {}: {}{advice}", target(config), e.detail);
                e
            })?;
        tokio::spawn(async move {
            // Driven by hand rather than awaited, to log the server's notices by their severity.
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notice(notice)) => log_notice(&notice),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %error_chain(&e), "PostgreSQL connection closed");
                        break;
                    }
                }
            }
        });
        Ok(Store { client })
    }
}

/// Where a connection goes, for its errors: hosts and ports, database and user, never the password.
fn target(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    // As tokio-postgres pairs them: one port for every host, or one port each.
    let port = |i: usize| ports.get(i).or(ports.first()).copied().unwrap_or(5432);
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| match host {
            Host::Tcp(name) => format!("{name}:{}", port(i)),
            #[cfg(unix)]
            Host::Unix(dir) => format!("{}/.s.PGSQL.{}", dir.display(), port(i)),
        })
        .collect();
    let hosts = if hosts.is_empty() {
        "no host".to_string()
    } else {
        hosts.join(", ")
    };
    // Unset, both are the name of the user running this program, as in libpq.
    let user = config.get_user().unwrap_or("(this system's user)");
    let dbname = config.get_dbname().unwrap_or(user);
    format!("{hosts}, database {dbname} as user {user}")
}

/// The server's messages that are not errors. Routine ones (such as "relation … already exists,
/// skipping" on every migration check) stay out of the default log; warnings stay in it.
fn log_notice(notice: &DbError) {
    let code = notice.code().code();
    match notice.parsed_severity() {
        Some(Severity::Notice | Severity::Info | Severity::Log | Severity::Debug) => {
            tracing::debug!(sqlstate = code, "PostgreSQL: {}", notice.message());
        }
        _ => tracing::warn!(
            sqlstate = code,
            "PostgreSQL {}: {}",
            notice.severity(),
            notice.message()
        ),
    }
}

pub struct Store {
    client: Client,
}

impl Store {
    /// Whether the server still answers on this connection. A warm connection can have been
    /// ended while the function slept (a restart, a failover, an idle timeout) without the
    /// client having noticed yet: one empty round trip tells before a run relies on it.
    pub async fn is_alive(&self) -> bool {
        const PATIENCE: Duration = Duration::from_secs(5);
        !self.client.is_closed()
            && matches!(
                tokio::time::timeout(PATIENCE, self.client.batch_execute("")).await,
                Ok(Ok(()))
            )
    }

    /// Applies pending migrations; safe when several processes start at once. Returns the names
    /// of those applied (`V1__initial`, …), none when the schema was current.
    pub async fn migrate(&mut self) -> Result<Vec<String>, StoreError> {
        self.migrate_to(None).await
    }

    /// Applies migrations up to `version`, or all of them; returns the names of those applied.
    pub async fn migrate_to(
        &mut self,
        version: Option<SchemaVersion>,
    ) -> Result<Vec<String>, StoreError> {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .during("waiting for the migration lock")?;
        let target = version.map_or(Target::Latest, Target::Version);
        let outcome = embedded::migrations::runner()
            .set_target(target)
            .run_async(&mut self.client)
            .await;
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .during("releasing the migration lock")?;
        let report = outcome.map_err(|e| {
            let code = sqlstate_in(&e);
            StoreError::new(APPLYING_MIGRATIONS, error_chain(&e), code.as_ref(), None)
        })?;
        let applied: Vec<String> = report
            .applied_migrations()
            .iter()
            .map(ToString::to_string)
            .collect();
        for migration in &applied {
            tracing::info!(%migration, "migration applied");
        }
        Ok(applied)
    }

    /// The summary of the succeeded run with this trigger id, if there is one.
    pub async fn succeeded_summary(&self, trigger_id: &str) -> Result<Option<Summary>, StoreError> {
        find_succeeded(&self.client, trigger_id).await
    }

    pub async fn start_run(
        &self,
        run_id: Uuid,
        trigger_id: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client
            .execute(
                "INSERT INTO ingest_runs (run_id, trigger_id, status) VALUES ($1, $2, 'running')",
                &[&run_id, &trigger_id],
            )
            .await
            .during("recording the start of the run")?;
        Ok(())
    }

    pub async fn fail_run(&self, run_id: Uuid, error: &str) -> Result<(), StoreError> {
        self.client
            .execute(
                "UPDATE ingest_runs SET status = 'failed', finished_at = clock_timestamp(), error = $2 WHERE run_id = $1",
                &[&run_id, &error],
            )
            .await
            .during("recording the failure of the run")?;
        Ok(())
    }

    /// The most recent runs, newest first.
    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT run_id::text, trigger_id, started_at, finished_at, status, summary, error
                 FROM ingest_runs ORDER BY started_at DESC LIMIT $1",
                &[&limit],
            )
            .await
            .during("reading ingest_runs")?;
        Ok(rows
            .into_iter()
            .map(|r| RunRecord {
                run_id: r.get(0),
                trigger_id: r.get(1),
                started_at: r.get(2),
                finished_at: r.get(3),
                status: r.get(4),
                summary: r.get(5),
                error: r.get(6),
            })
            .collect())
    }

    /// What health is judged from, whatever runs are shown: the most recent finished run (in the
    /// order the runs are shown, newest start first) and the last success.
    pub async fn health_facts(&self) -> Result<HealthFacts, StoreError> {
        let row = self
            .client
            .query_one(
                "SELECT (SELECT status FROM ingest_runs WHERE status <> 'running'
                         ORDER BY started_at DESC LIMIT 1),
                        (SELECT max(finished_at) FROM ingest_runs WHERE status = 'succeeded')",
                &[],
            )
            .await
            .during("reading ingest_runs")?;
        Ok(HealthFacts {
            last_finished_status: row.get(0),
            last_success: row.get(1),
        })
    }

    /// Which of `coin_ids` have ever been ingested in `vs_currency`.
    pub async fn known_coins(
        &self,
        vs_currency: &str,
        coin_ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let rows = self
            .client
            .query(
                "SELECT coin_id FROM current_prices WHERE vs_currency = $1 AND coin_id = ANY($2)",
                &[&vs_currency, &coin_ids],
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
            .query(PRICE_STEPS, &[&vs_currency, &coin_ids, &from, &to])
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

    /// Opens the transaction that applies a run, once no other run is applying.
    /// Bounded: past `lock_timeout` the run fails (SQLSTATE 55P03) rather than wait until the
    /// Lambda's own timeout kills it; a statement past `statement_timeout` fails it too (57014).
    pub async fn begin_apply(
        &mut self,
        lock_timeout: Duration,
        statement_timeout: Duration,
    ) -> Result<Apply<'_>, StoreError> {
        let tx = self
            .client
            .transaction()
            .await
            .during("starting the apply")?;
        let millis = |d: Duration| format!("{}ms", d.as_millis());
        tx.execute(
            "SELECT set_config('lock_timeout', $1, true), set_config('statement_timeout', $2, true)",
            &[&millis(lock_timeout), &millis(statement_timeout)],
        )
        .await
        .during("setting the apply's time limits")?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&RUN_LOCK])
            .await
            .during("waiting for an overlapping run to finish (DB_LOCK_TIMEOUT_SECS)")?;
        Ok(Apply { tx })
    }
}

async fn find_succeeded(
    client: &impl tokio_postgres::GenericClient,
    trigger_id: &str,
) -> Result<Option<Summary>, StoreError> {
    let row = client
        .query_opt(
            "SELECT summary FROM ingest_runs WHERE trigger_id = $1 AND status = 'succeeded'",
            &[&trigger_id],
        )
        .await
        .during("looking up the trigger id")?;
    Ok(row.map(|row| row.get::<_, Json<Summary>>(0).0))
}

/// What the write of one run changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub history_inserted: u64,
    pub upserted: u64,
}

/// The transaction of one run's apply: everything in it lands together or not at all.
pub struct Apply<'a> {
    tx: Transaction<'a>,
}

impl Apply<'_> {
    /// Checked again under the lock: an overlapping run with the same trigger may have just finished.
    pub async fn succeeded_summary(&self, trigger_id: &str) -> Result<Option<Summary>, StoreError> {
        find_succeeded(&self.tx, trigger_id).await
    }

    /// The price of each coin's last recorded history row; coins never recorded are absent.
    pub async fn recorded_prices(
        &self,
        vs_currency: &str,
        coin_ids: &[&str],
    ) -> Result<HashMap<String, Decimal>, StoreError> {
        let rows = self
            .tx
            .query(
                "SELECT coin_id, recorded_price FROM current_prices
                 WHERE vs_currency = $1 AND coin_id = ANY($2) AND recorded_price IS NOT NULL",
                &[&vs_currency, &coin_ids],
            )
            .await
            .during("reading the last recorded prices")?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    /// The newest `source_updated_at` in `current_prices` for `vs_currency`.
    pub async fn latest_price_time(
        &self,
        vs_currency: &str,
    ) -> Result<Option<DateTime<Utc>>, StoreError> {
        let row = self
            .tx
            .query_one(
                "SELECT max(source_updated_at) FROM current_prices WHERE vs_currency = $1",
                &[&vs_currency],
            )
            .await
            .during("reading the newest price time")?;
        Ok(row.get(0))
    }

    /// Appends history for the quotes marked recordable and brings `current_prices` to the
    /// quotes, rewriting only rows whose values changed. One statement, whatever the count.
    /// `as_of`: when the quotes were seen, for a recorded answer; a live run's is now.
    pub async fn write_prices(
        &self,
        run_id: Uuid,
        vs_currency: &str,
        quotes: &[&Quote],
        recordable: &[bool],
        as_of: Option<DateTime<Utc>>,
    ) -> Result<Written, StoreError> {
        let column =
            |f: fn(&Quote) -> Option<Decimal>| quotes.iter().map(|q| f(q)).collect::<Vec<_>>();
        let ids: Vec<&str> = quotes.iter().map(|q| q.coin_id.as_str()).collect();
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| coin_key(id)).collect();
        let symbols: Vec<Option<&str>> = quotes.iter().map(|q| q.symbol.as_deref()).collect();
        let names: Vec<Option<&str>> = quotes.iter().map(|q| q.name.as_deref()).collect();
        let prices: Vec<Decimal> = quotes.iter().map(|q| q.price).collect();
        let ranks: Vec<Option<i32>> = quotes.iter().map(|q| q.market_cap_rank).collect();
        let updated: Vec<_> = quotes.iter().map(|q| q.source_updated_at).collect();
        let recorded_times: Vec<_> = updated
            .iter()
            .zip(recordable)
            .filter_map(|(at, &record)| record.then_some(*at))
            .collect();
        // History rows need their month's partition; next month's is made ahead, off the
        // critical path of the first run of that month. Rows without a time get `as_of`.
        self.tx
            .execute(
                "SELECT price_history_make_partitions($1::timestamptz[] || ARRAY[coalesce($2, now()), now(), now() + interval '1 month'])",
                &[&recorded_times, &as_of],
            )
            .await
            .during("making the partitions of price_history")?;
        let row = self
            .tx
            .query_one(
                WRITE_PRICES,
                &[
                    &run_id,
                    &vs_currency,
                    &ids,
                    &symbols,
                    &names,
                    &prices,
                    &column(|q| q.market_cap),
                    &ranks,
                    &column(|q| q.total_volume),
                    &column(|q| q.high_24h),
                    &column(|q| q.low_24h),
                    &column(|q| q.price_change_24h),
                    &column(|q| q.price_change_percentage_24h),
                    &column(|q| q.circulating_supply),
                    &column(|q| q.total_supply),
                    &column(|q| q.max_supply),
                    &updated,
                    &recordable,
                    &keys,
                    &as_of,
                ],
            )
            .await
            .during("writing current_prices and price_history")?;
        Ok(Written {
            history_inserted: row.get::<_, i64>(0) as u64,
            upserted: row.get::<_, i64>(1) as u64,
        })
    }

    /// Stores the pages a batch at a time: one statement per batch keeps the statement count
    /// independent of the coins while bounding the memory of the encoded batch.
    pub async fn store_raw_pages(&self, run_id: Uuid, pages: &[RawPage]) -> Result<(), StoreError> {
        for batch in pages.chunks(RAW_PAGES_PER_STATEMENT) {
            let numbers: Vec<i32> = batch.iter().map(|p| p.number as i32).collect();
            let fetched_at: Vec<_> = batch.iter().map(|p| p.fetched_at).collect();
            let bodies: Vec<Cow<str>> = batch.iter().map(|p| jsonb_storable(&p.body)).collect();
            self.tx
                .execute(
                    "INSERT INTO raw_pages (run_id, page, fetched_at, payload)
                     SELECT $1, page, fetched_at, body::jsonb
                     FROM unnest($2::int[], $3::timestamptz[], $4::text[]) AS p(page, fetched_at, body)",
                    &[&run_id, &numbers, &fetched_at, &bodies],
                )
                .await
                .during("storing the raw pages")?;
        }
        Ok(())
    }

    /// Deletes raw pages older than the retention; returns how many went.
    pub async fn prune_raw_pages(&self, retention_days: u32) -> Result<u64, StoreError> {
        self.tx
            .execute(
                "DELETE FROM raw_pages WHERE fetched_at < now() - make_interval(days => $1)",
                &[&(retention_days as i32)],
            )
            .await
            .during("pruning old raw pages")
    }

    /// Records the run's outcome and commits everything the run wrote. `clock_timestamp()`,
    /// because `now()` is when the transaction began, before it waited for the run lock.
    pub async fn finish(self, run_id: Uuid, summary: &Summary) -> Result<(), StoreError> {
        self.tx
            .execute(
                "UPDATE ingest_runs SET status = $2, finished_at = clock_timestamp(), summary = $3 WHERE run_id = $1",
                &[&run_id, &summary.status.as_str(), &Json(summary)],
            )
            .await
            .during("recording the run's summary")?;
        self.tx.commit().await.during("committing the run")
    }
}

/// `current_prices.coin_key`: what the SQL function `coin_key(coin_id)` of migration V5 computes,
/// the SHA-256 of the id's UTF-8 bytes. Computed here because a generated column is recomputed by
/// every UPDATE, and every run updates every row.
pub fn coin_key(coin_id: &str) -> Vec<u8> {
    Sha256::digest(coin_id.as_bytes()).to_vec()
}

const PRICE_STEPS: &str = "
WITH wanted AS (SELECT unnest($2::text[]) AS coin_id)
SELECT coin_id, at, price FROM (
    -- The price in effect when the window opens: the last change before it, read backwards along
    -- the key's index, so the coin's older history is never read.
    SELECT w.coin_id, $3::timestamptz AS at, before.price
    FROM wanted w CROSS JOIN LATERAL (
        SELECT h.price FROM price_history h
        WHERE coin_key(h.coin_id) = coin_key(w.coin_id) AND h.vs_currency = $1 AND h.source_updated_at <= $3
        ORDER BY h.source_updated_at DESC
        LIMIT 1) before
    UNION ALL
    SELECT w.coin_id, h.source_updated_at, h.price
    FROM wanted w JOIN price_history h
      ON coin_key(h.coin_id) = coin_key(w.coin_id)
    WHERE h.vs_currency = $1 AND h.source_updated_at > $3 AND h.source_updated_at <= $4
    UNION ALL
    -- The latest fetched price, which may have moved less than the threshold since the last change.
    SELECT c.coin_id, c.source_updated_at, c.price
    FROM current_prices c JOIN wanted USING (coin_id)
    WHERE c.vs_currency = $1 AND c.source_updated_at > $3 AND c.source_updated_at <= $4
) steps
ORDER BY coin_id, at";

/// `history` appends the recordable quotes (a repeated `source_updated_at` adds nothing);
/// `upserted` moves the CDC reference only for coins whose history row was really written.
const WRITE_PRICES: &str = "
WITH incoming AS (
    SELECT *
    FROM unnest($3::text[], $4::text[], $5::text[], $6::numeric[], $7::numeric[], $8::int[],
                $9::numeric[], $10::numeric[], $11::numeric[], $12::numeric[], $13::numeric[],
                $14::numeric[], $15::numeric[], $16::numeric[], $17::timestamptz[], $18::bool[],
                $19::bytea[])
        AS q(coin_id, symbol, name, price, market_cap, market_cap_rank,
             total_volume, high_24h, low_24h, price_change_24h, price_change_percentage_24h,
             circulating_supply, total_supply, max_supply, source_updated_at, recordable, coin_key)
),
clock AS (SELECT coalesce($20::timestamptz, now()) AS as_of),
history AS (
    INSERT INTO price_history
        (coin_id, vs_currency, price, market_cap, total_volume, source_updated_at, recorded_at, run_id)
    SELECT coin_id, $2, price, market_cap, total_volume, coalesce(source_updated_at, as_of), as_of, $1
    FROM incoming, clock
    WHERE recordable
    ON CONFLICT (coin_key(coin_id), vs_currency, source_updated_at) DO NOTHING
    RETURNING coin_id
),
upserted AS (
    INSERT INTO current_prices AS cur
        (coin_id, vs_currency, symbol, name, price, market_cap, market_cap_rank,
         total_volume, high_24h, low_24h, price_change_24h, price_change_percentage_24h,
         circulating_supply, total_supply, max_supply, source_updated_at,
         first_seen_at, last_changed_at, recorded_price, recorded_at, coin_key)
    SELECT i.coin_id, $2, i.symbol, i.name, i.price, i.market_cap, i.market_cap_rank,
           i.total_volume, i.high_24h, i.low_24h, i.price_change_24h, i.price_change_percentage_24h,
           i.circulating_supply, i.total_supply, i.max_supply, i.source_updated_at,
           clock.as_of, clock.as_of,
           CASE WHEN h.coin_id IS NOT NULL THEN i.price END,
           CASE WHEN h.coin_id IS NOT NULL THEN clock.as_of END,
           i.coin_key
    FROM incoming i
    CROSS JOIN clock
    LEFT JOIN history h ON h.coin_id = i.coin_id
    ON CONFLICT (coin_key, vs_currency) DO UPDATE SET
        symbol = excluded.symbol,
        name = excluded.name,
        price = excluded.price,
        market_cap = excluded.market_cap,
        market_cap_rank = excluded.market_cap_rank,
        total_volume = excluded.total_volume,
        high_24h = excluded.high_24h,
        low_24h = excluded.low_24h,
        price_change_24h = excluded.price_change_24h,
        price_change_percentage_24h = excluded.price_change_percentage_24h,
        circulating_supply = excluded.circulating_supply,
        total_supply = excluded.total_supply,
        max_supply = excluded.max_supply,
        source_updated_at = excluded.source_updated_at,
        last_changed_at = excluded.last_changed_at,
        recorded_price = coalesce(excluded.recorded_price, cur.recorded_price),
        recorded_at = coalesce(excluded.recorded_at, cur.recorded_at)
    WHERE excluded.recorded_price IS NOT NULL
       OR (cur.symbol, cur.name, cur.price, cur.market_cap, cur.market_cap_rank,
           cur.total_volume, cur.high_24h, cur.low_24h, cur.price_change_24h,
           cur.price_change_percentage_24h, cur.circulating_supply, cur.total_supply,
           cur.max_supply, cur.source_updated_at)
          IS DISTINCT FROM
          (excluded.symbol, excluded.name, excluded.price, excluded.market_cap,
           excluded.market_cap_rank, excluded.total_volume, excluded.high_24h, excluded.low_24h,
           excluded.price_change_24h, excluded.price_change_percentage_24h,
           excluded.circulating_supply, excluded.total_supply, excluded.max_supply,
           excluded.source_updated_at)
    RETURNING 1
)
SELECT (SELECT count(*) FROM history), (SELECT count(*) FROM upserted)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insufficient_privilege_is_put_down_to_the_role_only_during_migrations() {
        let denied = Some(&SqlState::INSUFFICIENT_PRIVILEGE);
        let migrating = StoreError::new(
            APPLYING_MIGRATIONS,
            "permission denied for schema public".into(),
            denied,
            None,
        );
        for advice in [
            "(SQLSTATE 42501)",
            "may not change the schema",
            "AUTO_MIGRATE=false",
            "AutoMigrate=false",
            "`coingecko-cdc migrate`",
            "events/migrate.json",
        ] {
            assert!(migrating.detail.contains(advice), "{advice}: {migrating}");
        }
        // The append-only trigger of price_history refuses with the same SQLSTATE.
        let appending = StoreError::new(
            "writing current_prices and price_history",
            "price_history is append-only: UPDATE is refused".into(),
            denied,
            Some("history rows are never changed or removed"),
        );
        assert_eq!(
            appending.detail,
            "price_history is append-only: UPDATE is refused (SQLSTATE 42501); hint: history rows are never changed or removed"
        );
    }
}
