//! The `market_chart/range` stub itself: real 2024 values served digit for digit, hourly points
//! interpolated exactly, currencies by exact rates, and its injected faults.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use coingecko_cdc::archive::read_answer;
use coingecko_cdc::market::parse_chart;
use common::market_chart::{
    date, day_of, ChartBook, ChartRequest, RealYear, ServedPoint, COIN_NOT_FOUND, OUT_OF_RANGE,
    RATE_LIMITED,
};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;
use wiremock::MockServer;

const DAY: i64 = 86_400;

fn unix(y: i32, m: u32, d: u32, h: u32) -> i64 {
    Utc.with_ymd_and_hms(y, m, d, h, 0, 0).unwrap().timestamp()
}

async fn stub(book: &ChartBook) -> MockServer {
    let stub = MockServer::start().await;
    book.serve_on(&stub).await;
    stub
}

struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

async fn get(stub: &MockServer, coin: &str, query: &str) -> Answer {
    let response = reqwest::get(format!(
        "{}/coins/{coin}/market_chart/range?{query}",
        stub.uri()
    ))
    .await
    .unwrap();
    Answer {
        status: response.status().as_u16(),
        retry_after: response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_string()),
        body: response.text().await.unwrap(),
    }
}

fn query(vs_currency: &str, from: i64, to: i64) -> String {
    format!("vs_currency={vs_currency}&from={from}&to={to}&precision=full")
}

