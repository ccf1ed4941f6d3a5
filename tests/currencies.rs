//! Several quote currencies in one run (`VS_CURRENCIES`): `/coins/markets` pages in the first,
//! `/simple/price` batches for the others, one CDC stream per (coin, currency), one transaction.

mod common;

use std::collections::BTreeMap;

use common::simple_price::PriceBook;
use common::{coin, numbered_coins, page, spawn_app, TestApp};
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// 2026-11-27T15:00:00Z, the `last_updated` of `numbered_coins`.
const AT: i64 = 1_795_791_600;

/// `(currency, coin) → price` as stored in `current_prices`.
async fn current_by_currency(app: &TestApp) -> BTreeMap<(String, String), String> {
    app.db
        .query(
            "SELECT vs_currency, coin_id, price::text FROM current_prices",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect()
}

async fn history_of(app: &TestApp, currency: &str, coin_id: &str) -> Vec<String> {
    common::column(
        &app.db,
        &format!(
            "SELECT price::text FROM price_history WHERE vs_currency = '{currency}' AND coin_id = '{coin_id}' ORDER BY source_updated_at"
        ),
    )
    .await
}

/// `coins` coins priced 1 in usd by `/coins/markets` and in `further` by the book.
async fn serve_coins(app: &TestApp, book: &PriceBook, coins: usize, further: &[&str]) {
    let all = numbered_coins(0..coins, "1");
    let pages: Vec<String> = all.chunks(250).map(page).collect();
    app.serve(&pages).await;
    book.clear();
    for n in 0..coins {
        for currency in further {
            book.set(&format!("coin-{n:04}"), currency, "2", AT);
        }
    }
    book.serve_on(&app.coingecko).await;
}

#[tokio::test]
async fn calls_per_run_do_not_grow_with_the_currencies() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "600");
    let book = PriceBook::default();
    let all = [
        "eur", "btc", "gbp", "jpy", "chf", "cad", "aud", "sats", "xau",
    ];
    for currencies in [0, 2, 9] {
        let further = &all[..currencies];
        let list: Vec<&str> = std::iter::once("usd")
            .chain(further.iter().copied())
            .collect();
        app.set("VS_CURRENCIES", &list.join(","));
        serve_coins(&app, &book, 600, further).await;

        let summary = app.run().await;

        // 3 pages, then ⌈600 / 250⌉ = 3 batches for every further currency at once.
        let batches = if currencies == 0 { 0 } else { 3 };
        assert_eq!((summary.pages, summary.calls), (3, 3 + batches), "{list:?}");
        let requests = book.requests();
        assert_eq!(requests.len(), batches as usize, "{list:?}");
        let sizes: Vec<usize> = requests.iter().map(|r| r.ids.len()).collect();
        if currencies > 0 {
            assert_eq!(sizes, [250, 250, 100]);
            assert!(requests
                .iter()
                .all(|r| r.vs_currencies == further.join(",")
                    && r.precision.as_deref() == Some("full")));
        }
        assert_eq!(summary.currencies.len(), list.len());
        assert_eq!(summary.fetched, 600 * list.len() as u64);
        for entry in &summary.currencies {
            assert_eq!((entry.fetched, entry.rejected), (600, 0), "{entry:?}");
        }
    }
    let stored = current_by_currency(&app).await;
    assert_eq!(stored.len(), 600 * 10);
    assert_eq!(stored[&("xau".into(), "coin-0599".into())], "2");
}

