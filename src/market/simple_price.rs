//! `/simple/price` answers, and the market of a further currency built from them. Pure: no I/O.
//!
//! One call prices a batch of coins in every further currency at once (`vs_currencies` is a comma
//! list), so the calls of a run grow with its coins, not with its currencies. The answer is
//! `{"bitcoin": {"eur": 61234.5, "eur_market_cap": …, "eur_24h_vol": …, "eur_24h_change": …,
//! "last_updated_at": 1711356300}}`; every number is read from its text, as on `/coins/markets`.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde_json::value::RawValue;

use super::numbers::{exact_decimal, preview};
use super::page::api_error;
use super::{Entry, FieldWarning, Market, PageError, Quote, Rejection};

/// One coin's values in one currency; a field that could not be read is the reason why.
#[derive(Debug, Clone, PartialEq)]
struct CurrencyValues {
    price: Result<Decimal, String>,
    market_cap: Option<Result<Decimal, String>>,
    total_volume: Option<Result<Decimal, String>>,
    change_pct_24h: Option<Result<Decimal, String>>,
}

#[derive(Debug, Clone, PartialEq)]
struct CoinValues {
    updated_at: Option<Result<DateTime<Utc>, String>>,
    /// In the order of the currencies asked for.
    currencies: Vec<CurrencyValues>,
}

/// One `/simple/price` answer, read.
#[derive(Debug, Default)]
pub struct PriceAnswer(HashMap<String, CoinValues>);

/// What the `/simple/price` answers of one run said, coin by coin.
#[derive(Debug, Default)]
pub struct SimplePrices {
    currencies: Vec<String>,
    coins: HashMap<String, CoinValues>,
}

impl SimplePrices {
    /// For answers asked in `currencies` (the further currencies of a run).
    pub fn new(currencies: &[String]) -> Self {
        Self {
            currencies: currencies.to_vec(),
            coins: HashMap::new(),
        }
    }

    /// Reads one answer asked in `currencies`. Fails only when the answer as a whole is unusable
    /// (CoinGecko's error object, or not an object of objects); a coin or currency without a
    /// usable price is only missing from it.
    pub fn parse_answer(body: &str, currencies: &[String]) -> Result<PriceAnswer, PageError> {
        if let Some(error) = api_error(body) {
            return Err(error);
        }
        let coins: HashMap<String, HashMap<String, &RawValue>> = serde_json::from_str(body)
            .map_err(|e| {
                PageError::Malformed(format!(
                    "not an object of coins' prices: {e}; body starts with {:?}",
                    preview(body)
                ))
            })?;
        let mut answer = PriceAnswer::default();
        for (coin_id, fields) in coins {
            // A null is no value, as on `/coins/markets`; only a bad value is a warning.
            let number = |key: &str| {
                let raw = fields.get(key).map(|v| v.get()).filter(|&v| v != "null");
                raw.map(exact_decimal)
            };
            let currencies = currencies
                .iter()
                .map(|c| CurrencyValues {
                    price: match (number(c), fields.contains_key(c.as_str())) {
                        (Some(Ok(p)), _) if p.is_sign_negative() && !p.is_zero() => {
                            Err(format!("{p} is negative"))
                        }
                        (Some(Ok(p)), _) => Ok(p),
                        (Some(Err(problem)), _) => Err(problem),
                        (None, true) => Err("null".to_string()),
                        (None, false) => Err("missing".to_string()),
                    },
                    market_cap: number(&format!("{c}_market_cap")),
                    total_volume: number(&format!("{c}_24h_vol")),
                    change_pct_24h: number(&format!("{c}_24h_change")),
                })
                .collect();
            let updated_at = fields
                .get("last_updated_at")
                .map(|v| v.get())
                .filter(|&v| v != "null")
                .map(unix_seconds);
            answer.0.insert(
                coin_id,
                CoinValues {
                    updated_at,
                    currencies,
                },
            );
        }
        Ok(answer)
    }

