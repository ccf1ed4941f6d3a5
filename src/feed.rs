//! The change feed's entry: one history row at its position, as `changes`, `changes_since` and
//! the EventBridge events carry it. Pure: no I/O.
//!
//! Prices are exact strings (`Decimal`); the move is a JSON number, rounded to 6 decimals by the
//! database: a ratio, not money, and one that EventBridge's numeric matching can compare. An f64
//! holds any move two prices can make (up to about 8e58 %), where a `Decimal` would overflow.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

/// Where a history row came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// A live run (or a replayed answer): `/coins/markets` or `/simple/price`.
    Live,
    /// A backfill chunk: `/coins/{id}/market_chart/range`.
    Backfill,
}

/// One change: a history row and its position in the feed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Change {
    /// The position: strictly increasing in commit order, without gaps.
    pub seq: i64,
    pub coin_id: String,
    pub symbol: Option<String>,
    pub vs_currency: String,
    pub price: Decimal,
    /// The price of the series' row before this one when this one was recorded (the reference it
    /// moved from); `None` for a series' first row.
    pub previous_price: Option<Decimal>,
    /// The move from `previous_price`, in percent.
    pub pct_change: Option<f64>,
    pub source_updated_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
    pub source: Source,
    /// `hourly` or `daily` for a backfilled row; `None` for a live one.
    pub granularity: Option<String>,
    pub run_id: Uuid,
}

impl Change {
    /// The size of the move, whichever way: one alert rule for rises and falls.
    pub fn abs_pct_change(&self) -> Option<f64> {
        self.pct_change.map(f64::abs)
    }
}

/// A change with its move's size, as an EventBridge event's `detail`.
#[derive(Serialize)]
pub struct EventDetail<'a> {
    #[serde(flatten)]
    pub change: &'a Change,
    pub abs_pct_change: Option<f64>,
}

impl<'a> From<&'a Change> for EventDetail<'a> {
    fn from(change: &'a Change) -> Self {
        EventDetail {
            change,
            abs_pct_change: change.abs_pct_change(),
        }
    }
}

/// The `source` of the events on EventBridge.
pub const EVENT_SOURCE: &str = "coingecko-cdc";
/// Their `detail-type`.
pub const EVENT_DETAIL_TYPE: &str = "price recorded";
/// PutEvents takes at most 10 entries a call, 256 KB together.
const ENTRIES_PER_CALL: usize = 10;
const BYTES_PER_CALL: usize = 256 * 1024;
/// What EventBridge counts for an entry's time.
const TIME_BYTES: usize = 14;

/// One change as an EventBridge entry: its time is when CoinGecko stamped the price.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub seq: i64,
    pub time: DateTime<Utc>,
    /// The detail, as JSON.
    pub detail: String,
}

impl Event {
    pub fn of(change: &Change) -> Self {
        Event {
            seq: change.seq,
            time: change.source_updated_at,
            // A struct of strings and numbers: serialising it cannot fail.
            detail: serde_json::to_string(&EventDetail::from(change)).unwrap_or_default(),
        }
    }

    /// Its size as EventBridge counts it against the limits.
    fn size(&self) -> usize {
        TIME_BYTES + EVENT_SOURCE.len() + EVENT_DETAIL_TYPE.len() + self.detail.len()
    }
}

/// `events` as PutEvents calls, in order: at most 10 a call and 256 KB together. One too large
/// for any call goes alone (EventBridge refuses it, and the publisher says so).
pub fn put_events_calls(events: Vec<Event>) -> Vec<Vec<Event>> {
    let mut calls: Vec<Vec<Event>> = Vec::new();
    let mut bytes = 0;
    for event in events {
        let size = event.size();
        match calls.last_mut() {
            Some(call) if call.len() < ENTRIES_PER_CALL && bytes + size <= BYTES_PER_CALL => {
                bytes += size;
                call.push(event);
            }
            _ => {
                bytes = size;
                calls.push(vec![event]);
            }
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn change(price: &str, previous: Option<&str>, pct: Option<&str>) -> Change {
        let at = DateTime::parse_from_rfc3339("2026-12-08T10:00:00Z")
            .unwrap()
            .to_utc();
        Change {
            seq: 42,
            coin_id: "bitcoin".into(),
            symbol: Some("btc".into()),
            vs_currency: "usd".into(),
            price: Decimal::from_str(price).unwrap(),
            previous_price: previous.map(|p| Decimal::from_str(p).unwrap()),
            pct_change: pct.map(|p| p.parse().unwrap()),
            source_updated_at: at,
            recorded_at: at,
            source: Source::Live,
            granularity: None,
            run_id: Uuid::nil(),
        }
    }

    #[test]
    fn prices_are_exact_strings_and_the_move_a_number() {
        let moved = change("97123.4567890123456789", Some("100000"), Some("-2.876543"));
        let line = serde_json::to_value(&moved).unwrap();
        assert_eq!(line["price"], "97123.4567890123456789");
        assert_eq!(line["previous_price"], "100000");
        assert_eq!(line["pct_change"].as_f64(), Some(-2.876543));
        assert_eq!(line["source"], "live");
        assert_eq!(line["seq"], 42);
        let detail = serde_json::to_value(EventDetail::from(&moved)).unwrap();
        assert_eq!(detail["abs_pct_change"].as_f64(), Some(2.876543));
        assert_eq!(detail["price"], "97123.4567890123456789");
        assert_eq!(detail["coin_id"], "bitcoin");
    }

    #[test]
    fn events_go_ten_a_call_in_order_and_under_256_kb_together() {
        let changes: Vec<Change> = (1..=25)
            .map(|seq| Change {
                seq,
                ..change("1", None, None)
            })
            .collect();
        let calls = put_events_calls(changes.iter().map(Event::of).collect());
        let sizes: Vec<usize> = calls.iter().map(Vec::len).collect();
        assert_eq!(sizes, [10, 10, 5]);
        let seqs: Vec<i64> = calls.iter().flatten().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=25).collect::<Vec<_>>());

        // Coin ids of any length: 100 KB events go two a call, and one too large alone.
        let long = |seq, bytes| Change {
            seq,
            coin_id: "x".repeat(bytes),
            ..change("1", None, None)
        };
        let events: Vec<Event> = [long(1, 100_000), long(2, 100_000), long(3, 100_000)]
            .iter()
            .chain(&[long(4, 300_000), long(5, 10)])
            .map(Event::of)
            .collect();
        let calls = put_events_calls(events);
        let seqs: Vec<Vec<i64>> = calls
            .iter()
            .map(|call| call.iter().map(|e| e.seq).collect())
            .collect();
        assert_eq!(seqs, [vec![1, 2], vec![3], vec![4], vec![5]]);
        for call in calls.iter().filter(|call| call.len() > 1) {
            assert!(call.iter().map(Event::size).sum::<usize>() <= BYTES_PER_CALL);
        }
    }

    #[test]
    fn a_first_row_has_no_previous_price_and_no_move() {
        let first = serde_json::to_value(EventDetail::from(&change("1", None, None))).unwrap();
        assert!(first["previous_price"].is_null());
        assert!(first["pct_change"].is_null());
        assert!(first["abs_pct_change"].is_null());
    }
}