#[tokio::test]
async fn each_currency_is_its_own_stream_and_a_missing_price_is_rejected_only_there() {
    let mut app = spawn_app().await;
    app.set("VS_CURRENCIES", "usd,eur,btc");
    let at = "2026-11-27T15:00:00.000Z";
    app.serve(&[page(&[
        coin("bitcoin", "58083", at),
        coin("only-eur", "null", at),
        coin("only-usd", "3.15e-06", at),
    ])])
    .await;
    let book = PriceBook::default();
    book.set("bitcoin", "eur", "53456.123456789012345", AT);
    book.set("bitcoin", "btc", "1.0", AT);
    book.set("only-eur", "eur", "0.5", AT);
    book.set("only-eur", "btc", "null", AT);
    // only-usd is not in /simple/price's answer at all.
    book.serve_on(&app.coingecko).await;

    let summary = app.run().await;

    let per_currency: Vec<(&str, u64, u64, u64)> = summary
        .currencies
        .iter()
        .map(|c| {
            (
                c.vs_currency.as_str(),
                c.fetched,
                c.rejected,
                c.history_inserted,
            )
        })
        .collect();
    assert_eq!(
        per_currency,
        [("usd", 3, 1, 2), ("eur", 3, 1, 2), ("btc", 3, 2, 1)]
    );
    assert_eq!(summary.vs_currency, "usd,eur,btc");
    assert_eq!(
        (summary.fetched, summary.rejected, summary.history_inserted),
        (9, 4, 5)
    );
    assert_eq!(
        summary.fetched,
        summary.rejected + summary.history_inserted + summary.unchanged
    );
    let stored = current_by_currency(&app).await;
    let key = |c: &str, id: &str| (c.to_string(), id.to_string());
    assert_eq!(stored[&key("eur", "bitcoin")], "53456.123456789012345");
    assert_eq!(stored[&key("btc", "bitcoin")], "1.0");
    assert_eq!(stored[&key("usd", "only-usd")], "0.00000315");
    assert_eq!(stored[&key("eur", "only-eur")], "0.5");
    assert_eq!(stored.len(), 5, "{stored:?}");
    // Priced only in eur, the coin keeps the description /coins/markets gave it.
    let name: String = app
        .db
        .query_one("SELECT name FROM coins WHERE coin_id = 'only-eur'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(name, "Coin only-eur");

    // usd moves 1 %, eur 0.1 %: at 0.5 %, only usd records.
    let later = "2026-11-27T15:05:00.000Z";
    app.serve(&[page(&[coin("bitcoin", "58663.83", later)])])
        .await;
    book.set("bitcoin", "eur", "53509.579580245801357", AT + 300);
    book.set("bitcoin", "btc", "1.0", AT + 300);
    book.serve_on(&app.coingecko).await;

    let summary = app.run().await;

    let inserted: Vec<u64> = summary
        .currencies
        .iter()
        .map(|c| c.history_inserted)
        .collect();
    assert_eq!(inserted, [1, 0, 0]);
    assert_eq!(
        history_of(&app, "usd", "bitcoin").await,
        ["58083", "58663.83"]
    );
    assert_eq!(
        history_of(&app, "eur", "bitcoin").await,
        ["53456.123456789012345"]
    );
    assert_eq!(
        current_by_currency(&app).await[&key("eur", "bitcoin")],
        "53509.579580245801357",
        "the latest price moves without a history row"
    );
}

#[tokio::test]
async fn a_currency_missing_from_the_answer_rejects_every_coin_in_it() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "300");
    app.set("VS_CURRENCIES", "usd,eur,xyz");
    let book = PriceBook::default();
    serve_coins(&app, &book, 300, &["eur"]).await;

    let summary = app.run().await;

    let rejected: Vec<(&str, u64)> = summary
        .currencies
        .iter()
        .map(|c| (c.vs_currency.as_str(), c.rejected))
        .collect();
    assert_eq!(rejected, [("usd", 0), ("eur", 0), ("xyz", 300)]);
    assert_eq!(app.count("price_history").await, 600);
}

#[tokio::test]
async fn a_refused_price_call_fails_the_run_and_writes_nothing() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "300");
    app.set("VS_CURRENCIES", "usd,eur");
    let book = PriceBook::default();
    serve_coins(&app, &book, 300, &["eur"]).await;
    app.coingecko.reset().await;
    let pages: Vec<String> = numbered_coins(0..300, "1").chunks(250).map(page).collect();
    app.serve(&pages).await;
    Mock::given(method("GET"))
        .and(path("/simple/price"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            r#"{"status":{"error_code":400,"error_message":"invalid vs_currencies"}}"#,
        ))
        .mount(&app.coingecko)
        .await;

    let error = app.try_run(None).await.unwrap_err().to_string();

    assert!(
        error.contains("/simple/price batch 1 of 2")
            && error.contains("HTTP 400")
            && error.contains("invalid vs_currencies")
            && error.contains("VS_CURRENCIES"),
        "{error}"
    );
    assert_eq!(app.count("current_prices").await, 0);
    assert_eq!(app.count("coins").await, 0);
    assert_eq!(app.failed_runs().await.len(), 1);
}

#[tokio::test]
async fn the_answers_of_every_call_are_kept_raw() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "300");
    app.set("VS_CURRENCIES", "usd,eur");
    let book = PriceBook::default();
    serve_coins(&app, &book, 300, &["eur"]).await;

    app.run().await;

    let kept: Vec<String> = common::column(
        &app.db,
        "SELECT endpoint || ' ' || page || ' ' || (SELECT count(*) FROM jsonb_object_keys(CASE WHEN jsonb_typeof(payload::jsonb) = 'object' THEN payload::jsonb ELSE '{}' END))
         FROM raw_pages ORDER BY endpoint, page",
    )
    .await;
    assert_eq!(
        kept,
        [
            "coins/markets 1 0",
            "coins/markets 2 0",
            "simple/price 1 250",
            "simple/price 2 50"
        ]
    );
}
