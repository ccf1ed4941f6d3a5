//! The CoinGecko edge: pages of `GET /coins/markets`, with retries inside a time budget.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::config::{ApiPlan, CoinGeckoConfig, CoinSelection};
use crate::market::{api_error_message, parse_page, Market, PageError, ParsedPage, RawPage};

/// CoinGecko's largest page.
pub const PER_PAGE: usize = 250;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const LONGEST_RETRY_DELAY: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("CoinGecko refused page {page} with HTTP {status}: {message}{hint}")]
    Refused {
        page: u32,
        status: u16,
        message: String,
        hint: &'static str,
    },
    #[error("CoinGecko page {page} failed after {attempts} attempts (COINGECKO_MAX_ATTEMPTS); last error: {last}")]
    GaveUp {
        page: u32,
        attempts: u32,
        last: String,
    },
    #[error("CoinGecko page {page} did not arrive within {limit}; last error: {last}")]
    OutOfTime {
        page: u32,
        limit: TimeLimit,
        last: String,
    },
    #[error("fetching {pages} pages at {calls_per_min} requests a minute (COINGECKO_MAX_CALLS_PER_MIN) takes at least {needed:?}, more than {limit}: raise COINGECKO_MAX_CALLS_PER_MIN if your CoinGecko plan allows it, give the fetch more time, or lower TOP_N")]
    TooSlowForTheTimeLeft {
        pages: u64,
        calls_per_min: u32,
        needed: Duration,
        limit: TimeLimit,
    },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// How long a fetch may take, and which setting says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeLimit {
    pub duration: Duration,
    /// Set by the Lambda's deadline rather than by `FETCH_BUDGET_SECS`.
    pub by_deadline: bool,
}

impl std::fmt::Display for TimeLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.by_deadline {
            write!(f, "the {:?} left before the function times out, less the apply's DB_LOCK_TIMEOUT_SECS and DB_STATEMENT_TIMEOUT_SECS (raise the function's Timeout)", self.duration)
        } else {
            write!(
                f,
                "the fetch budget of {:?} (FETCH_BUDGET_SECS)",
                self.duration
            )
        }
    }
}

/// Requests a minute when `COINGECKO_MAX_CALLS_PER_MIN` is unset: CoinGecko's published limits
/// for the keyless public API, the Demo plan and the paid plans (Analyst and above).
fn plan_calls_per_min(plan: ApiPlan, has_key: bool) -> u32 {
    match (plan, has_key) {
        (ApiPlan::Pro, _) => 500,
        (ApiPlan::Demo, true) => 30,
        (ApiPlan::Demo, false) => 10,
    }
}

/// Everything one fetch brought back.
#[derive(Debug)]
pub struct Fetched {
    pub market: Market,
    pub pages: Vec<RawPage>,
}

/// Told of each page as it arrives: a progress bar on a terminal, log lines elsewhere.
pub trait FetchProgress: Send + Sync {
    fn page_fetched(&self, page: u32, coins: usize);
    fn finished(&self) {}
}

/// One log line per page: for logs that are read later (CloudWatch, cron mail).
pub struct LogProgress;

impl FetchProgress for LogProgress {
    fn page_fetched(&self, page: u32, coins: usize) {
        tracing::info!(page, coins, "page fetched");
    }
}

/// Why one attempt at a page failed, and whether another attempt may help.
enum AttemptError {
    RateLimited {
        retry_after: Option<Duration>,
        detail: String,
    },
    Transient(String),
    Fatal(FetchError),
}

/// The limits of one fetch: when it must end, and the pace of its requests.
struct Fetch {
    deadline: Instant,
    limit: TimeLimit,
    pacer: Interval,
}

pub struct CoinGeckoClient {
    http: reqwest::Client,
    config: CoinGeckoConfig,
    calls_per_min: u32,
}

