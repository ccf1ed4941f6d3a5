//! Parsing `/coins/{id}/market_chart/range` answers into exact points. Pure: no I/O.
//!
//! The answer is three arrays of `[milliseconds, number]` pairs. Prices are what a point is
//! for, so a point without a usable price is skipped and counted; market caps and volumes are
//! extras, joined by timestamp, and an unusable one is only left empty.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::numbers::{exact_decimal, preview};
use super::page::{api_error, api_error_message, PageError};

/// One timestamp of a chart, with its price as CoinGecko wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChartPoint {
    pub at: DateTime<Utc>,
    pub price: Decimal,
    pub market_cap: Option<Decimal>,
    pub total_volume: Option<Decimal>,
}

/// An entry of `prices` that gave no point, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedPoint {
    /// `None` when the timestamp itself was unusable.
    pub at: Option<DateTime<Utc>>,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Chart {
    /// Sorted by `at`, one per distinct timestamp.
    pub points: Vec<ChartPoint>,
    /// In the order of `prices`.
    pub skipped: Vec<SkippedPoint>,
}

/// The three series as raw JSON text, each judged on its own.
#[derive(Deserialize)]
struct RawChart<'a> {
    #[serde(borrow)]
    prices: Option<&'a RawValue>,
    #[serde(borrow)]
    market_caps: Option<&'a RawValue>,
    #[serde(borrow)]
    total_volumes: Option<&'a RawValue>,
}

/// Parses one answer. Fails only when the answer as a whole is unusable: a CoinGecko error
/// object (in either of its shapes), or no `prices` array.
pub fn parse_chart(body: &str) -> Result<Chart, PageError> {
    if let Some(error) = api_error(body) {
        return Err(error);
    }
    let malformed = |problem: String| {
        let said = api_error_message(body)
            .map(|m| format!(" (CoinGecko said {m:?})"))
            .unwrap_or_default();
        PageError::Malformed(format!(
            "not a JSON object with a \"prices\" array: {problem}{said}"
        ))
    };
    // A struct would also be read from an array, field by field: only an object will do.
    if !body.trim_start().starts_with('{') {
        return Err(malformed(format!("body starts with {:?}", preview(body))));
    }
    let raw: RawChart = serde_json::from_str(body)
        .map_err(|e| malformed(format!("{e}; body starts with {:?}", preview(body))))?;
    let prices = match raw.prices {
        None => return Err(malformed("\"prices\" is null or missing".into())),
        Some(prices) => entries(prices)
            .ok_or_else(|| malformed(format!("\"prices\" is {:?}", preview(prices.get()))))?,
    };
    let market_caps = amounts_by_time(raw.market_caps);
    let total_volumes = amounts_by_time(raw.total_volumes);

    let mut chart = Chart::default();
    let mut first_entry_at: HashMap<DateTime<Utc>, usize> = HashMap::new();
    for (index, entry) in prices.into_iter().enumerate() {
        let skip = |at: Option<DateTime<Utc>>, problem: String| SkippedPoint {
            at,
            reason: format!("prices entry {index}: {problem}"),
        };
        let (at, price) = match pair(entry) {
            Err(problem) => {
                chart.skipped.push(skip(None, problem));
                continue;
            }
            Ok((at, price)) => (at, price),
        };
        let at = match timestamp(at) {
            Ok(at) => at,
            Err(problem) => {
                chart.skipped.push(skip(None, problem));
                continue;
            }
        };
        let price = match amount(price) {
            Ok(price) => price,
            Err(problem) => {
                chart
                    .skipped
                    .push(skip(Some(at), format!("price {problem}")));
                continue;
            }
        };
        // The first usable price of a timestamp wins, as the first sighting does in a crawl.
        if let Some(first) = first_entry_at.get(&at) {
            let problem = format!("repeats the timestamp of entry {first}, which is kept");
            chart.skipped.push(skip(Some(at), problem));
            continue;
        }
        first_entry_at.insert(at, index);
        chart.points.push(ChartPoint {
            at,
            price,
            market_cap: market_caps.get(&at).copied(),
            total_volume: total_volumes.get(&at).copied(),
        });
    }
    chart.points.sort_by_key(|p| p.at);
    Ok(chart)
}

/// The entries of a JSON array, or `None` when it is not one.
fn entries(series: &RawValue) -> Option<Vec<&RawValue>> {
    serde_json::from_str(series.get()).ok()
}

/// The two halves of a `[timestamp, value]` entry.
fn pair(entry: &RawValue) -> Result<(&RawValue, &RawValue), String> {
    match entries(entry).as_deref() {
        Some(&[at, value]) => Ok((at, value)),
        _ => Err(format!(
            "{} is not a [timestamp, value] pair",
            preview(entry.get())
        )),
    }
}

/// Whole milliseconds since 1970, however the number is written (`1.7040672e12` included).
fn timestamp(raw: &RawValue) -> Result<DateTime<Utc>, String> {
    let text = raw.get();
    let millis = exact_decimal(text).map_err(|problem| format!("timestamp {problem}"))?;
    if !millis.fract().is_zero() {
        return Err(format!(
            "timestamp {text} is not a whole number of milliseconds"
        ));
    }
    if millis.is_sign_negative() && !millis.is_zero() {
        return Err(format!("timestamp {text} is before 1970"));
    }
    i64::try_from(millis)
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| format!("timestamp {text} is out of range"))
}

