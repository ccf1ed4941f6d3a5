//! Parsing `/coins/markets` pages into exact quotes. Pure: no I/O.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::numbers::{exact_decimal, json_string, preview};
use super::{Description, Entry, FieldWarning, Quote, Rejection};

#[derive(Debug, Clone, PartialEq, Default)]
pub struct ParsedPage {
    pub entries: Vec<Entry>,
    pub warnings: Vec<FieldWarning>,
}

/// Why an answer as a whole cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// CoinGecko's error object, sometimes sent with HTTP 200: see [`api_error_message`].
    #[error("CoinGecko error {code}: {message}")]
    Api { code: u16, message: String },
    /// The answer is not the shape asked for; the text says what was wrong.
    #[error("{0}")]
    Malformed(String),
}

impl PageError {
    pub fn is_rate_limit(&self) -> bool {
        matches!(self, PageError::Api { code: 429, .. })
    }

    /// The Demo plan's refusal of data older than 365 days: retrying cannot help.
    pub fn is_out_of_plan_range(&self) -> bool {
        matches!(self, PageError::Api { code: 10012, .. })
    }
}

/// CoinGecko's error bodies come in three shapes: `{"status": {"error_code", "error_message"}}`
/// (429, 403), the same wrapped in `{"error": …}` (10012, with a `timestamp`), and `{"error": "…"}`.
#[derive(Deserialize)]
struct ApiErrorBody {
    status: Option<ApiErrorStatus>,
    error: Option<ApiErrorField>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ApiErrorField {
    Text(String),
    Wrapped { status: Option<ApiErrorStatus> },
}

#[derive(Deserialize)]
struct ApiErrorStatus {
    error_code: Option<u16>,
    error_message: Option<String>,
}

impl ApiErrorBody {
    fn parse(body: &str) -> Option<Self> {
        serde_json::from_str(body).ok()
    }

    /// Splits the body into its status object, wherever it was, and its plain-text error.
    fn into_parts(self) -> (Option<ApiErrorStatus>, Option<String>) {
        match self.error {
            Some(ApiErrorField::Text(text)) => (self.status, Some(text)),
            Some(ApiErrorField::Wrapped { status }) => (self.status.or(status), None),
            None => (self.status, None),
        }
    }
}

/// Extracts CoinGecko's own error message from an error body, if it is one.
pub fn api_error_message(body: &str) -> Option<String> {
    let (status, text) = ApiErrorBody::parse(body)?.into_parts();
    status
        .and_then(|s| s.error_message)
        .or(text)
        .map(|m| m.trim().to_string())
}

/// The body as [`PageError::Api`] when it is an error object with a code.
pub(super) fn api_error(body: &str) -> Option<PageError> {
    let (status, _) = ApiErrorBody::parse(body)?.into_parts();
    let status = status?;
    Some(PageError::Api {
        code: status.error_code?,
        message: status.error_message.unwrap_or_default().trim().to_string(),
    })
}

/// Every field is taken as raw JSON text so that each can be judged on its own:
/// one odd field never loses the whole coin, let alone the page.
#[derive(Deserialize)]
struct RawCoin<'a> {
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    symbol: Option<&'a RawValue>,
    #[serde(borrow)]
    image: Option<&'a RawValue>,
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    current_price: Option<&'a RawValue>,
    #[serde(borrow)]
    market_cap: Option<&'a RawValue>,
    #[serde(borrow)]
    market_cap_rank: Option<&'a RawValue>,
    #[serde(borrow)]
    total_volume: Option<&'a RawValue>,
    #[serde(borrow)]
    high_24h: Option<&'a RawValue>,
    #[serde(borrow)]
    low_24h: Option<&'a RawValue>,
    #[serde(borrow)]
    price_change_24h: Option<&'a RawValue>,
    #[serde(borrow)]
    price_change_percentage_24h: Option<&'a RawValue>,
    #[serde(borrow)]
    circulating_supply: Option<&'a RawValue>,
    #[serde(borrow)]
    total_supply: Option<&'a RawValue>,
    #[serde(borrow)]
    max_supply: Option<&'a RawValue>,
    #[serde(borrow)]
    last_updated: Option<&'a RawValue>,
}

