//! What CoinGecko's answers hold, as exact values. Pure: no I/O.
//!
//! [`page`] parses `/coins/markets`, [`simple_price`] `/simple/price`, [`chart`]
//! `/coins/{id}/market_chart/range`; [`numbers`] reads JSON numbers into `Decimal` without `f64`,
//! and [`Market`] gathers the pages of one fetch.

mod chart;
mod numbers;
mod page;
mod simple_price;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

pub use chart::{parse_chart, Chart, ChartPoint, SkippedPoint};
pub use numbers::{exact_decimal, jsonb_storable};
pub use page::{api_error_message, parse_page, PageError, ParsedPage};
pub use simple_price::{PriceAnswer, SimplePrices};

/// One coin with a usable price, as CoinGecko wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Quote {
    pub coin_id: String,
    pub symbol: Option<String>,
    pub name: Option<String>,
    /// The URL of the coin's logo.
    pub image: Option<String>,
    pub price: Decimal,
    pub market_cap: Option<Decimal>,
    pub market_cap_rank: Option<i32>,
    pub total_volume: Option<Decimal>,
    pub high_24h: Option<Decimal>,
    pub low_24h: Option<Decimal>,
    pub price_change_24h: Option<Decimal>,
    pub price_change_percentage_24h: Option<Decimal>,
    pub circulating_supply: Option<Decimal>,
    pub total_supply: Option<Decimal>,
    pub max_supply: Option<Decimal>,
    pub source_updated_at: Option<DateTime<Utc>>,
}

impl Quote {
    pub fn description(&self) -> Description {
        Description {
            symbol: self.symbol.clone(),
            name: self.name.clone(),
            image: self.image.clone(),
        }
    }
}

/// A coin left out of the run, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// `None` when the entry had no usable id; `position` then tells which one it was.
    pub coin_id: Option<String>,
    pub position: usize,
    pub reason: String,
    /// What the answer said of the coin, for the currencies in which it does have a price.
    pub description: Description,
}

/// How a coin is shown: what `/coins/markets` says of it besides its prices.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Description {
    pub symbol: Option<String>,
    pub name: Option<String>,
    pub image: Option<String>,
}

/// A field that could not be kept: stored as NULL, the coin is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldWarning {
    pub coin_id: String,
    pub field: &'static str,
    pub problem: String,
}

// Nearly every entry is a Quote: boxing it would only add an allocation per coin.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Quote(Quote),
    Rejected(Rejection),
}

impl Entry {
    fn coin_id(&self) -> Option<&str> {
        match self {
            Entry::Quote(q) => Some(&q.coin_id),
            Entry::Rejected(r) => r.coin_id.as_deref(),
        }
    }
}

/// An answer as received: its text, kept for the raw table.
#[derive(Debug, Clone)]
pub struct RawPage {
    /// `coins/markets` or `simple/price`.
    pub endpoint: &'static str,
    /// The page, or the batch of `/simple/price`, from 1.
    pub number: u32,
    pub body: String,
    pub fetched_at: DateTime<Utc>,
}

/// Gathers the pages of one fetch: keeps each coin id once (its first appearance,
/// since ranks shift during a crawl) and at most `limit` coins.
#[derive(Debug, Default)]
pub struct Market {
    entries: Vec<Entry>,
    warnings: Vec<FieldWarning>,
    seen: HashSet<String>,
    limit: Option<usize>,
    repeated_ids: usize,
}

impl Market {
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            ..Self::default()
        }
    }

    /// A market whose coins are already distinct (built from another market).
    fn from_entries(entries: Vec<Entry>, warnings: Vec<FieldWarning>) -> Self {
        Self {
            entries,
            warnings,
            ..Self::default()
        }
    }

    /// The ids of the coins received, valid and rejected, in the order received.
    pub fn coin_ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(Entry::coin_id)
    }

    /// Every coin received, valid and rejected, in the order received.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    pub fn add_page(&mut self, page: ParsedPage) {
        for entry in page.entries {
            if self.is_full() {
                break;
            }
            match entry.coin_id() {
                Some(id) if !self.seen.insert(id.to_string()) => self.repeated_ids += 1,
                _ => self.entries.push(entry),
            }
        }
        let kept = &self.seen;
        self.warnings.extend(
            page.warnings
                .into_iter()
                .filter(|w| kept.contains(&w.coin_id)),
        );
    }

    pub fn is_full(&self) -> bool {
        self.limit.is_some_and(|limit| self.entries.len() >= limit)
    }

    /// How many entries were dropped because their id had already been seen.
    pub fn repeated_ids(&self) -> usize {
        self.repeated_ids
    }

    pub fn warnings(&self) -> &[FieldWarning] {
        &self.warnings
    }

    /// The distinct coins received, valid and rejected.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn quotes(&self) -> impl Iterator<Item = &Quote> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Quote(q) => Some(q),
            Entry::Rejected(_) => None,
        })
    }

    pub fn rejections(&self) -> impl Iterator<Item = &Rejection> {
        self.entries.iter().filter_map(|e| match e {
            Entry::Rejected(r) => Some(r),
            Entry::Quote(_) => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn market_keeps_first_appearance_and_at_most_the_limit() {
        let mut market = Market::new(Some(3));
        market.add_page(
            parse_page(r#"[{"id":"a","current_price":1},{"id":"b","current_price":2}]"#).unwrap(),
        );
        market.add_page(
            parse_page(r#"[{"id":"b","current_price":9},{"id":"c","current_price":null},{"id":"d","current_price":4}]"#)
                .unwrap(),
        );
        let ids: Vec<&str> = market.quotes().map(|q| q.coin_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(market.quotes().nth(1).unwrap().price, Decimal::TWO);
        assert_eq!(market.rejections().count(), 1);
        assert_eq!(market.len(), 3);
        assert!(market.is_full());
        assert_eq!(market.repeated_ids(), 1);
    }
}