/// The served series as written: milliseconds and the number's text.
#[derive(Deserialize)]
struct Served<'a> {
    #[serde(borrow)]
    prices: Vec<(i64, &'a RawValue)>,
    #[serde(borrow)]
    market_caps: Vec<(i64, &'a RawValue)>,
    #[serde(borrow)]
    total_volumes: Vec<(i64, &'a RawValue)>,
}

fn texts(series: &[(i64, &RawValue)]) -> Vec<(i64, String)> {
    series
        .iter()
        .map(|(ms, value)| (*ms, value.get().to_string()))
        .collect()
}

/// The body exactly as `expected_points` says, and as many points by the crate's parser.
fn assert_served(body: &str, expected: &[ServedPoint]) {
    let served: Served = serde_json::from_str(body).unwrap();
    let pick = |value: fn(&ServedPoint) -> Option<String>| {
        expected
            .iter()
            .filter_map(|p| Some((p.0, value(p)?)))
            .collect::<Vec<_>>()
    };
    assert_eq!(texts(&served.prices), pick(|p| Some(p.1.clone())));
    assert_eq!(texts(&served.market_caps), pick(|p| p.2.clone()));
    assert_eq!(texts(&served.total_volumes), pick(|p| p.3.clone()));
    let chart = parse_chart(body).unwrap();
    assert_eq!(chart.points.len(), expected.len());
    assert!(chart.skipped.is_empty(), "{:?}", chart.skipped);
}

/// `field` of `coin` in the recorded file of `day`, as written there.
fn recorded(day: usize, coin: &str, field: &str) -> String {
    let path = format!(
        "{}/data/daily-2024/markets-{}.json.gz",
        env!("CARGO_MANIFEST_DIR"),
        date(day)
    );
    let text = read_answer(path.as_ref()).unwrap();
    let rows: Vec<HashMap<String, Box<RawValue>>> = serde_json::from_str(&text).unwrap();
    let row = rows
        .iter()
        .find(|row| row["id"].get() == format!("\"{coin}\""))
        .unwrap();
    row[field].get().to_string()
}

fn dec(text: &str) -> Decimal {
    coingecko_cdc::market::exact_decimal(text).unwrap()
}

#[tokio::test]
async fn daily_points_are_the_recorded_values_digit_for_digit() {
    let book = ChartBook::default();
    let stub = stub(&book).await;
    let to = unix(2026, 5, 20, 12);
    let from = to - 120 * DAY;

    let answer = get(&stub, "bitcoin", &query("usd", from, to)).await;

    assert_eq!(answer.status, 200);
    let expected = book.expected_points("bitcoin", "usd", from, to, None);
    assert_served(&answer.body, &expected);
    assert_eq!(expected.len(), 120);
    assert!(expected.iter().all(|p| p.0 % (DAY * 1000) == 0));
    for point in [&expected[0], &expected[77]] {
        let day = day_of(point.0 / 1000);
        assert_eq!(point.1, recorded(day, "bitcoin", "current_price"));
        assert_eq!(
            point.2.as_deref(),
            Some(recorded(day, "bitcoin", "market_cap").as_str())
        );
        assert_eq!(
            point.3.as_deref(),
            Some(recorded(day, "bitcoin", "total_volume").as_str())
        );
    }
    // Shorter windows with interval=daily, as chunks, get the same points.
    let mid = from + 60 * DAY;
    let mut chunks = book.expected_points("bitcoin", "usd", from, mid, Some("daily"));
    chunks.extend(book.expected_points("bitcoin", "usd", mid + 1, to, Some("daily")));
    assert_eq!(chunks, expected);
}

#[tokio::test]
async fn hourly_points_interpolate_the_real_days_exactly() {
    let book = ChartBook::default();
    let stub = stub(&book).await;
    let from = unix(2026, 3, 1, 0);
    let to = from + 10 * DAY;

    let answer = get(&stub, "bitcoin", &query("usd", from, to)).await;

    let expected = book.expected_points("bitcoin", "usd", from, to, None);
    assert_served(&answer.body, &expected);
    assert_eq!(expected.len(), 241);
    let year = RealYear::get();
    let day = day_of(from);
    let (today, next) = (
        year.price("bitcoin", day).unwrap(),
        year.price("bitcoin", day + 1).unwrap(),
    );
    assert_eq!(expected[0].1, today);
    assert_eq!(
        dec(&expected[6].1),
        (dec(today) * Decimal::from(3) + dec(next)) / Decimal::from(4)
    );
    assert_eq!(
        dec(&expected[12].1),
        (dec(today) + dec(next)) / Decimal::TWO
    );
    assert_eq!(expected[24].1, next);
    // What the crate reads back is written with the same digits.
    let chart = parse_chart(&answer.body).unwrap();
    for (point, served) in chart.points.iter().zip(&expected) {
        assert_eq!(point.price.to_string(), served.1);
    }
    // The midnights agree with the daily answer.
    let midnights: Vec<_> = expected.iter().step_by(24).cloned().collect();
    assert_eq!(
        midnights,
        book.expected_points("bitcoin", "usd", from, to, Some("daily"))
    );
}

#[tokio::test]
async fn other_currencies_are_usd_times_a_fixed_rate_exactly() {
    let book = ChartBook::default();
    let stub = stub(&book).await;
    let from = unix(2026, 3, 1, 0);
    let to = from + 3 * DAY;
    let usd = parse_chart(&get(&stub, "ethereum", &query("usd", from, to)).await.body).unwrap();

    for (currency, rate) in [
        ("eur", "0.92"),
        ("gbp", "0.79"),
        ("btc", "0.0000235"),
        ("jpy", "1.5"),
    ] {
        let other = get(&stub, "ethereum", &query(currency, from, to))
            .await
            .body;
        assert_served(
            &other,
            &book.expected_points("ethereum", currency, from, to, None),
        );
        let other = parse_chart(&other).unwrap();
        assert_eq!(other.points.len(), usd.points.len());
        let times = |value: Option<Decimal>| value.map(|v| v * dec(rate));
        for (other, usd) in other.points.iter().zip(&usd.points) {
            assert_eq!(other.at, usd.at);
            assert_eq!(other.price, usd.price * dec(rate), "{currency}");
            assert_eq!(other.market_cap, times(usd.market_cap), "{currency}");
            assert_eq!(other.total_volume, times(usd.total_volume), "{currency}");
        }
    }
}

#[tokio::test]
async fn refused_coins_answer_10012_and_unknown_coins_404() {
    let book = ChartBook::default();
    let stub = stub(&book).await;
    book.refuse_range("bitcoin");
    book.refuse_range_with_status("ethereum", 200);
    let (from, to) = (unix(2026, 3, 1, 0), unix(2026, 3, 2, 0));

    let bitcoin = get(&stub, "bitcoin", &query("usd", from, to)).await;
    let ethereum = get(&stub, "ethereum", &query("usd", from, to)).await;
    let tether = get(&stub, "tether", &query("usd", from, to)).await;
    let unknown = get(&stub, "no-such-coin", &query("usd", from, to)).await;

    assert_eq!((bitcoin.status, bitcoin.body.as_str()), (401, OUT_OF_RANGE));
    assert_eq!(
        (ethereum.status, ethereum.body.as_str()),
        (200, OUT_OF_RANGE)
    );
    for refused in [&bitcoin, &ethereum] {
        assert!(parse_chart(&refused.body)
            .unwrap_err()
            .is_out_of_plan_range());
    }
    assert_eq!(tether.status, 200);
    assert_eq!(parse_chart(&tether.body).unwrap().points.len(), 25);
    assert_eq!(
        (unknown.status, unknown.body.as_str()),
        (404, COIN_NOT_FOUND)
    );
}

#[tokio::test]
async fn the_nth_request_is_rate_limited_and_every_request_recorded() {
    let book = ChartBook::default();
    let stub = stub(&book).await;
    book.rate_limit_call(2);
    let from = unix(2026, 3, 1, 0);

    let mut answers = Vec::new();
    for (n, to) in [from + DAY, from + 2 * DAY, from + 3 * DAY]
        .into_iter()
        .enumerate()
    {
        let interval = if n == 2 { "&interval=daily" } else { "" };
        answers.push(get(&stub, "bitcoin", &(query("usd", from, to) + interval)).await);
    }

    let statuses: Vec<_> = answers.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [200, 429, 200]);
    assert_eq!(answers[1].body, RATE_LIMITED);
    assert_eq!(answers[1].retry_after.as_deref(), Some("1"));
    assert!(parse_chart(&answers[1].body).unwrap_err().is_rate_limit());
    let asked = |to: i64, interval: Option<&str>| ChartRequest {
        coin_id: "bitcoin".into(),
        vs_currency: "usd".into(),
        from,
        to,
        interval: interval.map(String::from),
        precision: Some("full".into()),
    };
    assert_eq!(
        book.requests(),
        [
            asked(from + DAY, None),
            asked(from + 2 * DAY, None),
            asked(from + 3 * DAY, Some("daily"))
        ]
    );
}

#[tokio::test]
async fn every_answer_waits_the_delay() {
    let book = ChartBook::default();
    let stub = stub(&book).await;
    book.delay(Duration::from_millis(300));
    let started = Instant::now();

    let answer = get(&stub, "bitcoin", &query("usd", 0, DAY)).await;

    assert_eq!(answer.status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
}