/// Parses one page body. Fails only when the page as a whole is unusable;
/// a bad coin becomes a [`Rejection`], a bad non-price field a [`FieldWarning`].
pub fn parse_page(body: &str) -> Result<ParsedPage, PageError> {
    let items: Vec<&RawValue> = serde_json::from_str(body).map_err(|e| {
        api_error(body).unwrap_or_else(|| {
            PageError::Malformed(format!(
                "not a JSON array of coin objects: {e}; body starts with {:?}",
                preview(body)
            ))
        })
    })?;

    let mut page = ParsedPage::default();
    for (position, item) in items.into_iter().enumerate() {
        if !item.get().starts_with('{') {
            return Err(PageError::Malformed(format!(
                "not a JSON array of coin objects: entry {position} is {:?}, not an object",
                preview(item.get())
            )));
        }
        let entry = match serde_json::from_str::<RawCoin>(item.get()) {
            Ok(raw) => parse_coin(raw, position, &mut page.warnings),
            Err(e) => Entry::Rejected(Rejection {
                coin_id: None,
                position,
                reason: format!("unreadable object: {e}"),
                description: Description::default(),
            }),
        };
        page.entries.push(entry);
    }
    Ok(page)
}

fn parse_coin(raw: RawCoin, position: usize, warnings: &mut Vec<FieldWarning>) -> Entry {
    // A coin without a price here may have one in another currency: its description is kept.
    let reject = |coin_id: Option<String>, reason: String| {
        let text = |raw: Option<&RawValue>| raw.and_then(|v| json_string(v).ok());
        Entry::Rejected(Rejection {
            coin_id,
            position,
            reason,
            description: Description {
                symbol: text(raw.symbol),
                name: text(raw.name),
                image: text(raw.image),
            },
        })
    };
    let coin_id = match raw.id.map(json_string) {
        Some(Ok(id)) if !id.trim().is_empty() => id,
        Some(Err(problem)) => return reject(None, format!("\"id\" {problem}")),
        _ => return reject(None, "missing or empty \"id\"".into()),
    };
    let price = match raw.current_price.map(|v| exact_decimal(v.get())) {
        None => return reject(Some(coin_id), "current_price is null or missing".into()),
        Some(Err(problem)) => return reject(Some(coin_id), format!("current_price {problem}")),
        Some(Ok(p)) if p.is_sign_negative() && !p.is_zero() => {
            return reject(Some(coin_id), format!("current_price {p} is negative"))
        }
        Some(Ok(p)) => p,
    };

    // The time orders the coin's observations, so a time that cannot be read rejects the coin
    // rather than leaving it to be stamped with some other time.
    let source_updated_at = match raw.last_updated.map(rfc3339) {
        None => None,
        Some(Ok(at)) => Some(at),
        Some(Err(problem)) => return reject(Some(coin_id), format!("last_updated {problem}")),
    };
    let mut fields = FieldReader {
        coin_id: &coin_id,
        warnings,
    };
    let quote = Quote {
        symbol: fields.text("symbol", raw.symbol),
        name: fields.text("name", raw.name),
        image: fields.text("image", raw.image),
        price,
        market_cap: fields.decimal("market_cap", raw.market_cap),
        market_cap_rank: fields.rank(raw.market_cap_rank),
        total_volume: fields.decimal("total_volume", raw.total_volume),
        high_24h: fields.decimal("high_24h", raw.high_24h),
        low_24h: fields.decimal("low_24h", raw.low_24h),
        price_change_24h: fields.decimal("price_change_24h", raw.price_change_24h),
        price_change_percentage_24h: fields.decimal(
            "price_change_percentage_24h",
            raw.price_change_percentage_24h,
        ),
        circulating_supply: fields.decimal("circulating_supply", raw.circulating_supply),
        total_supply: fields.decimal("total_supply", raw.total_supply),
        max_supply: fields.decimal("max_supply", raw.max_supply),
        source_updated_at,
        coin_id,
    };
    Entry::Quote(quote)
}

/// Reads optional fields of one coin, turning each unusable value into NULL and a warning.
struct FieldReader<'a> {
    coin_id: &'a str,
    warnings: &'a mut Vec<FieldWarning>,
}

impl FieldReader<'_> {
    fn keep<T>(&mut self, field: &'static str, value: Result<T, String>) -> Option<T> {
        value
            .map_err(|problem| {
                self.warnings.push(FieldWarning {
                    coin_id: self.coin_id.to_string(),
                    field,
                    problem,
                })
            })
            .ok()
    }

    fn decimal(&mut self, field: &'static str, raw: Option<&RawValue>) -> Option<Decimal> {
        let value = raw?;
        self.keep(field, exact_decimal(value.get()))
    }

    fn text(&mut self, field: &'static str, raw: Option<&RawValue>) -> Option<String> {
        let value = raw?;
        self.keep(field, json_string(value))
    }

    fn rank(&mut self, raw: Option<&RawValue>) -> Option<i32> {
        let value = raw?;
        let rank = exact_decimal(value.get()).and_then(|d| {
            if d.fract().is_zero() {
                i32::try_from(d.mantissa() / 10i128.pow(d.scale()))
                    .map_err(|_| format!("{d} is out of range for a rank"))
            } else {
                Err(format!("{d} is not a whole number"))
            }
        });
        self.keep("market_cap_rank", rank)
    }
}

