//! Typed configuration, read once from the environment before any I/O.

use std::path::PathBuf;
use std::time::Duration;

use rust_decimal::Decimal;
use secrecy::SecretString;
use url::Url;

use crate::conninfo::{self, ConnInfo};
use crate::redact::url_for_errors;

const FREE_BASE_URL: &str = "https://api.coingecko.com/api/v3";
const PRO_BASE_URL: &str = "https://pro-api.coingecko.com/api/v3";
/// More fractional digits than this could make `price × threshold` exceed
/// the 28 digits a `Decimal` holds exactly.
const MAX_THRESHOLD_DECIMALS: u32 = 6;

/// A whole-number setting and its bounds. Every one has an upper bound, so that no sum or product of
/// settings can overflow: the longest lease, a week's fetch and a day's wait for the lock, stays far
/// inside `Duration`, `chrono` and PostgreSQL's timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WholeNumber {
    pub var: &'static str,
    /// When unset; 0 for the optional ones (below their minimum), whose unset means no value.
    pub default: u64,
    pub min: u64,
    pub max: u64,
    /// What one is, for the error: "seconds", "days", "".
    pub unit: &'static str,
}

impl WholeNumber {
    fn refused(&self, raw: &str) -> ConfigError {
        let unit = if self.unit.is_empty() {
            String::new()
        } else {
            format!(" {}", self.unit)
        };
        ConfigError::new(
            self.var,
            format!(
                "expected a whole number from {} to {}{unit}, got {raw:?}",
                self.min, self.max
            ),
        )
    }
}

const fn bounded(
    var: &'static str,
    default: u64,
    min: u64,
    max: u64,
    unit: &'static str,
) -> WholeNumber {
    WholeNumber {
        var,
        default,
        min,
        max,
        unit,
    }
}

/// At most CoinGecko's whole universe many times over (about 17,500 coins): 400 pages.
pub const TOP_N: WholeNumber = bounded("TOP_N", 250, 1, 100_000, "");
/// As many ids as `TOP_N` may ask for.
pub const MAX_COIN_IDS: usize = 100_000;
pub const COINGECKO_MAX_ATTEMPTS: WholeNumber = bounded("COINGECKO_MAX_ATTEMPTS", 5, 1, 100, "");
pub const COINGECKO_TIMEOUT_SECS: WholeNumber =
    bounded("COINGECKO_TIMEOUT_SECS", 15, 1, 3_600, "seconds");
/// A week: a backfill from the command line may work that long in one go.
pub const FETCH_BUDGET_SECS: WholeNumber = bounded("FETCH_BUDGET_SECS", 60, 1, 604_800, "seconds");
pub const COINGECKO_MAX_CALLS_PER_MIN: WholeNumber =
    bounded("COINGECKO_MAX_CALLS_PER_MIN", 0, 1, 60_000, "");
pub const COINGECKO_MONTHLY_CALL_BUDGET: WholeNumber =
    bounded("COINGECKO_MONTHLY_CALL_BUDGET", 0, 1, 1_000_000_000, "");
/// A century: PostgreSQL's `make_interval` takes the days as an `int`.
pub const RAW_RETENTION_DAYS: WholeNumber = bounded("RAW_RETENTION_DAYS", 7, 0, 36_500, "days");
/// A day, well inside PostgreSQL's own limit for such timeouts (`INT_MAX` milliseconds, 24.8 days).
pub const DB_LOCK_TIMEOUT_SECS: WholeNumber =
    bounded("DB_LOCK_TIMEOUT_SECS", 10, 1, 86_400, "seconds");
pub const DB_STATEMENT_TIMEOUT_SECS: WholeNumber =
    bounded("DB_STATEMENT_TIMEOUT_SECS", 10, 1, 86_400, "seconds");

/// Every whole-number setting, for the documentation's table and the tests.
pub const WHOLE_NUMBERS: [WholeNumber; 9] = [
    TOP_N,
    COINGECKO_MAX_ATTEMPTS,
    COINGECKO_TIMEOUT_SECS,
    FETCH_BUDGET_SECS,
    COINGECKO_MAX_CALLS_PER_MIN,
    COINGECKO_MONTHLY_CALL_BUDGET,
    RAW_RETENTION_DAYS,
    DB_LOCK_TIMEOUT_SECS,
    DB_STATEMENT_TIMEOUT_SECS,
];

/// A setting that cannot be used, named by its environment variable.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    pub var: &'static str,
    pub problem: String,
}

impl ConfigError {
    fn new(var: &'static str, problem: impl Into<String>) -> Self {
        Self {
            var,
            problem: problem.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub coingecko: CoinGeckoConfig,
    pub ingest: IngestConfig,
    pub database: DatabaseConfig,
    pub auto_migrate: bool,
    /// Where the CoinGecko API key comes from when it is kept in Secrets Manager.
    pub api_key_secret_id: Option<String>,
    /// The EventBridge bus the changes go to; `None`: events are off.
    pub events: Option<EventsConfig>,
}

/// `EVENT_BUS_NAME` and `EVENTS_INCLUDE_BACKFILL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventsConfig {
    /// A bus name or ARN.
    pub bus: String,
    /// Whether backfilled rows are published too (a year of history is not news).
    pub include_backfill: bool,
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `None` when neither `DATABASE_URL` nor `DB_SECRET_ID` is set.
    pub source: Option<DatabaseSource>,
    pub tls: DbTls,
}

#[derive(Debug, Clone)]
pub enum DatabaseSource {
    /// `DB_AUTH=iam`: no password; a token signed with the function's own AWS credentials.
    Iam(IamEndpoint),
    /// `DATABASE_URL` (a URI or a `key=value` list), completed from the `PG*` variables.
    Url(tokio_postgres::Config),
    /// Credentials in Secrets Manager; what the secret lacks comes from `DB_HOST`, `DB_PORT`,
    /// `DB_NAME`, then `PGHOST`, `PGPORT`, `PGDATABASE`.
    Secret {
        secret_id: String,
        host: Option<String>,
        port: Option<u16>,
        dbname: Option<String>,
        application_name: String,
    },
}

/// Where `DB_AUTH=iam` logs in: the token is signed for this host, port, user and region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamEndpoint {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub dbname: String,
    pub region: String,
    pub application_name: String,
}

/// libpq's `sslmode`s, with libpq's meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// Without TLS, and with it only when the server refuses the login without.
    Allow,
    /// With TLS when the server offers it, and without when the login with it fails.
    Prefer,
    /// TLS, the certificate not verified (its chain is when a root certificate is given, as in libpq).
    Require,
    /// TLS, the certificate chain verified.
    VerifyCa,
    /// TLS, the certificate chain and the host name verified.
    VerifyFull,
}

