//! `/simple/price` on the stub: answers in the shape of CoinGecko's OpenAPI example
//! (`{"bitcoin": {"usd": 76975, "usd_market_cap": …, "usd_24h_vol": …, "usd_24h_change": …,
//! "last_updated_at": 1779092258}}`), for the ids and currencies each request asks, from a book
//! of prices written as JSON text.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// coin → currency → price as JSON text (`null` is written as is); a currency a coin lacks is
/// left out of its object, a coin the book lacks out of the answer, as CoinGecko does.
#[derive(Clone, Default)]
pub struct PriceBook {
    prices: Arc<Mutex<BTreeMap<String, BTreeMap<String, String>>>>,
    updated_at: Arc<Mutex<BTreeMap<String, i64>>>,
    requests: Arc<Mutex<Vec<PriceRequest>>>,
}

/// What one request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceRequest {
    pub ids: Vec<String>,
    pub vs_currencies: String,
    pub precision: Option<String>,
}

impl PriceBook {
    /// Prices `coin` in `currency`, last updated at `unix_seconds`.
    pub fn set(&self, coin: &str, currency: &str, price: &str, unix_seconds: i64) {
        self.prices
            .lock()
            .unwrap()
            .entry(coin.into())
            .or_default()
            .insert(currency.into(), price.into());
        self.updated_at
            .lock()
            .unwrap()
            .insert(coin.into(), unix_seconds);
    }

    /// Forgets every price and request.
    pub fn clear(&self) {
        self.prices.lock().unwrap().clear();
        self.updated_at.lock().unwrap().clear();
        self.requests.lock().unwrap().clear();
    }

    pub fn requests(&self) -> Vec<PriceRequest> {
        self.requests.lock().unwrap().clone()
    }

    /// Serves this book as `/simple/price` on `stub`, beside what it already serves.
    pub async fn serve_on(&self, stub: &MockServer) {
        Mock::given(method("GET"))
            .and(path("/simple/price"))
            .respond_with(self.clone())
            .mount(stub)
            .await;
    }
}

impl Respond for PriceBook {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let param = |name: &str| super::param_of(request, name);
        let ids: Vec<String> = param("ids")
            .unwrap_or_default()
            .split(',')
            .map(String::from)
            .collect();
        let vs_currencies = param("vs_currencies").unwrap_or_default();
        self.requests.lock().unwrap().push(PriceRequest {
            ids: ids.clone(),
            vs_currencies: vs_currencies.clone(),
            precision: param("precision"),
        });
        let prices = self.prices.lock().unwrap();
        let updated_at = self.updated_at.lock().unwrap();
        let text = |s: &str| serde_json::to_string(s).unwrap();
        let coins: Vec<String> = ids
            .iter()
            .filter_map(|id| {
                let book = prices.get(id)?;
                let mut fields: Vec<String> = vs_currencies
                    .split(',')
                    .filter_map(|c| {
                        let price = book.get(c)?;
                        Some(format!(
                            r#""{c}":{price},"{c}_market_cap":1542226908349.8406,"{c}_24h_vol":29096603418.89408,"{c}_24h_change":-1.4093297098441402"#
                        ))
                    })
                    .collect();
                fields.push(format!(r#""last_updated_at":{}"#, updated_at[id]));
                Some(format!("{}:{{{}}}", text(id), fields.join(",")))
            })
            .collect();
        ResponseTemplate::new(200).set_body_string(format!("{{{}}}", coins.join(",")))
    }
}
