//! `/coins/{id}/market_chart/range` on the stub: synthetic answers built from the real
//! `/coins/markets` snapshots of 2024 (`data/daily-2024`), in the shape of CoinGecko's OpenAPI
//! example (`{"prices":[[ms, n],…],"market_caps":[[ms, n],…],"total_volumes":[[ms, n],…]}`),
//! with the faults a backfill has to survive.
//!
//! Requests ask about windows around now and the data is 2024: an instant falls on day
//! `(unix_seconds / 86400) mod 366` of the real year, so it gets the same values in every chunk
//! and call.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{Days, NaiveDate};
use coingecko_cdc::archive::{read_answer, SHIPPED_YEAR};
use coingecko_cdc::backfill::{BackfillRequest, Granularity, Window};
use coingecko_cdc::market::exact_decimal;
use coingecko_cdc::secrets::SecretsManager;
use coingecko_cdc::summary::BackfillSummary;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use wiremock::matchers::{method, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Days in the real year (2024 is a leap year).
pub const DAYS: usize = 366;
const DAY: i64 = 86_400;
const HOUR: i64 = 3_600;
/// A longer window without `interval` comes daily, as CoinGecko's automatic granularity does.
const HOURLY_MAX: i64 = 90 * DAY;

/// CoinGecko's body for error 10012, verbatim.
pub const OUT_OF_RANGE: &str = r#"{"error":{"status":{"timestamp":"2024-03-30T07:22:29.427+00:00","error_code":10012,"error_message":"Your request exceeds the allowed time range. Public API users are limited to querying historical data within the past 365 days. Upgrade to a paid plan to enjoy full historical data access: https://www.coingecko.com/en/api/pricing. "}}}"#;
/// CoinGecko's body for HTTP 429, verbatim.
pub const RATE_LIMITED: &str = r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate limits."}}"#;
pub const COIN_NOT_FOUND: &str = r#"{"error":"coin not found"}"#;

/// The day of the real year an instant falls on.
pub fn day_of(unix_seconds: i64) -> usize {
    unix_seconds.div_euclid(DAY).rem_euclid(DAYS as i64) as usize
}

/// The date of day `day` of the real year, which names its file.
pub fn date(day: usize) -> NaiveDate {
    NaiveDate::from_ymd_opt(2024, 1, 1).unwrap() + Days::new(day as u64)
}

/// The usd values of every coin of `data/daily-2024`, per day, as the JSON text CoinGecko wrote.
pub struct RealYear {
    /// coin → one slot per day, `None` when the coin is not in that day's top 100.
    coins: HashMap<String, Vec<Option<RealDay>>>,
}

/// One coin's row of one day; `None` for a null value.
struct RealDay {
    price: Option<String>,
    market_cap: Option<String>,
    total_volume: Option<String>,
}

#[derive(Clone, Copy)]
enum Series {
    Price,
    MarketCap,
    TotalVolume,
}

/// The fields of a `/coins/markets` row the charts need, their text untouched.
#[derive(Deserialize)]
struct Row<'a> {
    id: String,
    #[serde(borrow)]
    current_price: Option<&'a RawValue>,
    #[serde(borrow)]
    market_cap: Option<&'a RawValue>,
    #[serde(borrow)]
    total_volume: Option<&'a RawValue>,
}

impl RealYear {
    /// The year, read on first use and kept for the process: the 366 files take about a second
    /// of CPU in a debug build (half unzipping, half parsing).
    pub fn get() -> &'static RealYear {
        static YEAR: OnceLock<RealYear> = OnceLock::new();
        YEAR.get_or_init(RealYear::load)
    }

    fn load() -> RealYear {
        // Unzipping and parsing 29 MB of JSON is slow unoptimised: one share of the days a core.
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let days: Vec<usize> = (0..DAYS).collect();
        let rows_by_day: Vec<Vec<(String, RealDay)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = days
                .chunks(DAYS.div_ceil(threads))
                .map(|share| {
                    scope.spawn(|| share.iter().map(|&day| rows_of(day)).collect::<Vec<_>>())
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|worker| worker.join().expect("reading the real year"))
                .collect()
        });
        let mut coins: HashMap<String, Vec<Option<RealDay>>> = HashMap::new();
        for (day, rows) in rows_by_day.into_iter().enumerate() {
            for (id, row) in rows {
                coins
                    .entry(id)
                    .or_insert_with(|| (0..DAYS).map(|_| None).collect())[day] = Some(row);
            }
        }
        RealYear { coins }
    }

    /// Whether the coin is in the top 100 on any day of the year.
    /// Every coin of the year, in a stable order.
    pub fn coin_ids(&self) -> Vec<&str> {
        let mut ids: Vec<&str> = self.coins.keys().map(String::as_str).collect();
        ids.sort();
        ids
    }

    pub fn knows(&self, coin: &str) -> bool {
        self.coins.contains_key(coin)
    }

    pub fn price(&self, coin: &str, day: usize) -> Option<&str> {
        self.value(coin, day, Series::Price)
    }

    pub fn market_cap(&self, coin: &str, day: usize) -> Option<&str> {
        self.value(coin, day, Series::MarketCap)
    }

    pub fn total_volume(&self, coin: &str, day: usize) -> Option<&str> {
        self.value(coin, day, Series::TotalVolume)
    }

    fn value(&self, coin: &str, day: usize, series: Series) -> Option<&str> {
        let row = self.coins.get(coin)?[day].as_ref()?;
        match series {
            Series::Price => row.price.as_deref(),
            Series::MarketCap => row.market_cap.as_deref(),
            Series::TotalVolume => row.total_volume.as_deref(),
        }
    }

    /// The usd value at a whole hour: the real text at midnight; later in the day the straight
    /// line towards the next day's value, rounded to two more decimals than the more precise of
    /// the two (banker's rounding), without trailing zeros. Flat when the next day has none.
    fn at(&self, coin: &str, unix_seconds: i64, series: Series) -> Option<String> {
        let day = day_of(unix_seconds);
        let hour = unix_seconds.rem_euclid(DAY) / HOUR;
        let today = self.value(coin, day, series)?;
        let next = match self.value(coin, (day + 1) % DAYS, series) {
            Some(next) if hour > 0 => next,
            _ => return Some(today.to_string()),
        };
        let (today, next) = (decimal(today), decimal(next));
        let mixed =
            (today * Decimal::from(24 - hour) + next * Decimal::from(hour)) / Decimal::from(24);
        let decimals = today.scale().max(next.scale()) + 2;
        Some(mixed.round_dp(decimals).normalize().to_string())
    }
}