impl SslMode {
    const CHOICES: &'static str = "disable, allow, prefer, require, verify-ca or verify-full";

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "disable" => Self::Disable,
            "allow" => Self::Allow,
            "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTls {
    pub mode: SslMode,
    /// A PEM bundle of extra trusted roots (libpq's `sslrootcert`).
    pub root_cert: Option<RootCert>,
    /// What the operator should know about the mode: logged once, when connections are set up.
    pub warning: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootCert {
    pub path: PathBuf,
    /// The setting that named it, for errors.
    pub setting: &'static str,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiPlan {
    Demo,
    Pro,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CoinSelection {
    /// The first N coins by market cap.
    Top(usize),
    /// Exactly these coin ids.
    Ids(Vec<String>),
}

#[derive(Debug, Clone)]
pub struct CoinGeckoConfig {
    pub base_url: Url,
    pub plan: ApiPlan,
    pub api_key: Option<SecretString>,
    /// The quote currencies, lowercase, at least one: the first is fetched with `/coins/markets`,
    /// the others with `/simple/price`.
    pub vs_currencies: Vec<String>,
    pub selection: CoinSelection,
    pub max_attempts: u32,
    pub request_timeout: Duration,
    /// Everything the fetch may take, retries and waits included.
    pub fetch_budget: Duration,
    /// Requests a minute; unset: what the plan allows (see `CoinGeckoClient::new`).
    pub max_calls_per_min: Option<u32>,
    /// Requests a calendar month (UTC) a backfill may bring the total to; unset: no limit.
    pub monthly_call_budget: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct IngestConfig {
    pub threshold_pct: Decimal,
    pub store_raw: bool,
    pub raw_retention_days: u32,
    /// How long a run waits for an overlapping run to finish its apply.
    pub lock_timeout: Duration,
    /// How long one statement of the apply may take.
    pub statement_timeout: Duration,
    /// Whether the changes go on to EventBridge (`EVENT_BUS_NAME`): a run then starts the
    /// outbox when it is not started yet.
    pub publishes_events: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads every setting through `lookup`, so tests need not touch the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(&lookup);
        let api_key = env.text("COINGECKO_API_KEY").map(SecretString::from);
        let plan = match env.text("COINGECKO_API_PLAN").as_deref() {
            None | Some("demo") => ApiPlan::Demo,
            Some("pro") => ApiPlan::Pro,
            Some(other) => {
                return Err(ConfigError::new(
                    "COINGECKO_API_PLAN",
                    format!("unknown plan {other:?}: use \"demo\" or \"pro\""),
                ))
            }
        };
        let default_base = match plan {
            ApiPlan::Demo => FREE_BASE_URL,
            ApiPlan::Pro => PRO_BASE_URL,
        };
        let base_url = env.text("COINGECKO_BASE_URL");
        let base_url = parse_base_url(base_url.as_deref().unwrap_or(default_base))
            .map_err(|problem| ConfigError::new("COINGECKO_BASE_URL", problem))?;

        let selection = match env.text("COIN_IDS") {
            Some(list) => CoinSelection::Ids(parse_coin_ids(&list)?),
            None => CoinSelection::Top(env.whole(TOP_N)?),
        };
        let vs_currencies = vs_currencies(&env)?;

        let coingecko = CoinGeckoConfig {
            base_url,
            plan,
            api_key,
            vs_currencies,
            selection,
            max_attempts: env.whole(COINGECKO_MAX_ATTEMPTS)?,
            request_timeout: Duration::from_secs(env.whole(COINGECKO_TIMEOUT_SECS)?),
            fetch_budget: Duration::from_secs(env.whole(FETCH_BUDGET_SECS)?),
            max_calls_per_min: env.optional_whole(COINGECKO_MAX_CALLS_PER_MIN)?,
            monthly_call_budget: env.optional_whole(COINGECKO_MONTHLY_CALL_BUDGET)?,
        };

        let events = match env.text("EVENT_BUS_NAME") {
            Some(bus) => Some(EventsConfig {
                bus: parse_event_bus(&bus)?,
                include_backfill: env.flag("EVENTS_INCLUDE_BACKFILL", false)?,
            }),
            None => None,
        };
        let ingest = IngestConfig {
            threshold_pct: parse_threshold(env.text("CDC_THRESHOLD_PCT").as_deref())?,
            store_raw: env.flag("STORE_RAW", true)?,
            raw_retention_days: env.whole(RAW_RETENTION_DAYS)?,
            lock_timeout: Duration::from_secs(env.whole(DB_LOCK_TIMEOUT_SECS)?),
            statement_timeout: Duration::from_secs(env.whole(DB_STATEMENT_TIMEOUT_SECS)?),
            publishes_events: events.is_some(),
        };

        Ok(Self {
            coingecko,
            ingest,
            database: database_config(&env)?,
            auto_migrate: env.flag("AUTO_MIGRATE", true)?,
            api_key_secret_id: env.text("COINGECKO_API_KEY_SECRET_ID"),
            events,
        })
    }
}

/// An EventBridge bus name (`prices`, up to 256 of letters, digits and `/._-`) or its ARN.
fn parse_event_bus(value: &str) -> Result<String, ConfigError> {
    let name = match value.strip_prefix("arn:") {
        Some(arn) => {
            let parts: Vec<&str> = arn.splitn(5, ':').collect();
            match parts[..] {
                [_, "events", region, account, resource]
                    if !region.is_empty() && account.len() == 12 =>
                {
                    resource.strip_prefix("event-bus/").unwrap_or("")
                }
                _ => "",
            }
        }
        None => value,
    };
    let valid = (1..=256).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c));
    if valid {
        Ok(value.to_string())
    } else {
        Err(ConfigError::new(
            "EVENT_BUS_NAME",
            format!("{value:?} is not an EventBridge bus name (up to 256 letters, digits and /._-) nor a bus ARN (arn:aws:events:REGION:ACCOUNT:event-bus/NAME); leave it empty to publish no events"),
        ))
    }
}