impl CoinGeckoClient {
    pub fn new(config: CoinGeckoConfig) -> Result<Self, FetchError> {
        let mut headers = HeaderMap::new();
        if let Some(key) = &config.api_key {
            let name = match config.plan {
                ApiPlan::Demo => "x-cg-demo-api-key",
                ApiPlan::Pro => "x-cg-pro-api-key",
            };
            if let Ok(mut value) = HeaderValue::from_str(key.expose_secret()) {
                // Keeps the key out of reqwest's Debug output and HTTP/2 header tables.
                value.set_sensitive(true);
                headers.insert(name, value);
            }
        }
        let http = reqwest::Client::builder()
            .user_agent(concat!("coingecko-cdc/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .build()?;
        let calls_per_min = config
            .max_calls_per_min
            .unwrap_or_else(|| plan_calls_per_min(config.plan, config.api_key.is_some()));
        Ok(Self {
            http,
            config,
            calls_per_min,
        })
    }

    pub fn vs_currency(&self) -> &str {
        &self.config.vs_currency
    }

    /// How many pages the selection should take, if CoinGecko has that many coins.
    pub fn expected_pages(&self) -> u64 {
        let coins = match &self.config.selection {
            CoinSelection::Top(n) => *n,
            CoinSelection::Ids(ids) => ids.len(),
        };
        coins.div_ceil(PER_PAGE) as u64
    }

    /// Fetches pages until the selection is complete or a page comes back short, starting at
    /// most `COINGECKO_MAX_CALLS_PER_MIN` requests a minute, retries included, within
    /// `FETCH_BUDGET_SECS` or `time_left`, whichever is shorter.
    pub async fn fetch(
        &self,
        progress: &dyn FetchProgress,
        time_left: Option<Duration>,
    ) -> Result<Fetched, FetchError> {
        let limit = match time_left {
            Some(left) if left < self.config.fetch_budget => TimeLimit {
                duration: left,
                by_deadline: true,
            },
            _ => TimeLimit {
                duration: self.config.fetch_budget,
                by_deadline: false,
            },
        };
        let spacing = Duration::from_secs(60) / self.calls_per_min;
        let pages = self.expected_pages();
        let needed = spacing * pages.saturating_sub(1) as u32;
        if needed > limit.duration {
            return Err(FetchError::TooSlowForTheTimeLeft {
                pages,
                calls_per_min: self.calls_per_min,
                needed,
                limit,
            });
        }
        let mut pacer = tokio::time::interval(spacing);
        pacer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut fetch = Fetch {
            deadline: Instant::now() + limit.duration,
            limit,
            pacer,
        };
        let limit = match &self.config.selection {
            CoinSelection::Top(n) => Some(*n),
            CoinSelection::Ids(_) => None,
        };
        let mut market = Market::new(limit);
        let mut pages = Vec::new();
        for number in 1.. {
            let (body, parsed) = self.fetch_page(number, &mut fetch).await?;
            let short = parsed.entries.len() < PER_PAGE;
            market.add_page(parsed);
            pages.push(RawPage {
                number,
                body,
                fetched_at: Utc::now(),
            });
            progress.page_fetched(number, market.len());
            if short || market.is_full() {
                break;
            }
        }
        progress.finished();
        Ok(Fetched { market, pages })
    }

    async fn fetch_page(
        &self,
        page: u32,
        fetch: &mut Fetch,
    ) -> Result<(String, ParsedPage), FetchError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(FIRST_RETRY_DELAY)
            .with_max_delay(LONGEST_RETRY_DELAY)
            .with_max_times(self.config.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (backoff, last) = match self.attempt(page, fetch).await {
                Ok(fetched) => return Ok(fetched),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::RateLimited {
                    retry_after,
                    detail,
                }) => (delays.next().map(|d| retry_after.unwrap_or(d)), detail),
                Err(AttemptError::Transient(detail)) => (delays.next(), detail),
            };
            let Some(wait) = backoff else {
                return Err(FetchError::GaveUp {
                    page,
                    attempts,
                    last,
                });
            };
            if Instant::now() + wait >= fetch.deadline {
                return Err(FetchError::OutOfTime {
                    page,
                    limit: fetch.limit,
                    last: format!("{last}; the next attempt would be in {wait:?}"),
                });
            }
            tracing::warn!(page, attempt = attempts, error = %last, retry_in_ms = wait.as_millis() as u64, "CoinGecko page failed, retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt(
        &self,
        page: u32,
        fetch: &mut Fetch,
    ) -> Result<(String, ParsedPage), AttemptError> {
        fetch.pacer.tick().await;
        let remaining = fetch.deadline.saturating_duration_since(Instant::now());
        let limit = fetch.limit;
        let out_of_time = || {
            AttemptError::Fatal(FetchError::OutOfTime {
                page,
                limit,
                last: "the time ran out during the request".into(),
            })
        };
        if remaining.is_zero() {
            return Err(out_of_time());
        }
        let timeout = remaining.min(self.config.request_timeout);
        let response = self
            .request(page)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| AttemptError::Transient(describe_transport(&e, timeout)))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(parse_retry_after);
        let body = response
            .text()
            .await
            .map_err(|e| AttemptError::Transient(describe_transport(&e, timeout)))?;

        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(AttemptError::RateLimited {
                retry_after,
                detail: format!("HTTP 429 rate limited: {}", message_or_preview(&body)),
            });
        }
        if status.is_server_error() {
            return Err(AttemptError::Transient(format!(
                "HTTP {}: {}",
                status.as_u16(),
                message_or_preview(&body)
            )));
        }
        if !status.is_success() {
            return Err(AttemptError::Fatal(FetchError::Refused {
                page,
                status: status.as_u16(),
                message: message_or_preview(&body),
                hint: refusal_hint(status),
            }));
        }
        match parse_page(&body) {
            Ok(parsed) => Ok((body, parsed)),
            Err(e) if e.is_rate_limit() => Err(AttemptError::RateLimited {
                retry_after,
                detail: e.to_string(),
            }),
            Err(PageError::Api { code, message }) if (400..500).contains(&code) => {
                Err(AttemptError::Fatal(FetchError::Refused {
                    page,
                    status: code,
                    message,
                    hint: refusal_hint(
                        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
                    ),
                }))
            }
            Err(e) => Err(AttemptError::Transient(e.to_string())),
        }
    }

