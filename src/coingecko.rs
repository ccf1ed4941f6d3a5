//! The CoinGecko edge: pages of `GET /coins/markets` in the first currency, then batches of
//! `GET /simple/price` for the others, paced and retried inside one time budget.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::backfill::Chunk;
use crate::config::{ApiPlan, CoinGeckoConfig, CoinSelection};
use crate::market::{
    api_error_message, parse_chart, parse_page, Chart, Market, PageError, RawPage, SimplePrices,
};

/// CoinGecko's largest page.
pub const PER_PAGE: usize = 250;
/// Coins priced by one `/simple/price` call: as many as a page holds, so that the further
/// currencies cost at most as many calls as the pages.
pub const IDS_PER_PRICE_CALL: usize = 250;
/// The ids' text of one `/simple/price` call is kept under this, for the URL's sake: CoinGecko
/// documents no limit, and common proxies refuse URLs over 8 KB.
const ID_BYTES_PER_PRICE_CALL: usize = 6_000;
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(500);
const LONGEST_RETRY_DELAY: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("CoinGecko refused {call} with HTTP {status}: {message}{hint}")]
    Refused {
        call: Call,
        status: u16,
        message: String,
        hint: &'static str,
    },
    #[error("CoinGecko {call} failed after {attempts} attempts (COINGECKO_MAX_ATTEMPTS); last error: {last}")]
    GaveUp {
        call: Call,
        attempts: u32,
        last: String,
    },
    #[error("CoinGecko {call} did not arrive within {limit}; last error: {last}")]
    OutOfTime {
        call: Call,
        limit: TimeLimit,
        last: String,
    },
    #[error("making {calls} calls at {calls_per_min} requests a minute (COINGECKO_MAX_CALLS_PER_MIN) takes at least {needed:?}, more than {limit}: raise COINGECKO_MAX_CALLS_PER_MIN if your CoinGecko plan allows it, give the fetch more time, or lower TOP_N")]
    TooSlowForTheTimeLeft {
        calls: u64,
        calls_per_min: u32,
        needed: Duration,
        limit: TimeLimit,
    },
    /// Error 10012: the plan does not serve history that far back (Demo: the past 365 days).
    #[error("CoinGecko refused {call}: {message} (the Demo plan serves the past 365 days only: backfill fewer days, or set COINGECKO_API_PLAN=pro with a paid plan's key)")]
    OutOfPlanRange { call: Call, message: String },
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error("cannot build the HTTP client: {0}")]
    Tls(#[from] crate::tls::TlsError),
}

/// One request of a fetch, as errors and logs name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// A page of `/coins/markets`, from 1.
    Page(u32),
    /// A batch of `/simple/price`, from 1, of `of`.
    Prices { batch: u32, of: u32 },
    /// `/coins/{id}/market_chart/range` of one chunk of a backfill.
    Chart {
        coin_id: String,
        vs_currency: String,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
}

impl std::fmt::Display for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Call::Page(page) => write!(f, "page {page}"),
            Call::Prices { batch, of } => write!(f, "/simple/price batch {batch} of {of}"),
            Call::Chart {
                coin_id,
                vs_currency,
                from,
                to,
            } => write!(
                f,
                "the {vs_currency} chart of {coin_id} from {} to {}",
                from.format("%Y-%m-%d %H:%M"),
                to.format("%Y-%m-%d %H:%M")
            ),
        }
    }
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

/// The coins of one quote currency.
#[derive(Debug)]
pub struct CurrencyMarket {
    pub vs_currency: String,
    pub market: Market,
}

/// Everything one fetch brought back.
#[derive(Debug)]
pub struct Fetched {
    /// One a currency, in the order configured.
    pub markets: Vec<CurrencyMarket>,
    pub pages: Vec<RawPage>,
    /// Requests sent, retries included.
    pub calls: u64,
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
    calls: u64,
}

/// The calls of one backfill invocation, and how many it has made.
pub struct ChartSession(Fetch);

impl ChartSession {
    /// Requests sent, retries included.
    pub fn calls(&self) -> u64 {
        self.0.calls
    }

    /// When the session's time runs out.
    pub fn deadline(&self) -> Instant {
        self.0.deadline
    }
}