/// `VS_CURRENCIES` (a comma list) or `VS_CURRENCY` (one), never both; `usd` when neither is set.
fn vs_currencies(env: &Env) -> Result<Vec<String>, ConfigError> {
    let (var, list) =
        match (env.text("VS_CURRENCIES"), env.text("VS_CURRENCY")) {
            (Some(_), Some(_)) => return Err(ConfigError::new(
                "VS_CURRENCIES",
                "VS_CURRENCY is set too: set one of them (VS_CURRENCY=usd is VS_CURRENCIES=usd)",
            )),
            (Some(list), None) => ("VS_CURRENCIES", list),
            (None, Some(one)) => ("VS_CURRENCY", one),
            (None, None) => ("VS_CURRENCY", "usd".to_string()),
        };
    let mut currencies: Vec<String> = Vec::new();
    for code in list.split(',').map(str::trim) {
        if code.is_empty() || !code.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::new(
                var,
                format!("{code:?} is not a currency code such as \"usd\" or \"eur\""),
            ));
        }
        let code = code.to_ascii_lowercase();
        if currencies.contains(&code) {
            return Err(ConfigError::new(var, format!("{code} is listed twice")));
        }
        currencies.push(code);
    }
    Ok(currencies)
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The trimmed value; empty counts as unset, as it does in most deployment tools.
    fn text(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The setting within its bounds, else its default.
    fn whole<T: TryFrom<u64>>(&self, setting: WholeNumber) -> Result<T, ConfigError> {
        let value = self.optional_whole(setting)?.unwrap_or(setting.default);
        T::try_from(value).map_err(|_| setting.refused(&value.to_string()))
    }

    /// The setting within its bounds, if it is set (its default stands for "unset" elsewhere).
    fn optional_whole<T: TryFrom<u64>>(
        &self,
        setting: WholeNumber,
    ) -> Result<Option<T>, ConfigError> {
        let Some(raw) = self.text(setting.var) else {
            return Ok(None);
        };
        // Rust's parse takes a leading `+`; the documented form is digits only.
        let digits = raw.bytes().all(|b| b.is_ascii_digit());
        match raw.parse::<u64>() {
            Ok(value) if digits && (setting.min..=setting.max).contains(&value) => {
                T::try_from(value)
                    .map(Some)
                    .map_err(|_| setting.refused(&raw))
            }
            _ => Err(setting.refused(&raw)),
        }
    }

    fn port(&self, var: &'static str) -> Result<Option<u16>, ConfigError> {
        self.text(var).map(|raw| parse_port(var, &raw)).transpose()
    }

    fn flag(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.text(var).map(|v| v.to_ascii_lowercase()).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes") => Ok(true),
            Some("false" | "0" | "no") => Ok(false),
            Some(other) => Err(ConfigError::new(
                var,
                format!("expected true or false, got {other:?}"),
            )),
        }
    }
}

/// What `application_name` is when neither the connection string nor `PGAPPNAME` sets it.
const APPLICATION_NAME: &str = "coingecko-cdc";
/// libpq's variables for the endpoint; any of them, without `DATABASE_URL`, is a connection string.
const PG_ENDPOINT: [&str; 5] = ["PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE"];
/// Logged while `DB_SSLMODE=require` keeps the meaning it had before libpq's names were adopted.
const REQUIRE_STILL_VERIFIES: &str = "DB_SSLMODE=require verifies the server's certificate chain and host name, as in earlier releases, although libpq's require does not: set DB_SSLMODE=verify-full to keep this and silence this warning, or, for libpq's require (encrypted, not verified), unset DB_SSLMODE and put sslmode=require in DATABASE_URL or PGSSLMODE";
/// Logged for `sslmode=require` in `DATABASE_URL`, which verified the certificate before.
const REQUIRE_NO_LONGER_VERIFIES: &str = "sslmode=require in DATABASE_URL encrypts without verifying the server's certificate, as in libpq (earlier releases verified it): use sslmode=verify-full to verify it (the Amazon RDS roots are built in)";

/// How the function logs in to the database (`DB_AUTH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DbAuth {
    /// A password: from the secret, `DATABASE_URL` or `PGPASSWORD`.
    Secret,
    /// An RDS IAM authentication token.
    Iam,
}

fn db_auth(env: &Env) -> Result<DbAuth, ConfigError> {
    match env.text("DB_AUTH").as_deref() {
        None | Some("secret") => Ok(DbAuth::Secret),
        Some("iam") => Ok(DbAuth::Iam),
        Some(other) => Err(ConfigError::new(
            "DB_AUTH",
            format!("unknown {other:?}: use \"secret\" (a password from DB_SECRET_ID, DATABASE_URL or PGPASSWORD) or \"iam\" (an RDS IAM token)"),
        )),
    }
}

fn database_config(env: &Env) -> Result<DatabaseConfig, ConfigError> {
    if db_auth(env)? == DbAuth::Iam {
        return Ok(DatabaseConfig {
            source: Some(DatabaseSource::Iam(iam_endpoint(env)?)),
            tls: tls_settings(env, None, None, DbAuth::Iam)?,
        });
    }
    let conninfo = env
        .text("DATABASE_URL")
        .map(|text| {
            conninfo::parse(&text).map_err(|problem| {
                ConfigError::new(
                    "DATABASE_URL",
                    format!("not a PostgreSQL connection string such as postgres://user@host:5432/db ({problem})"),
                )
            })
        })
        .transpose()?;
    let application_name = env
        .text("PGAPPNAME")
        .unwrap_or_else(|| APPLICATION_NAME.into());
    let db_port = env.port("DB_PORT")?;
    let (source, url_sslmode, url_sslrootcert) = match env.text("DB_SECRET_ID") {
        Some(secret_id) => {
            let port = match db_port {
                Some(port) => Some(port),
                None => env.port("PGPORT")?,
            };
            let source = DatabaseSource::Secret {
                secret_id,
                host: env.text("DB_HOST").or_else(|| env.text("PGHOST")),
                port,
                dbname: env.text("DB_NAME").or_else(|| env.text("PGDATABASE")),
                application_name,
            };
            (Some(source), None, None)
        }
        None if conninfo.is_some() || PG_ENDPOINT.iter().any(|var| env.text(var).is_some()) => {
            let ConnInfo {
                config,
                sslmode,
                sslrootcert,
            } = conninfo.unwrap_or_else(|| ConnInfo {
                config: tokio_postgres::Config::new(),
                sslmode: None,
                sslrootcert: None,
            });
            let config = completed_from_pg_env(env, config, application_name)?;
            (Some(DatabaseSource::Url(config)), sslmode, sslrootcert)
        }
        None => (None, None, None),
    };
    Ok(DatabaseConfig {
        source,
        tls: tls_settings(env, url_sslmode, url_sslrootcert, DbAuth::Secret)?,
    })
}

