//! What CoinGecko's answers hold, as exact values. Pure: no I/O.
//!
//! [`page`] parses `/coins/markets`, [`simple_price`] `/simple/price`, [`chart`]
//! `/coins/{id}/market_chart/range`; [`numbers`] reads JSON numbers into `Decimal` without `f64`,
//! and [`Market`] gathers the pages of one fetch.

mod chart;
mod numbers;
mod page;
mod simple_price;

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
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

/// How far ahead of the run's clock a `last_updated` may be before it is refused: clocks differ
/// by seconds, not minutes, and a time further ahead would make every later observation of the
/// coin look older than the one held.
pub const FUTURE_TOLERANCE: TimeDelta = TimeDelta::minutes(5);

/// The earliest `last_updated` taken: Bitcoin's first block (2009-01-03). No coin had a price
/// before it, so an older time (a 1970 epoch zero) is a broken value, not an old observation.
pub fn earliest_plausible_time() -> DateTime<Utc> {
    DateTime::from_timestamp(1_230_940_800, 0).expect("2009-01-03 is a time")
}

/// Gathers the pages of one fetch: keeps each coin id once and at most `limit` coins (or, for
/// `COIN_IDS`, only the ids asked for). Of a coin seen twice (ranks shift during a crawl) the
/// newest valid observation is kept: a price over none, a later `last_updated` over an earlier
/// one, the first of two equal ones.
#[derive(Debug)]
pub struct Market {
    entries: Vec<Entry>,
    warnings: Vec<FieldWarning>,
    /// Where each coin id stands in `entries`.
    places: HashMap<String, usize>,
    limit: Option<usize>,
    asked_for: Option<HashSet<String>>,
    /// What the answer calls a coin's time: `last_updated`, or `/simple/price`'s `last_updated_at`.
    time_field: &'static str,
    repeated_ids: usize,
    unrequested: usize,
}