/// The rows of one day's file, by coin id.
fn rows_of(day: usize) -> Vec<(String, RealDay)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(SHIPPED_YEAR)
        .join(format!("markets-{}.json.gz", date(day)));
    let text = read_answer(&path).unwrap_or_else(|e| panic!("{e}"));
    let rows: Vec<Row> =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let text = |value: Option<&RawValue>| value.map(|v| v.get().to_string());
    rows.into_iter()
        .map(|row| {
            let values = RealDay {
                price: text(row.current_price),
                market_cap: text(row.market_cap),
                total_volume: text(row.total_volume),
            };
            (row.id, values)
        })
        .collect()
}

fn decimal(text: &str) -> Decimal {
    exact_decimal(text).unwrap_or_else(|e| panic!("{e}"))
}

/// A usd value in `vs_currency`: usd as given, the others multiplied by a fixed rate, without
/// trailing zeros. Exact: the year's values have at most 12 decimals (14 interpolated), far
/// from the 28 a `Decimal` holds.
fn in_currency(usd: String, vs_currency: &str) -> String {
    let rate = match vs_currency {
        "usd" => return usd,
        "eur" => Decimal::new(92, 2),
        "gbp" => Decimal::new(79, 2),
        "btc" => Decimal::new(235, 7),
        _ => Decimal::new(15, 1),
    };
    (decimal(&usd) * rate).normalize().to_string()
}

/// One point as served: milliseconds, then the price, market cap and total volume as written.
pub type ServedPoint = (i64, String, Option<String>, Option<String>);

/// What one request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartRequest {
    pub coin_id: String,
    pub vs_currency: String,
    pub from: i64,
    pub to: i64,
    pub interval: Option<String>,
    pub precision: Option<String>,
}

/// Answers `market_chart/range` from the real year; the faults set here apply to every clone,
/// the mounted one included.
#[derive(Clone, Default)]
pub struct ChartBook {
    faults: Arc<Mutex<Faults>>,
    requests: Arc<Mutex<Vec<ChartRequest>>>,
}

#[derive(Default)]
struct Faults {
    /// coin → the HTTP status of its 10012 answer.
    refused: HashMap<String, u16>,
    /// 1-based numbers of the requests answered 429.
    rate_limited: HashSet<usize>,
    delay: Duration,
}

impl ChartBook {
    /// Answers every request for `coin` with error 10012, as HTTP 401: CoinGecko documents no
    /// status for 10012 and the quoted bodies come without one; 401 is a guess (a plan's refusal).
    pub fn refuse_range(&self, coin: &str) {
        self.refuse_range_with_status(coin, 401);
    }

    pub fn refuse_range_with_status(&self, coin: &str, status: u16) {
        self.faults
            .lock()
            .unwrap()
            .refused
            .insert(coin.into(), status);
    }

    /// Answers the `n`-th request (1-based, of every request this book answered) with HTTP 429
    /// and `retry-after: 1`.
    pub fn rate_limit_call(&self, n: usize) {
        self.faults.lock().unwrap().rate_limited.insert(n);
    }

    /// Delays every answer by `delay`.
    pub fn delay(&self, delay: Duration) {
        self.faults.lock().unwrap().delay = delay;
    }