    /// Adds an answer read by [`SimplePrices::parse_answer`] with this run's currencies.
    pub fn add(&mut self, answer: PriceAnswer) {
        self.coins.extend(answer.0);
    }

    /// The market of the further currency `currency`: the coins of `primary` (the `/coins/markets`
    /// answer in the first currency), in its order, each priced from these answers or rejected
    /// when they hold no usable price for it. What does not depend on the currency (the rank,
    /// the supplies, the description) comes from `primary`; the 24-hour high, low and change
    /// in money are not in `/simple/price` and stay empty. `received_at`: when the answers were
    /// in, which no time in them may be far ahead of.
    pub fn market_in(
        &self,
        currency: &str,
        primary: &Market,
        received_at: DateTime<Utc>,
    ) -> Market {
        let index = self.currencies.iter().position(|c| c == currency);
        let mut entries = Vec::with_capacity(primary.len());
        let mut warnings = Vec::new();
        for (position, entry) in primary.entries().enumerate() {
            let (coin_id, described, description) = match entry {
                Entry::Quote(q) => (q.coin_id.as_str(), Some(q), q.description()),
                Entry::Rejected(Rejection {
                    coin_id: Some(id),
                    description,
                    ..
                }) => (id.as_str(), None, description.clone()),
                Entry::Rejected(r) => {
                    entries.push(Entry::Rejected(r.clone()));
                    continue;
                }
            };
            let reject = |reason: String| {
                Entry::Rejected(Rejection {
                    coin_id: Some(coin_id.to_string()),
                    position,
                    reason,
                    description: description.clone(),
                })
            };
            let Some(coin) = self.coins.get(coin_id) else {
                entries.push(reject(format!(
                    "not in /simple/price's answer, so no {currency} price"
                )));
                continue;
            };
            let Some(values) = index.map(|i| &coin.currencies[i]) else {
                entries.push(reject(format!("{currency} was not asked for")));
                continue;
            };
            let price = match &values.price {
                Ok(price) => *price,
                Err(problem) => {
                    entries.push(reject(format!("{currency} price is {problem}")));
                    continue;
                }
            };
            let mut keep =
                |field: &'static str, value: &Option<Result<Decimal, String>>| match value {
                    Some(Err(problem)) => {
                        warnings.push(FieldWarning {
                            coin_id: coin_id.to_string(),
                            field,
                            problem: problem.clone(),
                        });
                        None
                    }
                    Some(Ok(v)) => Some(*v),
                    None => None,
                };
            let market_cap = keep("market_cap", &values.market_cap);
            let total_volume = keep("total_volume", &values.total_volume);
            let change_pct = keep("price_change_percentage_24h", &values.change_pct_24h);
            let source_updated_at = match &coin.updated_at {
                Some(Ok(at)) => Some(*at),
                Some(Err(problem)) => {
                    entries.push(reject(format!("last_updated_at {problem}")));
                    continue;
                }
                None => None,
            };
            entries.push(Entry::Quote(Quote {
                coin_id: coin_id.to_string(),
                symbol: description.symbol,
                name: description.name,
                image: description.image,
                price,
                market_cap,
                market_cap_rank: described.and_then(|q| q.market_cap_rank),
                total_volume,
                high_24h: None,
                low_24h: None,
                price_change_24h: None,
                price_change_percentage_24h: change_pct,
                circulating_supply: described.and_then(|q| q.circulating_supply),
                total_supply: described.and_then(|q| q.total_supply),
                max_supply: described.and_then(|q| q.max_supply),
                source_updated_at,
            }));
        }
        Market::from_prices(entries, warnings, received_at)
    }
}