/// `DB_AUTH=iam`'s endpoint: `DB_*`, then libpq's `PG*` variables, as with a secret. A password
/// given anywhere else would be ignored, so a secret or a URL beside it is an error.
fn iam_endpoint(env: &Env) -> Result<IamEndpoint, ConfigError> {
    for var in ["DB_SECRET_ID", "DATABASE_URL"] {
        if env.text(var).is_some() {
            return Err(ConfigError::new(
                var,
                "DB_AUTH=iam logs in with a signed token, not a password: unset this, or DB_AUTH",
            ));
        }
    }
    let required = |var: &'static str, fallback: &str, what: &str| {
        env.text(var).or_else(|| env.text(fallback)).ok_or_else(|| {
            ConfigError::new(
                var,
                format!("DB_AUTH=iam signs its token for the {what}: set {var} (or {fallback})"),
            )
        })
    };
    let host = required("DB_HOST", "PGHOST", "database's host name")?;
    let user = required("DB_USER", "PGUSER", "database user")?;
    let region = required("AWS_REGION", "AWS_DEFAULT_REGION", "database's AWS region")?;
    let port = match env.port("DB_PORT")? {
        Some(port) => port,
        None => env.port("PGPORT")?.unwrap_or(5432),
    };
    Ok(IamEndpoint {
        host,
        port,
        user,
        dbname: env
            .text("DB_NAME")
            .or_else(|| env.text("PGDATABASE"))
            .unwrap_or_else(|| "postgres".into()),
        region,
        application_name: env
            .text("PGAPPNAME")
            .unwrap_or_else(|| APPLICATION_NAME.into()),
    })
}

/// Fills what the connection string leaves unset from libpq's variables, then libpq's defaults.
fn completed_from_pg_env(
    env: &Env,
    mut config: tokio_postgres::Config,
    application_name: String,
) -> Result<tokio_postgres::Config, ConfigError> {
    if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
        match env.text("PGHOST") {
            Some(hosts) => {
                for host in hosts.split(',') {
                    config.host(host.trim());
                }
            }
            None => {
                config.host(default_socket_dir());
            }
        }
    }
    if config.get_ports().is_empty() {
        if let Some(ports) = env.text("PGPORT") {
            for port in ports.split(',') {
                config.port(parse_port("PGPORT", port.trim())?);
            }
        }
    }
    if config.get_user().is_none() {
        // libpq's default is the operating system's user name.
        let user = env
            .text("PGUSER")
            .or_else(|| env.text("USER"))
            .ok_or_else(|| {
                ConfigError::new(
                    "PGUSER",
                    "no user name in DATABASE_URL (postgres://user@host/db), PGUSER or USER: give one",
                )
            })?;
        config.user(user);
    }
    if config.get_password().is_none() {
        // Taken as it is: spaces may be part of a password.
        if let Some(password) = (env.0)("PGPASSWORD").filter(|p| !p.is_empty()) {
            config.password(password);
        }
    }
    if config.get_dbname().is_none() {
        if let Some(dbname) = env.text("PGDATABASE") {
            config.dbname(dbname);
        }
    }
    if config.get_application_name().is_none() {
        config.application_name(application_name);
    }
    Ok(config)
}

/// Where libpq finds the server's socket when no host is given: Debian's and Red Hat's builds
/// look in /var/run/postgresql, PostgreSQL's own in /tmp.
fn default_socket_dir() -> &'static str {
    const DISTRIBUTIONS: &str = "/var/run/postgresql";
    if std::path::Path::new(DISTRIBUTIONS).is_dir() {
        DISTRIBUTIONS
    } else {
        "/tmp"
    }
}

/// The TLS mode and roots: our `DB_*` variables first, then the connection string's parameters,
/// then libpq's `PG*` variables (which the connection string overrides, as in libpq). IAM
/// authentication needs TLS: it defaults to `verify-full` and refuses the modes that may go without.
fn tls_settings(
    env: &Env,
    url_sslmode: Option<String>,
    url_sslrootcert: Option<String>,
    auth: DbAuth,
) -> Result<DbTls, ConfigError> {
    let root = [
        ("DB_SSL_ROOT_CERT", env.text("DB_SSL_ROOT_CERT")),
        ("sslrootcert in DATABASE_URL", url_sslrootcert),
        ("PGSSLROOTCERT", env.text("PGSSLROOTCERT")),
    ]
    .into_iter()
    .find_map(|(setting, value)| value.map(|value| (setting, value)));
    // libpq 16's `sslrootcert=system`: the system's roots, which we always trust anyway.
    let system_roots = matches!(&root, Some((_, value)) if value == "system");
    let explicit = [
        ("DB_SSLMODE", env.text("DB_SSLMODE")),
        ("DATABASE_URL", url_sslmode),
        ("PGSSLMODE", env.text("PGSSLMODE")),
    ]
    .into_iter()
    .find_map(|(var, raw)| raw.map(|raw| (var, raw)));
    let (mode, warning) = match explicit {
        None if system_roots || auth == DbAuth::Iam => (SslMode::VerifyFull, None),
        None => (SslMode::Prefer, None),
        Some((var, raw)) => {
            let mode = SslMode::parse(&raw).ok_or_else(|| {
                ConfigError::new(
                    var,
                    format!("unknown sslmode {raw:?}: use {}", SslMode::CHOICES),
                )
            })?;
            let (mode, warning) = match (var, mode) {
                ("DB_SSLMODE", SslMode::Require) => {
                    (SslMode::VerifyFull, Some(REQUIRE_STILL_VERIFIES))
                }
                ("DATABASE_URL", SslMode::Require) if root.is_none() => {
                    (mode, Some(REQUIRE_NO_LONGER_VERIFIES))
                }
                _ => (mode, None),
            };
            if auth == DbAuth::Iam
                && matches!(mode, SslMode::Disable | SslMode::Allow | SslMode::Prefer)
            {
                return Err(ConfigError::new(
                    var,
                    format!("sslmode {raw:?} may connect without TLS, and DB_AUTH=iam needs TLS (RDS refuses IAM logins without it): use require, verify-ca or verify-full, or leave it unset for verify-full"),
                ));
            }
            if system_roots && mode != SslMode::VerifyFull {
                return Err(ConfigError::new(
                    var,
                    format!("weak sslmode {raw:?} may not be used with sslrootcert=system (use \"verify-full\")"),
                ));
            }
            (mode, warning)
        }
    };
    Ok(DbTls {
        mode,
        root_cert: root
            .filter(|_| !system_roots)
            .map(|(setting, path)| RootCert {
                path: PathBuf::from(path),
                setting,
            }),
        warning,
    })
}

fn parse_port(var: &'static str, raw: &str) -> Result<u16, ConfigError> {
    raw.parse::<u16>()
        .map_err(|_| ConfigError::new(var, format!("expected a port number, got {raw:?}")))
}

/// The URL may carry a user name and password (for a proxy): errors show it without them.
fn parse_base_url(raw: &str) -> Result<Url, String> {
    let shown = url_for_errors(raw);
    let url = Url::parse(raw).map_err(|e| format!("{shown:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{shown:?} must start with http:// or https://"));
    }
    Ok(url)
}