    /// Every request read, in arrival order.
    pub fn requests(&self) -> Vec<ChartRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// The points a request for this window gets, in order: one per UTC midnight in
    /// `[from, to]` (unix seconds) when `interval` is `daily` or the window is over 90 days,
    /// else one per whole hour. A day the coin is not in the top 100 has no point.
    pub fn expected_points(
        &self,
        coin: &str,
        vs_currency: &str,
        from: i64,
        to: i64,
        interval: Option<&str>,
    ) -> Vec<ServedPoint> {
        let step = if interval == Some("daily") || to - from > HOURLY_MAX {
            DAY
        } else {
            HOUR
        };
        let year = RealYear::get();
        let value = |at: i64, series: Series| {
            year.at(coin, at, series)
                .map(|usd| in_currency(usd, vs_currency))
        };
        // The first multiple of `step` at or after `from`.
        let first = from + (-from).rem_euclid(step);
        (first..=to)
            .step_by(step as usize)
            .filter_map(|at| {
                Some((
                    at * 1000,
                    value(at, Series::Price)?,
                    value(at, Series::MarketCap),
                    value(at, Series::TotalVolume),
                ))
            })
            .collect()
    }

    /// Serves this book as `/coins/{id}/market_chart/range` on `stub`, beside what it serves.
    pub async fn serve_on(&self, stub: &MockServer) {
        Mock::given(method("GET"))
            .and(path_regex(r"^/coins/[^/]+/market_chart/range$"))
            .respond_with(self.clone())
            .mount(stub)
            .await;
    }

    fn answer(&self, asked: &ChartRequest, call: usize, faults: &Faults) -> ResponseTemplate {
        if faults.rate_limited.contains(&call) {
            return json(429, RATE_LIMITED.into()).insert_header("retry-after", "1");
        }
        if let Some(&status) = faults.refused.get(&asked.coin_id) {
            return json(status, OUT_OF_RANGE.into());
        }
        // `bitcoin~7` is bitcoin again, under another id: for more coins than the year holds.
        let real_id = asked.coin_id.split('~').next().unwrap_or_default();
        if !RealYear::get().knows(real_id) {
            return json(404, COIN_NOT_FOUND.into());
        }
        let points = self.expected_points(
            real_id,
            &asked.vs_currency,
            asked.from,
            asked.to,
            asked.interval.as_deref(),
        );
        let series = |pick: fn(&ServedPoint) -> Option<&str>| {
            let pairs: Vec<String> = points
                .iter()
                .filter_map(|point| Some(format!("[{},{}]", point.0, pick(point)?)))
                .collect();
            pairs.join(",")
        };
        json(
            200,
            format!(
                r#"{{"prices":[{}],"market_caps":[{}],"total_volumes":[{}]}}"#,
                series(|p| Some(&p.1)),
                series(|p| p.2.as_deref()),
                series(|p| p.3.as_deref()),
            ),
        )
    }
}

impl Respond for ChartBook {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let faults = self.faults.lock().unwrap();
        // A request the backfill should never send is answered 400, neither recorded nor counted.
        let answer = match read_request(request) {
            Err(problem) => json(400, serde_json::json!({ "error": problem }).to_string()),
            Ok(asked) => {
                let call = {
                    let mut requests = self.requests.lock().unwrap();
                    requests.push(asked.clone());
                    requests.len()
                };
                self.answer(&asked, call, &faults)
            }
        };
        answer.set_delay(faults.delay)
    }
}

fn read_request(request: &Request) -> Result<ChartRequest, String> {
    let param = |name: &str| super::param_of(request, name);
    let required = |name: &str| param(name).ok_or(format!("missing parameter {name}"));
    let seconds = |name: &str| {
        let text = required(name)?;
        text.parse::<i64>()
            .map_err(|_| format!("{name}={text} is not whole unix seconds"))
    };
    // The mount's path regex: /coins/{id}/market_chart/range.
    let id = request.url.path_segments().and_then(|mut s| s.nth(1));
    Ok(ChartRequest {
        coin_id: percent_encoding::percent_decode_str(id.unwrap_or_default())
            .decode_utf8_lossy()
            .into_owned(),
        vs_currency: required("vs_currency")?,
        from: seconds("from")?,
        to: seconds("to")?,
        interval: param("interval"),
        precision: param("precision"),
    })
}

fn json(status: u16, body: String) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_raw(body, "application/json")
}

/// A daily backfill of bitcoin's August 2024 on the Pro plan, its answers from a [`ChartBook`]:
/// the month before the live fixtures' first day (2024-09-05).
pub async fn backfill_august_2024(app: &mut super::TestApp) -> BackfillSummary {
    app.set("COINGECKO_API_PLAN", "pro");
    ChartBook::default().serve_on(&app.coingecko).await;
    let august = BackfillRequest::new(
        Window::Range {
            from: "2024-08-01T00:00:00Z".parse().unwrap(),
            to: Some("2024-09-01T00:00:00Z".parse().unwrap()),
        },
        Some(vec!["bitcoin".into()]),
        Granularity::Daily,
    )
    .unwrap();
    app.app_with(&[], SecretsManager::default())
        .await
        .backfill(&august, None)
        .await
        .expect("the backfill of August 2024")
}