/// `last_updated_at`: whole seconds since the epoch.
fn unix_seconds(text: &str) -> Result<DateTime<Utc>, String> {
    let seconds = exact_decimal(text)?;
    if !seconds.fract().is_zero() {
        return Err(format!("{text} is not a whole number of seconds"));
    }
    let whole = seconds.trunc();
    i64::try_from(whole.mantissa() / 10i128.pow(whole.scale()))
        .ok()
        .and_then(|s| DateTime::from_timestamp(s, 0))
        .ok_or_else(|| format!("{text} is not a time"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::parse_page;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn primary() -> Market {
        let mut market = Market::new(None);
        market.add_page(
            parse_page(
                r#"[
                {"id":"bitcoin","symbol":"btc","name":"Bitcoin","image":"b.png","current_price":58083,"market_cap_rank":1,"total_supply":21000000.0,"high_24h":59000},
                {"id":"no-usd","symbol":"nu","name":"No Usd","current_price":null},
                {"id":"gone","current_price":1},
                {"current_price":2}
            ]"#,
            )
            .unwrap(),
            Utc::now(),
        );
        market
    }

    fn prices(body: &str) -> SimplePrices {
        let currencies = ["eur".to_string(), "btc".to_string()];
        let mut prices = SimplePrices::new(&currencies);
        prices.add(SimplePrices::parse_answer(body, &currencies).unwrap());
        prices
    }

    const ANSWER: &str = r#"{
        "bitcoin": {"eur": 53456.123456789012345, "eur_market_cap": 1.05e12, "eur_24h_vol": null,
                    "eur_24h_change": -1.4093297098441402, "btc": 1.0, "last_updated_at": 1779092258},
        "no-usd": {"eur": 3.15e-06, "btc": null}
    }"#;

    #[test]
    fn each_further_currency_gets_the_coins_of_the_first_in_their_order_digit_for_digit() {
        let eur = prices(ANSWER).market_in("eur", &primary(), Utc::now());
        assert_eq!(eur.len(), 4, "every coin of the first currency is counted");
        let quotes: Vec<&Quote> = eur.quotes().collect();
        let ids: Vec<&str> = quotes.iter().map(|q| q.coin_id.as_str()).collect();
        assert_eq!(ids, ["bitcoin", "no-usd"]);
        let btc = quotes[0];
        assert_eq!(btc.price.to_string(), "53456.123456789012345");
        assert_eq!(btc.market_cap, Some(dec("1050000000000")));
        assert_eq!(btc.total_volume, None);
        assert_eq!(
            btc.price_change_percentage_24h,
            Some(dec("-1.4093297098441402"))
        );
        assert_eq!(
            btc.source_updated_at.unwrap().to_rfc3339(),
            "2026-05-18T08:17:38+00:00"
        );
        // Not in money of another currency: from the first answer; the 24-hour high is not.
        assert_eq!(
            (btc.market_cap_rank, btc.total_supply),
            (Some(1), Some(dec("21000000.0")))
        );
        assert_eq!(btc.high_24h, None);
        assert_eq!(
            (
                btc.symbol.as_deref(),
                btc.name.as_deref(),
                btc.image.as_deref()
            ),
            (Some("btc"), Some("Bitcoin"), Some("b.png"))
        );
        // Rejected in usd, priced in eur: recorded where it has a price, with its description.
        let no_usd = quotes[1];
        assert_eq!(no_usd.price, dec("0.00000315"));
        assert_eq!(no_usd.name.as_deref(), Some("No Usd"));
        assert_eq!(
            no_usd.source_updated_at, btc.source_updated_at,
            "without a time of its own, the answer's newest"
        );
        assert!(eur.warnings().is_empty(), "{:?}", eur.warnings());

        let reasons: Vec<(Option<&str>, &str)> = eur
            .rejections()
            .map(|r| (r.coin_id.as_deref(), r.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert_eq!(reasons[0].0, Some("gone"));
        assert!(reasons[0].1.contains("not in /simple/price"), "{reasons:?}");
        assert_eq!(reasons[1].0, None, "an entry without an id stays rejected");
    }

    #[test]
    fn a_null_or_missing_currency_rejects_the_coin_in_that_currency_only() {
        let btc = prices(ANSWER).market_in("btc", &primary(), Utc::now());
        let ids: Vec<&str> = btc.quotes().map(|q| q.coin_id.as_str()).collect();
        assert_eq!(ids, ["bitcoin"]);
        let no_usd = btc
            .rejections()
            .find(|r| r.coin_id.as_deref() == Some("no-usd"))
            .unwrap();
        assert_eq!(no_usd.reason, "btc price is null");
        assert_eq!(no_usd.description.name.as_deref(), Some("No Usd"));

        let answer = r#"{"bitcoin": {"eur": 1, "last_updated_at": 1779092258}}"#;
        let btc = prices(answer).market_in("btc", &primary(), Utc::now());
        assert_eq!(btc.quotes().count(), 0);
        assert!(btc.rejections().any(|r| r.reason == "btc price is missing"));
    }

    #[test]
    fn bad_prices_are_rejections_and_bad_fields_are_warnings() {
        let answer = r#"{
            "bitcoin": {"eur": -1, "btc": 1e400, "last_updated_at": 1},
            "no-usd": {"eur": 2, "eur_market_cap": "big", "btc": "3", "last_updated_at": 1779092258}
        }"#;
        let prices = prices(answer);
        let eur = prices.market_in("eur", &primary(), Utc::now());
        let bitcoin = eur.rejections().next().unwrap();
        assert!(bitcoin.reason.contains("negative"), "{bitcoin:?}");
        assert_eq!(eur.quotes().next().unwrap().market_cap, None);
        assert_eq!(eur.warnings()[0].field, "market_cap");
        let btc = prices.market_in("btc", &primary(), Utc::now());
        assert_eq!(btc.quotes().count(), 0);
        assert!(btc
            .rejections()
            .next()
            .unwrap()
            .reason
            .contains("cannot be held"));
    }

    #[test]
    fn whole_seconds_written_with_decimals_are_the_same_time() {
        for text in [
            "1764874800",
            "1764874800.0",
            "1764874800.000",
            "1.7648748e9",
        ] {
            assert_eq!(
                unix_seconds(text).map(|t| t.to_rfc3339()),
                Ok("2025-12-04T19:00:00+00:00".to_string()),
                "{text}"
            );
        }
    }

    #[test]
    fn an_unreadable_time_rejects_the_coin_in_that_currency() {
        let answer = r#"{
            "bitcoin": {"eur": 1, "last_updated_at": 1779092258.5},
            "no-usd": {"eur": 2, "last_updated_at": 4102444800}
        }"#;
        let eur = prices(answer).market_in("eur", &primary(), Utc::now());
        assert_eq!(eur.quotes().count(), 0);
        let reasons: Vec<&str> = eur.rejections().map(|r| r.reason.as_str()).collect();
        assert!(
            reasons[0].starts_with("last_updated_at 1779092258.5 is not a whole number"),
            "{reasons:?}"
        );
        assert!(
            reasons[1]
                .starts_with("last_updated_at 2100-01-01T00:00:00Z is more than 5 minutes ahead"),
            "{reasons:?}"
        );
    }

    #[test]
    fn answers_add_up_and_error_objects_are_recognised() {
        let eur = ["eur".to_string()];
        let mut prices = SimplePrices::new(&eur);
        for body in [
            r#"{"bitcoin": {"eur": 1, "last_updated_at": 1779092258}}"#,
            r#"{"gone": {"eur": 2}}"#,
        ] {
            prices.add(SimplePrices::parse_answer(body, &eur).unwrap());
        }
        assert_eq!(
            prices
                .market_in("eur", &primary(), Utc::now())
                .quotes()
                .count(),
            2
        );

        let limited = SimplePrices::parse_answer(
            r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit."}}"#,
            &eur,
        )
        .unwrap_err();
        assert!(limited.is_rate_limit(), "{limited:?}");
        for body in ["", "[]", r#"{"bitcoin": 1}"#, "<html>"] {
            assert!(
                matches!(
                    SimplePrices::parse_answer(body, &eur),
                    Err(PageError::Malformed(_))
                ),
                "{body:?} accepted"
            );
        }
    }
}