/// `last_updated`: an RFC 3339 time.
fn rfc3339(raw: &RawValue) -> Result<DateTime<Utc>, String> {
    let text = json_string(raw)?;
    DateTime::parse_from_rfc3339(&text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| {
            format!(
                "{} is not an RFC 3339 time ({e})",
                preview(&format!("{text:?}"))
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/coingecko/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
    }

    fn only_quote(body: &str) -> Quote {
        match parse_page(body).unwrap().entries.pop().unwrap() {
            Entry::Quote(q) => q,
            Entry::Rejected(r) => panic!("rejected: {r:?}"),
        }
    }

    #[test]
    fn recorded_answers_parse_completely() {
        for name in [
            "markets-2024-09-05.json",
            "markets-2024-09-08.json",
            "markets-2026-04-30.json",
        ] {
            let page = parse_page(&fixture(name)).unwrap();
            assert_eq!(page.entries.len(), 100, "{name}");
            assert!(
                page.entries.iter().all(|e| matches!(e, Entry::Quote(_))),
                "{name}: {:?}",
                page.entries
                    .iter()
                    .filter(|e| matches!(e, Entry::Rejected(_)))
                    .collect::<Vec<_>>()
            );
            assert!(page.warnings.is_empty(), "{name}: {:?}", page.warnings);
        }
    }

    #[test]
    fn recorded_bitcoin_row_is_stored_as_written() {
        let page = parse_page(&fixture("markets-2024-09-05.json")).unwrap();
        let Entry::Quote(btc) = &page.entries[0] else {
            panic!("bitcoin rejected")
        };
        assert_eq!(btc.coin_id, "bitcoin");
        assert_eq!(btc.symbol.as_deref(), Some("btc"));
        assert_eq!(
            btc.image.as_deref(),
            Some("https://coin-images.coingecko.com/coins/images/1/large/bitcoin.png?1696501400")
        );
        assert_eq!(btc.price, dec("58083"));
        assert_eq!(btc.total_supply.unwrap().to_string(), "21000000.0");
        assert_eq!(btc.market_cap_rank, Some(1));
        assert_eq!(
            btc.source_updated_at.unwrap().to_rfc3339(),
            "2024-09-05T00:43:12.026+00:00"
        );
    }

    #[test]
    fn bad_prices_reject_the_coin_and_name_it() {
        let body = r#"[
            {"id":"a","current_price":null},
            {"id":"b"},
            {"id":"c","current_price":"12.5"},
            {"id":"d","current_price":-0.01},
            {"id":"e","current_price":1e400},
            {"current_price":1},
            {"id":"","current_price":1},
            {"id":"f","current_price":0}
        ]"#;
        let page = parse_page(body).unwrap();
        let rejected: Vec<(Option<&str>, &str)> = page
            .entries
            .iter()
            .filter_map(|e| match e {
                Entry::Rejected(r) => Some((r.coin_id.as_deref(), r.reason.as_str())),
                Entry::Quote(_) => None,
            })
            .collect();
        assert_eq!(rejected.len(), 7, "{rejected:?}");
        assert_eq!(rejected[0], (Some("a"), "current_price is null or missing"));
        assert_eq!(rejected[1], (Some("b"), "current_price is null or missing"));
        assert!(rejected[2].1.contains("not a number"), "{rejected:?}");
        assert!(rejected[3].1.contains("negative"), "{rejected:?}");
        assert!(rejected[4].1.contains("cannot be held"), "{rejected:?}");
        assert_eq!(rejected[5].0, None);
        assert!(
            matches!(&page.entries[7], Entry::Quote(q) if q.price.is_zero()),
            "a zero price is a price"
        );
    }

    #[test]
    fn an_unholdable_field_becomes_null_with_a_warning_and_the_coin_is_kept() {
        let q = only_quote(
            r#"[{"id":"x","current_price":1,"total_supply":1e40,"market_cap_rank":2.5,"symbol":7,"future_field":{"a":[1]}}]"#,
        );
        assert_eq!(q.total_supply, None);
        assert_eq!(q.market_cap_rank, None);
        assert_eq!(q.symbol, None);
        let page = parse_page(
            r#"[{"id":"x","current_price":1,"total_supply":1e40,"market_cap_rank":2.5,"symbol":7}]"#,
        )
        .unwrap();
        let fields: Vec<&str> = page.warnings.iter().map(|w| w.field).collect();
        assert_eq!(fields, ["symbol", "market_cap_rank", "total_supply"]);
        assert!(page.warnings.iter().all(|w| w.coin_id == "x"));
    }

    #[test]
    fn an_unreadable_last_updated_rejects_the_coin_naming_the_field_and_value() {
        for (time, named) in [
            (r#""2026-13-45T99:00:00Z""#, "2026-13-45T99:00:00Z"),
            (r#""yesterday""#, "yesterday"),
            ("1779092258", "1779092258"),
        ] {
            let body = format!(r#"[{{"id":"x","current_price":1,"last_updated":{time}}}]"#);
            match &parse_page(&body).unwrap().entries[0] {
                Entry::Rejected(r) => {
                    assert_eq!(r.coin_id.as_deref(), Some("x"));
                    assert!(r.reason.starts_with("last_updated "), "{}", r.reason);
                    assert!(r.reason.contains(named), "{}", r.reason);
                }
                Entry::Quote(q) => panic!("{time} was taken as {:?}", q.source_updated_at),
            }
        }
        let q = only_quote(r#"[{"id":"x","current_price":1,"last_updated":null}]"#);
        assert_eq!(
            q.source_updated_at, None,
            "a null time is left to the answer"
        );
    }

    #[test]
    fn pages_that_are_not_arrays_of_objects_are_errors() {
        for body in [
            "",
            "<html>502 Bad Gateway</html>",
            r#"[{"id":"bitcoin","current_price":1"#,
            r#"{"id":"bitcoin"}"#,
            "[1, 2]",
            r#"[{"id":"a","current_price":1}, "b"]"#,
        ] {
            assert!(
                matches!(parse_page(body), Err(PageError::Malformed(_))),
                "{body:?} accepted"
            );
        }
    }

    #[test]
    fn coingecko_error_objects_are_recognised_even_with_status_200() {
        let err = parse_page(&fixture("error-403.json")).unwrap_err();
        assert!(
            matches!(&err, PageError::Api { code: 403, message } if message.contains("temporarily unavailable")),
            "{err:?}"
        );
        assert!(!err.is_rate_limit());
        let limited = parse_page(
            r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit."}}"#,
        )
        .unwrap_err();
        assert!(limited.is_rate_limit());
        assert!(!limited.is_out_of_plan_range());
    }

    /// Verbatim from GitHub issues (Electron-Cash/Electron-Cash#2825), trailing space included.
    const OUT_OF_RANGE: &str = r#"{"error":{"status":{"timestamp":"2024-03-30T07:22:29.427+00:00","error_code":10012,"error_message":"Your request exceeds the allowed time range. Public API users are limited to querying historical data within the past 365 days. Upgrade to a paid plan to enjoy full historical data access: https://www.coingecko.com/en/api/pricing. "}}}"#;

    #[test]
    fn the_wrapped_error_shape_is_recognised_on_a_markets_page() {
        let err = parse_page(OUT_OF_RANGE).unwrap_err();
        assert!(
            matches!(&err, PageError::Api { code: 10012, message }
                if message.starts_with("Your request exceeds") && message.ends_with("pricing.")),
            "{err:?}"
        );
        assert!(err.is_out_of_plan_range());
        assert!(!err.is_rate_limit());
    }

    #[test]
    fn error_messages_are_found_in_every_shape() {
        for (body, expected) in [
            (r#"{"status":{"error_code":429,"error_message":" slow down "}}"#, Some("slow down")),
            (OUT_OF_RANGE, Some("Your request exceeds the allowed time range. Public API users are limited to querying historical data within the past 365 days. Upgrade to a paid plan to enjoy full historical data access: https://www.coingecko.com/en/api/pricing.")),
            (r#"{"error":"coin not found"}"#, Some("coin not found")),
            (r#"{"error":{"status":{"error_code":10012}}}"#, None),
            (r#"{"error":{}}"#, None),
            ("[]", None),
            ("<html>", None),
        ] {
            assert_eq!(api_error_message(body).as_deref(), expected, "{body}");
        }
    }

    #[test]
    fn an_error_without_a_code_is_no_api_error() {
        assert_eq!(api_error(r#"{"error":"coin not found"}"#), None);
        assert_eq!(api_error(r#"{"status":{"error_message":"no code"}}"#), None);
        assert_eq!(
            api_error(r#"{"error":{"status":{"error_code":10012}}}"#),
            Some(PageError::Api {
                code: 10012,
                message: String::new()
            })
        );
    }
}