    fn request(&self, page: u32) -> reqwest::RequestBuilder {
        let url = format!(
            "{}/coins/markets",
            self.config.base_url.as_str().trim_end_matches('/')
        );
        let mut query: Vec<(&str, String)> = vec![
            ("vs_currency", self.config.vs_currency.clone()),
            ("order", "market_cap_desc".into()),
            ("per_page", PER_PAGE.to_string()),
            ("page", page.to_string()),
            ("precision", "full".into()),
        ];
        if let CoinSelection::Ids(ids) = &self.config.selection {
            query.push(("ids", ids.join(",")));
        }
        self.http.get(url).query(&query)
    }
}

fn refusal_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => " (check COINGECKO_API_KEY and COINGECKO_API_PLAN: a pro key needs COINGECKO_API_PLAN=pro)",
        400 | 404 | 422 => " (check VS_CURRENCY, COIN_IDS and COINGECKO_BASE_URL)",
        _ => "",
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    let text = value.to_str().ok()?.trim();
    if let Ok(seconds) = text.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = DateTime::parse_from_rfc2822(text).ok()?;
    (at.with_timezone(&Utc) - Utc::now())
        .to_std()
        .ok()
        .or(Some(Duration::ZERO))
}

fn describe_transport(error: &reqwest::Error, timeout: Duration) -> String {
    if error.is_timeout() {
        return format!("no complete answer within {timeout:?}");
    }
    // reqwest's own text stops at "error sending request"; the cause is in the sources.
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn message_or_preview(body: &str) -> String {
    api_error_message(body).unwrap_or_else(|| {
        let trimmed = body.trim();
        let cut: String = trimmed.chars().take(200).collect();
        if cut.len() < trimmed.len() {
            format!("{cut}…")
        } else {
            cut
        }
    })
}