fn parse_coin_ids(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut seen = std::collections::HashSet::new();
    let mut ids = Vec::new();
    for (index, id) in list.split(',').map(str::trim).enumerate() {
        // Two commas in a row or one at the end: a coin may have been left out by mistake.
        if id.is_empty() {
            return Err(ConfigError::new(
                "COIN_IDS",
                format!("id number {} is empty: expected a comma-separated list of CoinGecko ids such as bitcoin,ethereum", index + 1),
            ));
        }
        if seen.insert(id) {
            ids.push(id.to_string());
        }
    }
    if ids.len() > MAX_COIN_IDS {
        return Err(ConfigError::new(
            "COIN_IDS",
            format!(
                "{} ids, more than the {MAX_COIN_IDS} a run may ask for",
                ids.len()
            ),
        ));
    }
    Ok(ids)
}

fn parse_threshold(raw: Option<&str>) -> Result<Decimal, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Decimal::new(5, 1));
    };
    let problem = || {
        ConfigError::new(
            "CDC_THRESHOLD_PCT",
            format!(
                "expected a percentage from 0 to 10000 with at most {MAX_THRESHOLD_DECIMALS} decimals, such as 0.5, got {raw:?}"
            ),
        )
    };
    let pct = Decimal::from_str_exact(raw).map_err(|_| problem())?;
    if pct.is_sign_negative() || pct > Decimal::from(10_000) || pct.scale() > MAX_THRESHOLD_DECIMALS
    {
        return Err(problem());
    }
    Ok(pct)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(move |name| {
            vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
        })
    }

    #[test]
    fn defaults_match_the_readme() {
        let cfg = config(&[]).unwrap();
        assert_eq!(cfg.coingecko.base_url.as_str(), FREE_BASE_URL);
        assert_eq!(cfg.coingecko.plan, ApiPlan::Demo);
        assert_eq!(cfg.coingecko.vs_currencies, ["usd"]);
        assert_eq!(cfg.coingecko.selection, CoinSelection::Top(250));
        assert_eq!(cfg.ingest.threshold_pct, Decimal::new(5, 1));
        assert!(cfg.ingest.store_raw);
        assert_eq!(cfg.ingest.raw_retention_days, 7);
        assert!(cfg.auto_migrate);
        assert!(cfg.database.source.is_none());
        assert_eq!(cfg.database.tls.mode, SslMode::Prefer);
    }

    #[test]
    fn pro_plan_switches_the_default_host_and_keeps_the_key() {
        let cfg = config(&[
            ("COINGECKO_API_PLAN", "pro"),
            ("COINGECKO_API_KEY", "k-123"),
        ])
        .unwrap();
        assert_eq!(cfg.coingecko.base_url.as_str(), PRO_BASE_URL);
        assert_eq!(
            cfg.coingecko.api_key.unwrap().expose_secret(),
            "k-123",
            "the key is kept as given"
        );
    }

    #[test]
    fn coin_ids_are_trimmed_and_deduplicated() {
        let cfg = config(&[("COIN_IDS", " bitcoin, ethereum,bitcoin ")]).unwrap();
        assert_eq!(
            cfg.coingecko.selection,
            CoinSelection::Ids(vec!["bitcoin".into(), "ethereum".into()])
        );
    }

    #[test]
    fn every_bad_setting_names_its_variable() {
        let cases = [
            ("TOP_N", "ten"),
            ("TOP_N", "0"),
            ("COINGECKO_API_PLAN", "enterprise"),
            ("COINGECKO_BASE_URL", "not a url"),
            ("COINGECKO_BASE_URL", "ftp://example.com"),
            ("CDC_THRESHOLD_PCT", "-1"),
            ("CDC_THRESHOLD_PCT", "half"),
            ("CDC_THRESHOLD_PCT", "0.0000001"),
            ("STORE_RAW", "maybe"),
            ("RAW_RETENTION_DAYS", "-3"),
            ("DB_LOCK_TIMEOUT_SECS", "0"),
            ("COINGECKO_MAX_CALLS_PER_MIN", "0"),
            ("COINGECKO_MONTHLY_CALL_BUDGET", "ten thousand"),
            ("DB_STATEMENT_TIMEOUT_SECS", "soon"),
            ("AUTO_MIGRATE", "sometimes"),
            ("VS_CURRENCY", "us d"),
            ("VS_CURRENCIES", "usd,,eur"),
            ("VS_CURRENCIES", "usd,EUR,eur"),
            ("COIN_IDS", ",,"),
            ("COIN_IDS", "bitcoin,,ethereum"),
            ("COIN_IDS", "bitcoin,"),
            ("DATABASE_URL", "postgres://u:pw@host:notaport/db"),
            ("DB_PORT", "fifty"),
            ("DB_SSLMODE", "verify_full"),
            ("PGSSLMODE", "strict"),
            ("PGPORT", "fifty"),
            (
                "DATABASE_URL",
                "postgres://u:pw@host/db?sslmode=verify_full",
            ),
            ("DATABASE_URL", "host=h sslcert=/client.pem"),
            ("DB_AUTH", "password"),
            ("EVENT_BUS_NAME", "price moves"),
            (
                "EVENT_BUS_NAME",
                "arn:aws:events:us-east-1:12:event-bus/prices",
            ),
            (
                "EVENT_BUS_NAME",
                "arn:aws:sqs:us-east-1:123456789012:prices",
            ),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn events_are_off_unless_a_bus_is_named_by_name_or_arn() {
        assert_eq!(config(&[]).unwrap().events, None);
        assert!(!config(&[]).unwrap().ingest.publishes_events);
        let arn = "arn:aws:events:eu-west-1:123456789012:event-bus/prices";
        for bus in ["prices", "default", arn] {
            let cfg = config(&[("EVENT_BUS_NAME", bus)]).unwrap();
            assert_eq!(
                cfg.events,
                Some(EventsConfig {
                    bus: bus.into(),
                    include_backfill: false
                })
            );
            assert!(cfg.ingest.publishes_events);
        }
        let both = [
            ("EVENT_BUS_NAME", "prices"),
            ("EVENTS_INCLUDE_BACKFILL", "yes"),
        ];
        assert!(config(&both).unwrap().events.unwrap().include_backfill);
        let bad = [
            ("EVENT_BUS_NAME", "prices"),
            ("EVENTS_INCLUDE_BACKFILL", "all"),
        ];
        assert_eq!(config(&bad).unwrap_err().var, "EVENTS_INCLUDE_BACKFILL");
    }

    /// What each setting came out as, to compare with what was given.
    fn whole_number_value(cfg: &Config, var: &str) -> u64 {
        let secs = |d: Duration| d.as_secs();
        match var {
            "TOP_N" => match cfg.coingecko.selection {
                CoinSelection::Top(n) => n as u64,
                CoinSelection::Ids(_) => panic!("ids"),
            },
            "COINGECKO_MAX_ATTEMPTS" => cfg.coingecko.max_attempts.into(),
            "COINGECKO_TIMEOUT_SECS" => secs(cfg.coingecko.request_timeout),
            "FETCH_BUDGET_SECS" => secs(cfg.coingecko.fetch_budget),
            "COINGECKO_MAX_CALLS_PER_MIN" => cfg.coingecko.max_calls_per_min.unwrap().into(),
            "COINGECKO_MONTHLY_CALL_BUDGET" => cfg.coingecko.monthly_call_budget.unwrap(),
            "RAW_RETENTION_DAYS" => cfg.ingest.raw_retention_days.into(),
            "DB_LOCK_TIMEOUT_SECS" => secs(cfg.ingest.lock_timeout),
            "DB_STATEMENT_TIMEOUT_SECS" => secs(cfg.ingest.statement_timeout),
            other => panic!("not a whole-number setting: {other}"),
        }
    }

    #[test]
    fn every_whole_number_setting_is_taken_up_to_its_bound_and_refused_past_it() {
        for setting in WHOLE_NUMBERS {
            let var = setting.var;
            for value in [setting.min, setting.max] {
                let cfg = config(&[(var, &value.to_string())]).expect(var);
                assert_eq!(whole_number_value(&cfg, var), value, "{var}");
            }
            let past = [
                (setting.max + 1).to_string(),
                u64::MAX.to_string(),
                i64::MAX.to_string(),
                "18446744073709551616".to_string(),
                "-1".to_string(),
                "1.5".to_string(),
                "1e3".to_string(),
                format!("+{}", setting.max),
            ];
            for value in past {
                let err = config(&[(var, &value)]).expect_err(var);
                assert_eq!(err.var, var);
                let text = err.to_string();
                assert!(
                    text.starts_with(&format!(
                        "{var}: expected a whole number from {} to {}",
                        setting.min, setting.max
                    )) && text.contains(&format!("{value:?}")),
                    "{text}"
                );
            }
        }
        let longest_lease = FETCH_BUDGET_SECS.max + DB_LOCK_TIMEOUT_SECS.max;
        assert!(
            longest_lease < 31 * 24 * 3600,
            "the longest lease stays a matter of days"
        );
    }

    #[test]
    fn coin_ids_are_at_most_what_top_n_may_ask_for() {
        let ids = |n: usize| {
            (0..n)
                .map(|i| format!("c{i}"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let cfg = config(&[("COIN_IDS", &ids(MAX_COIN_IDS))]).unwrap();
        assert!(
            matches!(cfg.coingecko.selection, CoinSelection::Ids(ref v) if v.len() == MAX_COIN_IDS)
        );
        let err = config(&[("COIN_IDS", &ids(MAX_COIN_IDS + 1))]).unwrap_err();
        assert_eq!(err.var, "COIN_IDS");
        assert!(err.to_string().contains("100001 ids"), "{err}");
    }

    #[test]
    fn a_bad_base_url_is_shown_without_its_user_information() {
        for url in [
            "http://user:secretpw@[bad",
            "ftp://user:secretpw@example.com",
        ] {
            let err = config(&[("COINGECKO_BASE_URL", url)]).unwrap_err();
            assert_eq!(err.var, "COINGECKO_BASE_URL");
            let text = err.to_string();
            assert!(text.contains("***@"), "{text}");
            assert!(
                !text.contains("secretpw") && !text.contains("user"),
                "{text}"
            );
        }
    }

    #[test]
    fn several_currencies_keep_their_order_and_one_form_excludes_the_other() {
        let cfg = config(&[("VS_CURRENCIES", " usd, EUR ,btc")]).unwrap();
        assert_eq!(cfg.coingecko.vs_currencies, ["usd", "eur", "btc"]);
        let cfg = config(&[("VS_CURRENCY", "EUR")]).unwrap();
        assert_eq!(cfg.coingecko.vs_currencies, ["eur"]);
        let both = config(&[("VS_CURRENCIES", "usd,eur"), ("VS_CURRENCY", "usd")]).unwrap_err();
        let text = both.to_string();
        assert!(
            text.contains("VS_CURRENCIES") && text.contains("VS_CURRENCY is set too"),
            "{text}"
        );
    }

    #[test]
    fn the_secret_wins_over_the_url() {
        let cfg = config(&[
            (
                "DB_SECRET_ID",
                "arn:aws:secretsmanager:eu-west-1:1:secret:db",
            ),
            ("DB_HOST", "db.internal"),
            ("DB_PORT", "6432"),
            ("DATABASE_URL", "postgres://u@h/db?sslmode=disable"),
        ])
        .unwrap();
        assert!(matches!(
            cfg.database.source,
            Some(DatabaseSource::Secret { port: Some(6432), ref host, .. }) if host.as_deref() == Some("db.internal")
        ));
        assert_eq!(
            cfg.database.tls.mode,
            SslMode::Prefer,
            "the URL is not used"
        );
    }

    fn tls(vars: &[(&str, &str)]) -> DbTls {
        config(vars).unwrap().database.tls
    }

    #[test]
    fn the_six_sslmodes_are_accepted_wherever_libpq_accepts_them() {
        for (name, mode) in [
            ("disable", SslMode::Disable),
            ("allow", SslMode::Allow),
            ("prefer", SslMode::Prefer),
            ("verify-ca", SslMode::VerifyCa),
            ("verify-full", SslMode::VerifyFull),
        ] {
            assert_eq!(tls(&[("DB_SSLMODE", name)]).mode, mode);
            assert_eq!(tls(&[("PGSSLMODE", name)]).mode, mode);
            let uri = format!("postgres://u@h/db?sslmode={name}");
            assert_eq!(tls(&[("DATABASE_URL", &uri)]).mode, mode);
            let list = format!("host=h user=u sslmode={name}");
            assert_eq!(tls(&[("DATABASE_URL", &list)]).mode, mode);
        }
    }

    #[test]
    fn require_is_libpqs_except_in_db_sslmode_where_it_still_verifies_and_warns() {
        let ours = tls(&[("DB_SSLMODE", "require")]);
        assert_eq!(ours.mode, SslMode::VerifyFull);
        assert!(ours.warning.unwrap().contains("DB_SSLMODE=verify-full"));

        let libpq = tls(&[("PGSSLMODE", "require")]);
        assert_eq!((libpq.mode, libpq.warning), (SslMode::Require, None));

        let url = tls(&[("DATABASE_URL", "postgres://u@h/db?sslmode=require")]);
        assert_eq!(url.mode, SslMode::Require);
        assert!(
            url.warning.unwrap().contains("sslmode=verify-full"),
            "it verified before: say it no longer does"
        );
        let with_root = tls(&[(
            "DATABASE_URL",
            "postgres://u@h/db?sslmode=require&sslrootcert=/ca.pem",
        )]);
        assert_eq!(
            with_root.warning, None,
            "a root certificate makes libpq's require verify the chain"
        );
    }

    #[test]
    fn db_variables_win_over_the_connection_string_which_wins_over_pg_variables() {
        let url = "postgres://u@h/db?sslmode=verify-ca&sslrootcert=/url.pem";
        let all = [
            ("DB_SSLMODE", "disable"),
            ("DB_SSL_ROOT_CERT", "/db.pem"),
            ("DATABASE_URL", url),
            ("PGSSLMODE", "allow"),
            ("PGSSLROOTCERT", "/pg.pem"),
        ];
        let root = |tls: DbTls| tls.root_cert.map(|r| (r.setting, r.path));
        let ours = tls(&all);
        assert_eq!(ours.mode, SslMode::Disable);
        assert_eq!(
            root(ours),
            Some(("DB_SSL_ROOT_CERT", PathBuf::from("/db.pem")))
        );
        let libpq = tls(&all[2..]);
        assert_eq!(libpq.mode, SslMode::VerifyCa);
        assert_eq!(
            root(libpq),
            Some(("sslrootcert in DATABASE_URL", PathBuf::from("/url.pem")))
        );
        let env_only = tls(&all[3..]);
        assert_eq!(env_only.mode, SslMode::Allow);
        assert_eq!(
            root(env_only),
            Some(("PGSSLROOTCERT", PathBuf::from("/pg.pem")))
        );
    }

    #[test]
    fn sslrootcert_system_means_verify_full_and_refuses_weaker_modes() {
        for vars in [
            vec![("PGSSLROOTCERT", "system")],
            vec![("DATABASE_URL", "postgres://u@h/db?sslrootcert=system")],
            vec![("DB_SSL_ROOT_CERT", "system"), ("DB_SSLMODE", "require")],
        ] {
            let tls = tls(&vars);
            assert_eq!((tls.mode, tls.root_cert), (SslMode::VerifyFull, None));
        }
        let err = config(&[
            (
                "DATABASE_URL",
                "postgres://u:hunter2@h/db?sslrootcert=system",
            ),
            ("PGSSLMODE", "require"),
        ])
        .unwrap_err();
        assert_eq!(err.var, "PGSSLMODE");
        assert!(
            err.to_string().contains(r#"weak sslmode "require""#),
            "{err}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    fn url_config(vars: &[(&str, &str)]) -> tokio_postgres::Config {
        match config(vars).unwrap().database.source {
            Some(DatabaseSource::Url(config)) => config,
            other => panic!("not a connection string: {other:?}"),
        }
    }

    const PG_ENV: [(&str, &str); 6] = [
        ("PGHOST", "pg-host"),
        ("PGPORT", "6543"),
        ("PGUSER", "pg-user"),
        ("PGPASSWORD", " pg password "),
        ("PGDATABASE", "pg-db"),
        ("PGAPPNAME", "pg-app"),
    ];

    #[test]
    fn pg_variables_fill_what_the_connection_string_leaves_unset() {
        use tokio_postgres::config::Host;
        let mut vars = PG_ENV.to_vec();
        vars.push(("DATABASE_URL", "postgres:///"));
        let filled = url_config(&vars);
        assert_eq!(filled.get_hosts(), [Host::Tcp("pg-host".into())]);
        assert_eq!(filled.get_ports(), [6543]);
        assert_eq!(filled.get_user(), Some("pg-user"));
        assert_eq!(filled.get_password(), Some(&b" pg password "[..]));
        assert_eq!(filled.get_dbname(), Some("pg-db"));
        assert_eq!(filled.get_application_name(), Some("pg-app"));
        assert_eq!(
            url_config(&PG_ENV).get_user(),
            Some("pg-user"),
            "the PG* variables alone are a connection string"
        );

        vars.pop();
        vars.push((
            "DATABASE_URL",
            "postgres://u:pw@h:5433/db?application_name=url-app",
        ));
        let given = url_config(&vars);
        assert_eq!(given.get_hosts(), [Host::Tcp("h".into())]);
        assert_eq!(given.get_ports(), [5433]);
        assert_eq!(given.get_user(), Some("u"));
        assert_eq!(given.get_password(), Some(&b"pw"[..]));
        assert_eq!(given.get_dbname(), Some("db"));
        assert_eq!(given.get_application_name(), Some("url-app"));
    }

    #[test]
    fn without_pg_variables_libpqs_defaults_apply_and_the_application_is_named() {
        use tokio_postgres::config::Host;
        let defaults = url_config(&[("DATABASE_URL", "postgres:///db"), ("USER", "os-user")]);
        assert!(
            matches!(defaults.get_hosts(), [Host::Unix(dir)] if dir.starts_with("/var/run/postgresql") || dir.starts_with("/tmp")),
            "{:?}",
            defaults.get_hosts()
        );
        assert_eq!(defaults.get_ports(), [] as [u16; 0], "5432");
        assert_eq!(defaults.get_user(), Some("os-user"));
        assert_eq!(defaults.get_application_name(), Some("coingecko-cdc"));

        let err = config_error(&[("DATABASE_URL", "postgres://h/db")]);
        assert_eq!(err.var, "PGUSER", "{err}");
        assert!(
            config(&[("PGSSLMODE", "require"), ("PGAPPNAME", "x")])
                .unwrap()
                .database
                .source
                .is_none(),
            "TLS settings alone name no database"
        );
    }

    fn config_error(vars: &[(&str, &str)]) -> ConfigError {
        config(vars).unwrap_err()
    }

    #[test]
    fn pg_variables_fill_what_the_secret_and_db_variables_leave_unset() {
        let mut vars = PG_ENV.to_vec();
        vars.push(("DB_SECRET_ID", "db"));
        let source = |vars: &[(&str, &str)]| match config(vars).unwrap().database.source {
            Some(DatabaseSource::Secret {
                host,
                port,
                dbname,
                application_name,
                ..
            }) => (
                host.unwrap(),
                port.unwrap(),
                dbname.unwrap(),
                application_name,
            ),
            other => panic!("not the secret: {other:?}"),
        };
        assert_eq!(
            source(&vars),
            ("pg-host".into(), 6543, "pg-db".into(), "pg-app".into())
        );
        vars.extend([
            ("DB_HOST", "db-host"),
            ("DB_PORT", "7654"),
            ("DB_NAME", "db-name"),
        ]);
        vars.retain(|(var, _)| *var != "PGAPPNAME");
        assert_eq!(
            source(&vars),
            (
                "db-host".into(),
                7654,
                "db-name".into(),
                "coingecko-cdc".into()
            )
        );
    }

    const IAM: [(&str, &str); 4] = [
        ("DB_AUTH", "iam"),
        ("DB_HOST", "db.abc.eu-west-1.rds.amazonaws.com"),
        ("DB_USER", "lambda_ingest"),
        ("AWS_REGION", "eu-west-1"),
    ];

    fn iam(vars: &[(&str, &str)]) -> (IamEndpoint, DbTls) {
        let database = config(vars).unwrap().database;
        match database.source {
            Some(DatabaseSource::Iam(endpoint)) => (endpoint, database.tls),
            other => panic!("not IAM: {other:?}"),
        }
    }

    #[test]
    fn db_auth_iam_signs_for_db_host_db_user_and_the_region_over_verify_full() {
        let (endpoint, tls) = iam(&IAM);
        assert_eq!(
            endpoint,
            IamEndpoint {
                host: "db.abc.eu-west-1.rds.amazonaws.com".into(),
                port: 5432,
                user: "lambda_ingest".into(),
                dbname: "postgres".into(),
                region: "eu-west-1".into(),
                application_name: "coingecko-cdc".into(),
            }
        );
        assert_eq!(
            (tls.mode, tls.root_cert, tls.warning),
            (SslMode::VerifyFull, None, None)
        );

        let mut vars = IAM.to_vec();
        vars.extend([
            ("DB_PORT", "6432"),
            ("DB_NAME", "prices"),
            ("PGAPPNAME", "app"),
            ("DB_SSL_ROOT_CERT", "/ca.pem"),
        ]);
        let (endpoint, tls) = iam(&vars);
        assert_eq!(
            (
                endpoint.port,
                endpoint.dbname.as_str(),
                endpoint.application_name.as_str()
            ),
            (6432, "prices", "app")
        );
        assert_eq!(tls.root_cert.unwrap().path, PathBuf::from("/ca.pem"));

        let (endpoint, _) = iam(&[
            ("DB_AUTH", "iam"),
            ("PGHOST", "pg-host"),
            ("PGPORT", "6543"),
            ("PGUSER", "pg-user"),
            ("PGDATABASE", "pg-db"),
            ("AWS_DEFAULT_REGION", "us-east-2"),
        ]);
        assert_eq!(
            (
                endpoint.host,
                endpoint.port,
                endpoint.user,
                endpoint.dbname,
                endpoint.region
            ),
            (
                "pg-host".into(),
                6543,
                "pg-user".into(),
                "pg-db".into(),
                "us-east-2".into()
            )
        );
    }

    #[test]
    fn db_auth_is_secret_by_default_and_nothing_else_but_iam() {
        let with_secret = [("DB_SECRET_ID", "db"), ("DB_AUTH", "secret")];
        for vars in [&with_secret[..1], &with_secret[..]] {
            assert!(matches!(
                config(vars).unwrap().database.source,
                Some(DatabaseSource::Secret { .. })
            ));
        }
        let err = config_error(&[("DB_AUTH", "IAM")]);
        assert_eq!(err.var, "DB_AUTH");
        assert!(
            err.to_string().contains(r#""secret""#) && err.to_string().contains(r#""iam""#),
            "lists the allowed values: {err}"
        );
    }

    #[test]
    fn db_auth_iam_names_the_missing_host_user_or_region() {
        for missing in ["DB_HOST", "DB_USER", "AWS_REGION"] {
            let vars: Vec<_> = IAM
                .iter()
                .copied()
                .filter(|(var, _)| *var != missing)
                .collect();
            let err = config_error(&vars);
            assert_eq!(err.var, missing);
            assert!(err.to_string().contains("DB_AUTH=iam"), "{err}");
        }
    }

    #[test]
    fn db_auth_iam_refuses_modes_that_may_go_without_tls() {
        for var in ["DB_SSLMODE", "PGSSLMODE"] {
            for mode in ["disable", "allow", "prefer"] {
                let mut vars = IAM.to_vec();
                vars.push((var, mode));
                let err = config_error(&vars);
                assert_eq!(err.var, var);
                let text = err.to_string();
                assert!(
                    text.contains("DB_AUTH=iam") && text.contains(mode),
                    "{text}"
                );
            }
        }
        for (var, mode, expected) in [
            ("DB_SSLMODE", "verify-ca", SslMode::VerifyCa),
            ("DB_SSLMODE", "verify-full", SslMode::VerifyFull),
            ("DB_SSLMODE", "require", SslMode::VerifyFull),
            ("PGSSLMODE", "require", SslMode::Require),
        ] {
            let mut vars = IAM.to_vec();
            vars.push((var, mode));
            assert_eq!(iam(&vars).1.mode, expected, "{var}={mode}");
        }
    }

    #[test]
    fn db_auth_iam_refuses_a_password_it_would_ignore() {
        for (var, value) in [
            (
                "DB_SECRET_ID",
                "arn:aws:secretsmanager:eu-west-1:1:secret:db",
            ),
            ("DATABASE_URL", "postgres://u:hunter2@h/db"),
        ] {
            let mut vars = IAM.to_vec();
            vars.push((var, value));
            let err = config_error(&vars);
            assert_eq!(err.var, var);
            assert!(!err.to_string().contains("hunter2"), "{err}");
        }
    }

    #[test]
    fn a_bad_database_url_names_the_problem_and_not_the_password() {
        for (url, problem) in [
            ("postgres://u:hunter2@host:notaport/db", "`port`"),
            ("postgres://u:hunter2@host/db?sslmode=verify", r#""verify""#),
            ("host=h password=hunter2 sslkey=/k.pem", "`sslkey`"),
            ("postgres://u:hun@ter2@host/db", "looks mis-encoded"),
            ("postgres://u:hun@ter2@host:5432/db", "@ as %40"),
        ] {
            let err = config(&[("DATABASE_URL", url)]).unwrap_err().to_string();
            assert!(err.starts_with("DATABASE_URL: "), "{err}");
            assert!(err.contains(problem), "{err}");
            for part in ["hunter2", "hun", "ter2"] {
                assert!(!err.contains(part), "{part} in {err}");
            }
        }
    }
}
