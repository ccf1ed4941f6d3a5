//! Typed configuration, read once from the environment before any I/O.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use rust_decimal::Decimal;
use secrecy::SecretString;
use url::Url;

const FREE_BASE_URL: &str = "https://api.coingecko.com/api/v3";
const PRO_BASE_URL: &str = "https://pro-api.coingecko.com/api/v3";
/// More fractional digits than this could make `price × threshold` exceed
/// the 28 digits a `Decimal` holds exactly.
const MAX_THRESHOLD_DECIMALS: u32 = 6;

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
}

#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// `None` when neither `DATABASE_URL` nor `DB_SECRET_ID` is set.
    pub source: Option<DatabaseSource>,
    pub tls: DbTls,
}

#[derive(Debug, Clone)]
pub enum DatabaseSource {
    Url(tokio_postgres::Config),
    /// Credentials in Secrets Manager; what the secret lacks comes from `DB_HOST`, `DB_PORT`, `DB_NAME`.
    Secret {
        secret_id: String,
        host: Option<String>,
        port: Option<u16>,
        dbname: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    /// TLS when the server offers it, without verifying the certificate (as libpq's `prefer`).
    Prefer,
    /// TLS only, with the certificate chain and the host name verified.
    Require,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbTls {
    pub mode: SslMode,
    /// A PEM bundle of extra trusted roots, such as the Amazon RDS CA bundle.
    pub root_cert: Option<PathBuf>,
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
    pub vs_currency: String,
    pub selection: CoinSelection,
    pub max_attempts: u32,
    pub request_timeout: Duration,
    /// Everything the fetch may take, retries and waits included.
    pub fetch_budget: Duration,
    /// Requests a minute; unset: what the plan allows (see `CoinGeckoClient::new`).
    pub max_calls_per_min: Option<u32>,
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
            None => CoinSelection::Top(env.parse_at_least("TOP_N", 250, 1)?),
        };
        let vs_currency = env.text("VS_CURRENCY").unwrap_or_else(|| "usd".into());
        if !vs_currency.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(ConfigError::new(
                "VS_CURRENCY",
                format!("{vs_currency:?} is not a currency code such as \"usd\" or \"eur\""),
            ));
        }

        let coingecko = CoinGeckoConfig {
            base_url,
            plan,
            api_key,
            vs_currency: vs_currency.to_ascii_lowercase(),
            selection,
            max_attempts: env.parse_at_least("COINGECKO_MAX_ATTEMPTS", 5, 1)?,
            request_timeout: Duration::from_secs(env.parse_at_least(
                "COINGECKO_TIMEOUT_SECS",
                15,
                1,
            )?),
            fetch_budget: Duration::from_secs(env.parse_at_least("FETCH_BUDGET_SECS", 60, 1)?),
            max_calls_per_min: match env.text("COINGECKO_MAX_CALLS_PER_MIN") {
                Some(_) => Some(env.parse_at_least("COINGECKO_MAX_CALLS_PER_MIN", 1, 1)?),
                None => None,
            },
        };

        let ingest = IngestConfig {
            threshold_pct: parse_threshold(env.text("CDC_THRESHOLD_PCT").as_deref())?,
            store_raw: env.flag("STORE_RAW", true)?,
            raw_retention_days: env.parse_at_least("RAW_RETENTION_DAYS", 7, 0)?,
            lock_timeout: Duration::from_secs(env.parse_at_least("DB_LOCK_TIMEOUT_SECS", 10, 1)?),
            statement_timeout: Duration::from_secs(env.parse_at_least(
                "DB_STATEMENT_TIMEOUT_SECS",
                10,
                1,
            )?),
        };

        Ok(Self {
            coingecko,
            ingest,
            database: database_config(&env)?,
            auto_migrate: env.flag("AUTO_MIGRATE", true)?,
            api_key_secret_id: env.text("COINGECKO_API_KEY_SECRET_ID"),
        })
    }
}

struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// The trimmed value; empty counts as unset, as it does in most deployment tools.
    fn text(&self, var: &str) -> Option<String> {
        (self.0)(var)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn parse_at_least<T>(&self, var: &'static str, default: T, min: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + std::fmt::Display + Copy,
    {
        let Some(raw) = self.text(var) else {
            return Ok(default);
        };
        match raw.parse::<T>() {
            Ok(v) if v >= min => Ok(v),
            _ => Err(ConfigError::new(
                var,
                format!("expected a whole number of at least {min}, got {raw:?}"),
            )),
        }
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

fn database_config(env: &Env) -> Result<DatabaseConfig, ConfigError> {
    let url = env
        .text("DATABASE_URL")
        .map(|url| {
            // The URL holds the password: the error must not echo it.
            tokio_postgres::Config::from_str(&url).map_err(|e| {
                ConfigError::new(
                    "DATABASE_URL",
                    format!("not a PostgreSQL URL such as postgres://user@host:5432/db ({e})"),
                )
            })
        })
        .transpose()?;
    let port = match env.text("DB_PORT") {
        None => None,
        Some(raw) => Some(raw.parse::<u16>().map_err(|_| {
            ConfigError::new("DB_PORT", format!("expected a port number, got {raw:?}"))
        })?),
    };
    let source = match (env.text("DB_SECRET_ID"), url) {
        (Some(secret_id), _) => Some(DatabaseSource::Secret {
            secret_id,
            host: env.text("DB_HOST"),
            port,
            dbname: env.text("DB_NAME"),
        }),
        (None, Some(url)) => Some(DatabaseSource::Url(url)),
        (None, None) => None,
    };
    let url_mode = match &source {
        Some(DatabaseSource::Url(url)) => url.get_ssl_mode(),
        _ => tokio_postgres::config::SslMode::Prefer,
    };
    let mode = match env.text("DB_SSLMODE").as_deref() {
        Some("disable") => SslMode::Disable,
        Some("prefer") => SslMode::Prefer,
        Some("require") => SslMode::Require,
        Some(other) => {
            return Err(ConfigError::new(
                "DB_SSLMODE",
                format!("unknown mode {other:?}: use disable, prefer or require"),
            ))
        }
        None => match url_mode {
            tokio_postgres::config::SslMode::Disable => SslMode::Disable,
            tokio_postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        },
    };
    Ok(DatabaseConfig {
        source,
        tls: DbTls {
            mode,
            root_cert: env.text("DB_SSL_ROOT_CERT").map(PathBuf::from),
        },
    })
}

fn parse_base_url(raw: &str) -> Result<Url, String> {
    let url = Url::parse(raw).map_err(|e| format!("{raw:?} is not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("{raw:?} must start with http:// or https://"));
    }
    Ok(url)
}

fn parse_coin_ids(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut ids: Vec<String> = Vec::new();
    for id in list.split(',').map(str::trim).filter(|id| !id.is_empty()) {
        if !ids.iter().any(|seen| seen == id) {
            ids.push(id.to_string());
        }
    }
    if ids.is_empty() {
        return Err(ConfigError::new(
            "COIN_IDS",
            "expected a comma-separated list of CoinGecko ids such as bitcoin,ethereum",
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
        assert_eq!(cfg.coingecko.vs_currency, "usd");
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
        let cfg = config(&[("COIN_IDS", " bitcoin, ethereum,,bitcoin ")]).unwrap();
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
            ("DB_STATEMENT_TIMEOUT_SECS", "soon"),
            ("AUTO_MIGRATE", "sometimes"),
            ("VS_CURRENCY", "us d"),
            ("COIN_IDS", ",,"),
            ("DATABASE_URL", "postgres://u:pw@host:notaport/db"),
            ("DB_PORT", "fifty"),
            ("DB_SSLMODE", "verify-full"),
        ];
        for (var, value) in cases {
            let err = config(&[(var, value)]).expect_err(var);
            assert_eq!(err.var, var);
            assert!(err.to_string().starts_with(var), "{err}");
        }
    }

    #[test]
    fn the_secret_wins_over_the_url_and_sslmode_follows_the_url_unless_set() {
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
        let url = config(&[("DATABASE_URL", "postgres://u@h/db?sslmode=require")]).unwrap();
        assert_eq!(url.database.tls.mode, SslMode::Require);
        let overridden = config(&[
            ("DATABASE_URL", "postgres://u@h/db?sslmode=require"),
            ("DB_SSLMODE", "disable"),
        ])
        .unwrap();
        assert_eq!(overridden.database.tls.mode, SslMode::Disable);
    }

    #[test]
    fn a_bad_database_url_does_not_echo_the_password() {
        let err = config(&[("DATABASE_URL", "postgres://u:hunter2@host:notaport/db")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }
}