/// A price, market cap or volume: a number of zero or more, held exactly.
fn amount(raw: &RawValue) -> Result<Decimal, String> {
    if raw.get() == "null" {
        return Err("is null".into());
    }
    let value = exact_decimal(raw.get())?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(format!("{value} is negative"));
    }
    Ok(value)
}

/// The usable values of `market_caps` or `total_volumes` by timestamp, the first of a repeated
/// timestamp kept. A series that is missing or not an array leaves every point without one.
fn amounts_by_time(series: Option<&RawValue>) -> HashMap<DateTime<Utc>, Decimal> {
    let mut by_time = HashMap::new();
    for entry in series.and_then(entries).unwrap_or_default() {
        let Ok((at, value)) = pair(entry) else {
            continue;
        };
        if let (Ok(at), Ok(value)) = (timestamp(at), amount(value)) {
            by_time.entry(at).or_insert(value);
        }
    }
    by_time
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    /// The example answer of CoinGecko's OpenAPI reference (demo-api.json), verbatim.
    const REFERENCE_EXAMPLE: &str = r#"{
  "prices": [[1779027899041, 77953.82550382407], [1779028199661, 78052.87543398788]],
  "market_caps": [[1779027899041, 1560631481361.8042], [1779028199661, 1562027330524.267]],
  "total_volumes": [[1779027899041, 18688431751.857048], [1779028199661, 18974828816.446976]]
}"#;

    fn reasons(chart: &Chart) -> Vec<&str> {
        chart.skipped.iter().map(|s| s.reason.as_str()).collect()
    }

    #[test]
    fn the_reference_example_keeps_every_digit() {
        let chart = parse_chart(REFERENCE_EXAMPLE).unwrap();
        assert_eq!(
            chart.points,
            [
                ChartPoint {
                    at: utc("2026-05-17T14:24:59.041Z"),
                    price: dec("77953.82550382407"),
                    market_cap: Some(dec("1560631481361.8042")),
                    total_volume: Some(dec("18688431751.857048")),
                },
                ChartPoint {
                    at: utc("2026-05-17T14:29:59.661Z"),
                    price: dec("78052.87543398788"),
                    market_cap: Some(dec("1562027330524.267")),
                    total_volume: Some(dec("18974828816.446976")),
                },
            ]
        );
        assert!(chart.skipped.is_empty());
        // Not merely equal in value: written with the same digits.
        assert_eq!(chart.points[0].price.to_string(), "77953.82550382407");
    }

    #[test]
    fn numbers_in_exponent_form_are_exact_and_join_by_value() {
        let chart = parse_chart(
            r#"{"prices":[[1.7040672e12, 3.15e-06]],
                "market_caps":[[1704067200000, 2.1e+15]],
                "total_volumes":[[1704067200000.0, 1E+3]]}"#,
        )
        .unwrap();
        let point = &chart.points[0];
        assert_eq!(point.at, utc("2024-01-01T00:00:00Z"));
        assert_eq!(point.price.to_string(), "0.00000315");
        assert_eq!(point.market_cap.unwrap().to_string(), "2100000000000000");
        assert_eq!(point.total_volume.unwrap().to_string(), "1000");
    }

    #[test]
    fn unusable_prices_skip_their_point_and_say_why() {
        let chart = parse_chart(
            r#"{"prices":[
                [1000, null],
                [2000, -0.01],
                [3000, "12.5"],
                [4000, 1e400],
                [5000, 0],
                [6000, 1],
                [6000.5, 1],
                [-1000, 1],
                [1e17, 1],
                ["7000", 1],
                [8000],
                [9000, 1, 2],
                {"t":10000,"p":1},
                null
            ]}"#,
        )
        .unwrap();
        let at = |ms: i64| DateTime::from_timestamp_millis(ms).unwrap();
        let kept: Vec<_> = chart.points.iter().map(|p| (p.at, p.price)).collect();
        assert_eq!(kept, [(at(5000), Decimal::ZERO), (at(6000), Decimal::ONE)]);
        let skipped_at: Vec<_> = chart.skipped.iter().map(|s| s.at).collect();
        assert_eq!(
            skipped_at,
            [
                Some(at(1000)),
                Some(at(2000)),
                Some(at(3000)),
                Some(at(4000)),
                None,
                None,
                None,
                None,
                None,
                None,
                None,
                None
            ]
        );
        let reasons = reasons(&chart);
        for (index, expected) in [
            (0, "prices entry 0: price is null"),
            (1, "prices entry 1: price -0.01 is negative"),
            (
                4,
                "prices entry 6: timestamp 6000.5 is not a whole number of milliseconds",
            ),
            (5, "prices entry 7: timestamp -1000 is before 1970"),
            (6, "prices entry 8: timestamp 1e17 is out of range"),
            (
                8,
                "prices entry 10: [8000] is not a [timestamp, value] pair",
            ),
        ] {
            assert_eq!(reasons[index], expected);
        }
        assert!(reasons[2].contains("is not a number"), "{reasons:?}");
        assert!(reasons[3].contains("cannot be held exactly"), "{reasons:?}");
        assert!(
            reasons[7].starts_with("prices entry 9: timestamp"),
            "{reasons:?}"
        );
        assert!(
            reasons[11].starts_with("prices entry 13: null"),
            "{reasons:?}"
        );
    }

    #[test]
    fn unusable_market_caps_and_volumes_are_left_empty_and_the_point_kept() {
        let chart = parse_chart(
            r#"{"prices":[[1000,1],[2000,2],[3000,3],[4000,4]],
                "market_caps":[[1000,null],[2000,-5],[3000,"7"],[9000,9],[4000]],
                "total_volumes":{"1000":1}}"#,
        )
        .unwrap();
        assert_eq!(chart.points.len(), 4);
        assert!(chart.skipped.is_empty());
        for point in &chart.points {
            assert_eq!(
                (point.market_cap, point.total_volume),
                (None, None),
                "{point:?}"
            );
        }
        let without_extras = parse_chart(r#"{"prices":[[1000,1]],"market_caps":null}"#).unwrap();
        assert_eq!(without_extras.points[0].market_cap, None);
        assert_eq!(without_extras.points[0].total_volume, None);
    }

    #[test]
    fn a_repeated_timestamp_keeps_its_first_usable_entry() {
        let chart = parse_chart(
            r#"{"prices":[[1000,null],[1000,1],[1000,2],[2000,3]],
                "market_caps":[[1000,"x"],[1000,10],[1000,20]]}"#,
        )
        .unwrap();
        let kept: Vec<_> = chart
            .points
            .iter()
            .map(|p| (p.price, p.market_cap))
            .collect();
        assert_eq!(
            kept,
            [(Decimal::ONE, Some(Decimal::TEN)), (Decimal::from(3), None)]
        );
        assert_eq!(
            reasons(&chart),
            [
                "prices entry 0: price is null",
                "prices entry 2: repeats the timestamp of entry 1, which is kept"
            ]
        );
    }

    #[test]
    fn points_come_out_sorted_and_skips_in_answer_order() {
        let chart =
            parse_chart(r#"{"prices":[[3000,3],[1000,null],[1000,1],[2000,2],[0,-1]]}"#).unwrap();
        let order: Vec<i64> = chart
            .points
            .iter()
            .map(|p| p.at.timestamp_millis())
            .collect();
        assert_eq!(order, [1000, 2000, 3000]);
        let skipped: Vec<_> = chart
            .skipped
            .iter()
            .map(|s| s.at.unwrap().timestamp_millis())
            .collect();
        assert_eq!(skipped, [1000, 0]);
    }

    #[test]
    fn an_empty_range_is_an_empty_chart() {
        let chart = parse_chart(r#"{"prices":[],"market_caps":[],"total_volumes":[]}"#).unwrap();
        assert_eq!(chart, Chart::default());
    }

    #[test]
    fn coingecko_errors_in_both_shapes_are_api_errors() {
        let out_of_range = parse_chart(r#"{"error":{"status":{"timestamp":"2024-03-30T07:22:29.427+00:00","error_code":10012,"error_message":"Your request exceeds the allowed time range. Public API users are limited to querying historical data within the past 365 days. Upgrade to a paid plan to enjoy full historical data access: https://www.coingecko.com/en/api/pricing. "}}}"#)
            .unwrap_err();
        assert!(out_of_range.is_out_of_plan_range(), "{out_of_range:?}");
        assert!(out_of_range.to_string().contains("past 365 days"));
        let limited = parse_chart(
            r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit."}}"#,
        )
        .unwrap_err();
        assert!(limited.is_rate_limit(), "{limited:?}");
        assert!(!limited.is_out_of_plan_range());
    }

    #[test]
    fn answers_without_a_prices_array_are_malformed_and_say_what_was_wrong() {
        for (body, expected) in [
            ("", "body starts with \"\""),
            ("<html>502 Bad Gateway</html>", "body starts with \"<html>"),
            ("[[1000, 1]]", "body starts with \"[[1000, 1]]\""),
            (r#"{"prices":[[1000,1]"#, "EOF while parsing"),
            ("{}", "\"prices\" is null or missing"),
            (r#"{"prices":null}"#, "\"prices\" is null or missing"),
            (
                r#"{"prices":{"1000":1}}"#,
                "\"prices\" is \"{\\\"1000\\\":1}\"",
            ),
            (r#"{"prices":"[]"}"#, "\"prices\" is"),
            (
                r#"{"error":"coin not found"}"#,
                "missing (CoinGecko said \"coin not found\")",
            ),
        ] {
            match parse_chart(body) {
                Err(PageError::Malformed(text)) => {
                    assert!(
                        text.starts_with("not a JSON object with a \"prices\" array: "),
                        "{text}"
                    );
                    assert!(text.contains(expected), "{body:?}: {text}");
                }
                other => panic!("{body:?}: {other:?}"),
            }
        }
    }
}