pub struct CoinGeckoClient {
    http: reqwest::Client,
    config: CoinGeckoConfig,
    calls_per_min: u32,
    /// Requests this client has sent, retries included: what a failed fetch spent is counted
    /// from it, as the fetch's own count goes with its error.
    calls_sent: AtomicU64,
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
        // The process's verifying TLS, which the database connections may share.
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(crate::tls::verifying()?)
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
            calls_sent: AtomicU64::new(0),
        })
    }

    /// Requests sent since the client was built, retries and failed ones included.
    pub fn calls_sent(&self) -> u64 {
        self.calls_sent.load(Ordering::Relaxed)
    }

    /// The quote currencies, the first fetched with `/coins/markets`.
    pub fn vs_currencies(&self) -> &[String] {
        &self.config.vs_currencies
    }

    /// How many coins the selection asks for.
    fn expected_coins(&self) -> usize {
        match &self.config.selection {
            CoinSelection::Top(n) => *n,
            CoinSelection::Ids(ids) => ids.len(),
        }
    }

    /// How many pages the selection should take, if CoinGecko has that many coins.
    pub fn expected_pages(&self) -> u64 {
        self.expected_coins().div_ceil(PER_PAGE) as u64
    }

    /// How many calls a run should make: the pages, and the `/simple/price` batches of the
    /// further currencies (as many, whatever their number, when ids are of the usual length).
    pub fn expected_calls(&self) -> u64 {
        let prices = if self.config.vs_currencies.len() > 1 {
            self.expected_coins().div_ceil(IDS_PER_PRICE_CALL) as u64
        } else {
            0
        };
        self.expected_pages() + prices
    }

    /// Fetches pages until the selection is complete or a page comes back short, then prices the
    /// coins received in the further currencies; starts at most `COINGECKO_MAX_CALLS_PER_MIN`
    /// requests a minute, retries included, within `FETCH_BUDGET_SECS` or `time_left`, whichever
    /// is shorter.
    pub async fn fetch(
        &self,
        progress: &dyn FetchProgress,
        time_left: Option<Duration>,
    ) -> Result<Fetched, FetchError> {
        let limit = self.time_limit(time_left);
        let spacing = Duration::from_secs(60) / self.calls_per_min;
        let calls = self.expected_calls();
        let needed = spacing * calls.saturating_sub(1) as u32;
        if needed > limit.duration {
            return Err(FetchError::TooSlowForTheTimeLeft {
                calls,
                calls_per_min: self.calls_per_min,
                needed,
                limit,
            });
        }
        let mut fetch = self.paced(limit);
        let mut market = match &self.config.selection {
            CoinSelection::Top(n) => Market::new(Some(*n)),
            CoinSelection::Ids(ids) => Market::of_ids(ids),
        };
        let mut pages = Vec::new();
        for number in 1.. {
            let call = Call::Page(number);
            let (body, parsed) = self
                .fetch_call(&call, self.page_request(number), &parse_page, &mut fetch)
                .await?;
            let short = parsed.entries.len() < PER_PAGE;
            market.add_page(parsed, Utc::now());
            pages.push(raw_answer("coins/markets", number, body));
            progress.page_fetched(number, market.len());
            if short || market.is_full() {
                break;
            }
        }
        market.complete();
        let further = &self.config.vs_currencies[1..];
        let mut markets = Vec::with_capacity(self.config.vs_currencies.len());
        if !further.is_empty() {
            let mut prices = SimplePrices::new(further);
            let ids: Vec<&str> = market.coin_ids().collect();
            let batches = price_batches(&ids);
            let of = batches.len() as u32;
            for (index, batch) in batches.into_iter().enumerate() {
                let call = Call::Prices {
                    batch: index as u32 + 1,
                    of,
                };
                let request = self.price_request(batch, further);
                let parse = |body: &str| SimplePrices::parse_answer(body, further);
                let (body, answer) = self.fetch_call(&call, request, &parse, &mut fetch).await?;
                prices.add(answer);
                pages.push(raw_answer("simple/price", index as u32 + 1, body));
            }
            let received_at = Utc::now();
            markets.extend(further.iter().map(|currency| CurrencyMarket {
                vs_currency: currency.clone(),
                market: prices.market_in(currency, &market, received_at),
            }));
        }
        markets.insert(
            0,
            CurrencyMarket {
                vs_currency: self.config.vs_currencies[0].clone(),
                market,
            },
        );
        progress.finished();
        Ok(Fetched {
            markets,
            pages,
            calls: fetch.calls,
        })
    }

    /// Requests paced at `COINGECKO_MAX_CALLS_PER_MIN`, ending at `limit`.
    fn paced(&self, limit: TimeLimit) -> Fetch {
        let mut pacer = tokio::time::interval(Duration::from_secs(60) / self.calls_per_min);
        pacer.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Fetch {
            deadline: Instant::now() + limit.duration,
            limit,
            pacer,
            calls: 0,
        }
    }

    /// Requests a minute, as set or as the plan allows.
    pub fn calls_per_min(&self) -> u32 {
        self.calls_per_min
    }

    pub fn plan(&self) -> ApiPlan {
        self.config.plan
    }

    pub fn monthly_call_budget(&self) -> Option<u64> {
        self.config.monthly_call_budget
    }

    pub fn selection(&self) -> &CoinSelection {
        &self.config.selection
    }

    /// `FETCH_BUDGET_SECS`, or `time_left` when that is shorter.
    pub fn time_limit(&self, time_left: Option<Duration>) -> TimeLimit {
        match time_left {
            Some(left) if left < self.config.fetch_budget => TimeLimit {
                duration: left,
                by_deadline: true,
            },
            _ => TimeLimit {
                duration: self.config.fetch_budget,
                by_deadline: false,
            },
        }
    }

    /// The calls of one backfill invocation: paced as a run's, within `limit`.
    pub fn chart_session(&self, limit: TimeLimit) -> ChartSession {
        ChartSession(self.paced(limit))
    }

    /// One chunk of a coin's chart in one currency, retried as a page is.
    pub async fn chart(
        &self,
        session: &mut ChartSession,
        coin_id: &str,
        vs_currency: &str,
        chunk: &Chunk,
    ) -> Result<Chart, FetchError> {
        let call = Call::Chart {
            coin_id: coin_id.to_string(),
            vs_currency: vs_currency.to_string(),
            from: chunk.from,
            to: chunk.to,
        };
        let mut url = self.config.base_url.clone();
        url.path_segments_mut()
            .expect("the base URL is http(s)")
            .pop_if_empty()
            .extend(["coins", coin_id, "market_chart", "range"]);
        let mut query = vec![
            ("vs_currency", vs_currency.to_string()),
            ("from", chunk.from.timestamp().to_string()),
            ("to", chunk.to.timestamp().to_string()),
            ("precision", "full".to_string()),
        ];
        if let Some(interval) = chunk.interval {
            query.push(("interval", interval.to_string()));
        }
        let request = self.http.get(url).query(&query);
        let (_, chart) = self
            .fetch_call(&call, request, &parse_chart, &mut session.0)
            .await?;
        Ok(chart)
    }

    async fn fetch_call<T>(
        &self,
        call: &Call,
        request: reqwest::RequestBuilder,
        parse: &impl Fn(&str) -> Result<T, PageError>,
        fetch: &mut Fetch,
    ) -> Result<(String, T), FetchError> {
        let mut delays = ExponentialBuilder::default()
            .with_min_delay(FIRST_RETRY_DELAY)
            .with_max_delay(LONGEST_RETRY_DELAY)
            .with_max_times(self.config.max_attempts.saturating_sub(1) as usize)
            .with_jitter()
            .build();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let attempt = request
                .try_clone()
                .expect("GET requests have no streamed body");
            let (backoff, last) = match self.attempt(call, attempt, parse, fetch).await {
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
                    call: call.clone(),
                    attempts,
                    last,
                });
            };
            // A Retry-After of any size: past the deadline, or past what an Instant holds.
            let resume = Instant::now().checked_add(wait);
            if resume.is_none_or(|at| at >= fetch.deadline) {
                return Err(FetchError::OutOfTime {
                    call: call.clone(),
                    limit: fetch.limit,
                    last: format!("{last}; the next attempt would be in {wait:?}"),
                });
            }
            tracing::warn!(%call, attempt = attempts, error = %last, retry_in_ms = wait.as_millis() as u64, "CoinGecko call failed, retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn attempt<T>(
        &self,
        call: &Call,
        request: reqwest::RequestBuilder,
        parse: &impl Fn(&str) -> Result<T, PageError>,
        fetch: &mut Fetch,
    ) -> Result<(String, T), AttemptError> {
        fetch.pacer.tick().await;
        let remaining = fetch.deadline.saturating_duration_since(Instant::now());
        let limit = fetch.limit;
        let out_of_time = || {
            AttemptError::Fatal(FetchError::OutOfTime {
                call: call.clone(),
                limit,
                last: "the time ran out during the request".into(),
            })
        };
        if remaining.is_zero() {
            return Err(out_of_time());
        }
        let timeout = remaining.min(self.config.request_timeout);
        fetch.calls += 1;
        self.calls_sent.fetch_add(1, Ordering::Relaxed);
        let response = request
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
        let out_of_plan_range = |error: &PageError| {
            AttemptError::Fatal(FetchError::OutOfPlanRange {
                call: call.clone(),
                message: error.to_string(),
            })
        };
        if !status.is_success() {
            if let Err(error) = parse(&body) {
                if error.is_out_of_plan_range() {
                    return Err(out_of_plan_range(&error));
                }
            }
            return Err(AttemptError::Fatal(FetchError::Refused {
                call: call.clone(),
                status: status.as_u16(),
                message: message_or_preview(&body),
                hint: refusal_hint(status),
            }));
        }
        match parse(&body) {
            Ok(parsed) => Ok((body, parsed)),
            Err(e) if e.is_rate_limit() => Err(AttemptError::RateLimited {
                retry_after,
                detail: e.to_string(),
            }),
            Err(e) if e.is_out_of_plan_range() => Err(out_of_plan_range(&e)),
            Err(PageError::Api { code, message }) if (400..500).contains(&code) => {
                Err(AttemptError::Fatal(FetchError::Refused {
                    call: call.clone(),
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

    fn endpoint(&self, path: &str) -> String {
        format!(
            "{}/{path}",
            self.config.base_url.as_str().trim_end_matches('/')
        )
    }

    fn page_request(&self, page: u32) -> reqwest::RequestBuilder {
        let mut query: Vec<(&str, String)> = vec![
            ("vs_currency", self.config.vs_currencies[0].clone()),
            ("order", "market_cap_desc".into()),
            ("per_page", PER_PAGE.to_string()),
            ("page", page.to_string()),
            ("precision", "full".into()),
        ];
        if let CoinSelection::Ids(ids) = &self.config.selection {
            query.push(("ids", ids.join(",")));
        }
        self.http.get(self.endpoint("coins/markets")).query(&query)
    }

    fn price_request(&self, ids: &[&str], currencies: &[String]) -> reqwest::RequestBuilder {
        let query = [
            ("ids", ids.join(",")),
            ("vs_currencies", currencies.join(",")),
            ("include_market_cap", "true".into()),
            ("include_24hr_vol", "true".into()),
            ("include_24hr_change", "true".into()),
            ("include_last_updated_at", "true".into()),
            ("precision", "full".into()),
        ];
        self.http.get(self.endpoint("simple/price")).query(&query)
    }
}

/// An answer of a run, for the raw table.
fn raw_answer(endpoint: &'static str, number: u32, body: String) -> RawPage {
    RawPage {
        endpoint,
        number,
        body,
        fetched_at: Utc::now(),
    }
}

/// The ids in batches for `/simple/price`: at most [`IDS_PER_PRICE_CALL`] ids and about
/// `ID_BYTES_PER_PRICE_CALL` bytes of them each (an id longer than that goes alone).
fn price_batches<'a, 'b>(ids: &'b [&'a str]) -> Vec<&'b [&'a str]> {
    let mut batches = Vec::new();
    let mut start = 0;
    let mut bytes = 0;
    for (end, id) in ids.iter().enumerate() {
        let full = end - start == IDS_PER_PRICE_CALL || bytes + id.len() > ID_BYTES_PER_PRICE_CALL;
        if full && end > start {
            batches.push(&ids[start..end]);
            start = end;
            bytes = 0;
        }
        bytes += id.len() + 1;
    }
    if start < ids.len() {
        batches.push(&ids[start..]);
    }
    batches
}

fn refusal_hint(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => " (check COINGECKO_API_KEY and COINGECKO_API_PLAN: a pro key needs COINGECKO_API_PLAN=pro)",
        400 | 404 | 422 => " (check VS_CURRENCIES or VS_CURRENCY, COIN_IDS and COINGECKO_BASE_URL)",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_batches_hold_a_page_of_ids_and_keep_the_url_short() {
        let ids: Vec<String> = (0..600).map(|n| format!("coin-{n:04}")).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let sizes: Vec<usize> = price_batches(&ids).iter().map(|b| b.len()).collect();
        assert_eq!(sizes, [250, 250, 100]);

        let long = "x".repeat(2_500);
        let ids = [long.as_str(), "a", long.as_str(), long.as_str(), "b"];
        let batches = price_batches(&ids);
        assert_eq!(batches.concat(), ids, "every id once, in order");
        assert!(
            batches.iter().all(|b| b.len() == 1
                || b.iter().map(|id| id.len() + 1).sum::<usize>() <= ID_BYTES_PER_PRICE_CALL),
            "{:?}",
            batches.iter().map(|b| b.len()).collect::<Vec<_>>()
        );
        let huge = "y".repeat(10_000);
        assert_eq!(price_batches(&[huge.as_str(), "a"]).len(), 2);
        assert!(price_batches(&[]).is_empty());
    }
}