impl Market {
    /// The first `limit` coins received, or all.
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            entries: Vec::new(),
            warnings: Vec::new(),
            places: HashMap::new(),
            limit,
            asked_for: None,
            time_field: "last_updated",
            repeated_ids: 0,
            unrequested: 0,
        }
    }

    /// The market of a run that asked for exactly `ids` (`COIN_IDS`): other coins are left out.
    pub fn of_ids(ids: &[String]) -> Self {
        Self {
            asked_for: Some(ids.iter().cloned().collect()),
            ..Self::new(None)
        }
    }

    /// A market of `/simple/price` whose coins are already distinct (built from another
    /// market's), received by `received_at`; its times settled.
    fn from_prices(
        entries: Vec<Entry>,
        warnings: Vec<FieldWarning>,
        received_at: DateTime<Utc>,
    ) -> Self {
        let mut market = Self {
            time_field: "last_updated_at",
            ..Self::new(None)
        };
        market.entries = entries
            .into_iter()
            .enumerate()
            .map(|(position, entry)| market.check_time(entry, position, received_at))
            .collect();
        market.warnings = warnings;
        market.complete();
        market
    }

    /// The ids of the coins received, valid and rejected, in the order received.
    pub fn coin_ids(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().filter_map(Entry::coin_id)
    }

    /// Every coin received, valid and rejected, in the order received.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter()
    }

    /// Adds a page received at `received_at` (the run's clock, which no time in it may be far
    /// ahead of).
    pub fn add_page(&mut self, page: ParsedPage, received_at: DateTime<Utc>) {
        let mut kept = HashSet::new();
        for entry in page.entries {
            let position = self.entries.len();
            let entry = self.check_time(entry, position, received_at);
            let Some(id) = entry.coin_id().map(str::to_string) else {
                if !self.is_full() {
                    self.entries.push(entry);
                }
                continue;
            };
            if let Some(&place) = self.places.get(&id) {
                self.repeated_ids += 1;
                if supersedes(&entry, &self.entries[place]) {
                    self.entries[place] = entry;
                    self.warnings.retain(|w| w.coin_id != id);
                    kept.insert(id);
                }
            } else if self
                .asked_for
                .as_ref()
                .is_some_and(|ids| !ids.contains(&id))
            {
                self.unrequested += 1;
            } else if !self.is_full() {
                self.places.insert(id.clone(), position);
                self.entries.push(entry);
                kept.insert(id);
            }
        }
        self.warnings.extend(
            page.warnings
                .into_iter()
                .filter(|w| kept.contains(&w.coin_id)),
        );
    }

    /// Once the answer is whole: a coin without a `last_updated` takes the answer's own time, its
    /// newest `last_updated` (never the run's clock, which would misorder the coin's history);
    /// in an answer without any time such a coin is rejected.
    pub fn complete(&mut self) {
        let answer_time = self.quotes().filter_map(|q| q.source_updated_at).max();
        for (position, entry) in self.entries.iter_mut().enumerate() {
            let Entry::Quote(quote) = entry else { continue };
            if quote.source_updated_at.is_some() {
                continue;
            }
            match answer_time {
                Some(at) => quote.source_updated_at = Some(at),
                None => {
                    *entry = rejected(
                        quote,
                        position,
                        format!(
                            "{} is null and no coin of the answer has one to take",
                            self.time_field
                        ),
                    )
                }
            }
        }
    }

    /// Rejects a quote stamped more than [`FUTURE_TOLERANCE`] ahead of `now`, when it was
    /// received, or before [`earliest_plausible_time`]: taken, either would misorder the coin's
    /// history.
    fn check_time(&self, entry: Entry, position: usize, now: DateTime<Utc>) -> Entry {
        let Entry::Quote(quote) = &entry else {
            return entry;
        };
        let Some(at) = quote.source_updated_at else {
            return entry;
        };
        let (field, stamp) = (
            self.time_field,
            at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        );
        let problem = if at > now + FUTURE_TOLERANCE {
            format!(
                "{field} {stamp} is more than {} minutes ahead of this run's clock ({})",
                FUTURE_TOLERANCE.num_minutes(),
                now.to_rfc3339_opts(SecondsFormat::Secs, true)
            )
        } else if at < earliest_plausible_time() {
            format!("{field} {stamp} is before 2009-01-03, when no coin had a price")
        } else {
            return entry;
        };
        rejected(quote, position, problem)
    }

    pub fn is_full(&self) -> bool {
        self.limit.is_some_and(|limit| self.entries.len() >= limit)
    }

    /// How many entries were dropped because their id had already been seen.
    pub fn repeated_ids(&self) -> usize {
        self.repeated_ids
    }

    /// How many coins the answer carried that were not asked for (`COIN_IDS`): left out.
    pub fn unrequested(&self) -> usize {
        self.unrequested
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

/// Whether `new` is a better observation of its coin than `held`: a price beats none, and of two
/// prices the later `last_updated` (a time beats no time); on a tie the one held stays.
fn supersedes(new: &Entry, held: &Entry) -> bool {
    match (new, held) {
        (Entry::Quote(new), Entry::Quote(held)) => new.source_updated_at > held.source_updated_at,
        (Entry::Quote(_), Entry::Rejected(_)) => true,
        (Entry::Rejected(_), _) => false,
    }
}

fn rejected(quote: &Quote, position: usize, reason: String) -> Entry {
    Entry::Rejected(Rejection {
        coin_id: Some(quote.coin_id.clone()),
        position,
        reason,
        description: quote.description(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-04T15:10:00Z")
            .unwrap()
            .to_utc()
    }

    fn market_of(pages: &[&str]) -> Market {
        let mut market = Market::new(None);
        for page in pages {
            market.add_page(parse_page(page).unwrap(), now());
        }
        market.complete();
        market
    }

    fn quote<'a>(market: &'a Market, id: &str) -> Option<&'a Quote> {
        market.quotes().find(|q| q.coin_id == id)
    }

    fn reason<'a>(market: &'a Market, id: &str) -> &'a str {
        let rejection = market
            .rejections()
            .find(|r| r.coin_id.as_deref() == Some(id));
        &rejection
            .unwrap_or_else(|| panic!("{id} not rejected"))
            .reason
    }

    #[test]
    fn market_keeps_each_coin_once_and_at_most_the_limit() {
        let mut market = Market::new(Some(3));
        market.add_page(
            parse_page(r#"[{"id":"a","current_price":1},{"id":"b","current_price":2}]"#).unwrap(),
            now(),
        );
        market.add_page(
            parse_page(r#"[{"id":"b","current_price":9},{"id":"c","current_price":null},{"id":"d","current_price":4}]"#)
                .unwrap(),
            now(),
        );
        let ids: Vec<&str> = market.quotes().map(|q| q.coin_id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(
            market.quotes().nth(1).unwrap().price,
            Decimal::TWO,
            "of two equally old observations the first stays"
        );
        assert_eq!(market.rejections().count(), 1);
        assert_eq!(market.len(), 3);
        assert!(market.is_full());
        assert_eq!(market.repeated_ids(), 1);
    }

    #[test]
    fn of_a_coin_seen_twice_the_newest_valid_observation_is_kept() {
        let market = market_of(&[
            r#"[{"id":"a","current_price":null},
                {"id":"b","current_price":1,"last_updated":"2026-12-04T15:05:00Z"},
                {"id":"c","current_price":1,"last_updated":"2026-12-04T15:05:00Z","total_supply":"x"}]"#,
            r#"[{"id":"a","current_price":2,"last_updated":"2026-12-04T15:00:00Z"},
                {"id":"b","current_price":3,"last_updated":"2026-12-04T15:03:00Z"},
                {"id":"c","current_price":4,"last_updated":"2026-12-04T15:06:00Z"}]"#,
            r#"[{"id":"b","current_price":null}]"#,
        ]);
        assert_eq!(
            quote(&market, "a").unwrap().price,
            Decimal::TWO,
            "rejected first, valid later"
        );
        assert_eq!(
            quote(&market, "b").unwrap().price,
            Decimal::ONE,
            "newer first, older later"
        );
        assert_eq!(
            quote(&market, "c").unwrap().price,
            Decimal::from(4),
            "older first, newer later"
        );
        assert!(
            market.warnings().is_empty(),
            "the replaced observation's warnings go with it"
        );
        assert_eq!(market.len(), 3);
        assert_eq!(market.repeated_ids(), 4);
    }

    #[test]
    fn times_too_far_ahead_or_before_any_coin_existed_reject_the_coin() {
        let market = market_of(&[r#"[
            {"id":"ahead","current_price":1,"last_updated":"2099-01-01T00:00:00Z"},
            {"id":"epoch","current_price":1,"last_updated":"1970-01-01T00:00:00Z"},
            {"id":"just-ahead","current_price":1,"last_updated":"2026-12-04T15:14:59Z"},
            {"id":"old","current_price":1,"last_updated":"2013-04-28T00:00:00Z"}]"#]);
        assert!(reason(&market, "ahead").contains("last_updated 2099-01-01T00:00:00Z is more than 5 minutes ahead of this run's clock (2026-12-04T15:10:00Z)"), "{}", reason(&market, "ahead"));
        assert!(reason(&market, "epoch")
            .contains("last_updated 1970-01-01T00:00:00Z is before 2009-01-03"));
        assert!(
            quote(&market, "just-ahead").is_some(),
            "within the tolerance"
        );
        assert!(
            quote(&market, "old").is_some(),
            "old but plausible: ordered by the guard, not refused"
        );
    }

    #[test]
    fn a_missing_time_takes_the_answers_newest_never_the_clock() {
        let market = market_of(&[r#"[
            {"id":"a","current_price":1,"last_updated":"2026-12-04T15:00:00Z"},
            {"id":"b","current_price":1,"last_updated":null},
            {"id":"c","current_price":1,"last_updated":"2026-12-04T15:05:00Z"},
            {"id":"d","current_price":1}]"#]);
        let at = |id| {
            quote(&market, id)
                .unwrap()
                .source_updated_at
                .unwrap()
                .to_rfc3339()
        };
        assert_eq!(at("b"), "2026-12-04T15:05:00+00:00");
        assert_eq!(at("d"), "2026-12-04T15:05:00+00:00");
        assert_eq!(at("a"), "2026-12-04T15:00:00+00:00");

        let timeless = market_of(&[r#"[{"id":"a","current_price":1,"last_updated":null}]"#]);
        assert!(reason(&timeless, "a").contains("no coin of the answer has one"));
    }

    #[test]
    fn a_market_of_ids_leaves_out_and_counts_the_coins_not_asked_for() {
        let mut market = Market::of_ids(&["a".into(), "b".into()]);
        market.add_page(
            parse_page(r#"[{"id":"a","current_price":1},{"id":"x","current_price":2},{"id":"b","current_price":null}]"#)
                .unwrap(),
            now(),
        );
        assert_eq!(market.coin_ids().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(market.unrequested(), 1);
    }
}
