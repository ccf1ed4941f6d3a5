//! Talking to CoinGecko: paging, selection, keys, retries and refusals, against a local stub.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{fixture, numbered_coins, page, spawn_app};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

fn markets() -> wiremock::MockBuilder {
    Mock::given(method("GET")).and(path("/coins/markets"))
}

async fn requested_pages(stub: &MockServer) -> Vec<String> {
    stub.received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| {
            r.url
                .query_pairs()
                .find(|(k, _)| k == "page")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// Answers with `failure` `times` times, then with the recorded answer.
async fn fail_then_succeed(stub: &MockServer, failure: ResponseTemplate, times: u64) {
    markets()
        .respond_with(failure)
        .up_to_n_times(times)
        .with_priority(1)
        .mount(stub)
        .await;
    markets()
        .respond_with(
            ResponseTemplate::new(200).set_body_string(fixture("markets-2024-09-05.json")),
        )
        .mount(stub)
        .await;
}

#[tokio::test]
async fn top_n_asks_full_pages_until_enough_coins_and_keeps_exactly_n() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "300");
    app.set("VS_CURRENCY", "EUR");
    app.serve(&[
        page(&numbered_coins(0..250, "1")),
        page(&numbered_coins(250..500, "1")),
        page(&numbered_coins(500..750, "1")),
    ])
    .await;

    let summary = app.run().await;

    assert_eq!((summary.fetched, summary.pages), (300, 2));
    assert_eq!(requested_pages(&app.coingecko).await, ["1", "2"]);
    let first = &app.coingecko.received_requests().await.unwrap()[0];
    let query: Vec<(String, String)> = first.url.query_pairs().into_owned().collect();
    for expected in [
        ("vs_currency", "eur"),
        ("order", "market_cap_desc"),
        ("per_page", "250"),
        ("precision", "full"),
    ] {
        assert!(
            query.contains(&(expected.0.into(), expected.1.into())),
            "{expected:?} missing from {query:?}"
        );
    }
    let stored: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM current_prices WHERE vs_currency = 'eur' AND coin_id <= 'coin-0299'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, 300);
    assert_eq!(app.count("current_prices").await, 300);
}

#[tokio::test]
async fn a_short_page_ends_the_crawl() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "5000");
    app.serve(&[
        page(&numbered_coins(0..250, "1")),
        page(&numbered_coins(250..260, "1")),
    ])
    .await;

    let summary = app.run().await;

    assert_eq!((summary.fetched, summary.pages), (260, 2));
    assert_eq!(requested_pages(&app.coingecko).await, ["1", "2"]);
}

#[tokio::test]
async fn coin_ids_ask_for_exactly_those_coins() {
    let mut app = spawn_app().await;
    app.set("COIN_IDS", "bitcoin, ethereum");
    markets()
        .and(query_param("ids", "bitcoin,ethereum"))
        .respond_with(ResponseTemplate::new(200).set_body_string(page(&[
            common::coin("bitcoin", "58083", "2024-09-05T00:43:12.026Z"),
            common::coin("ethereum", "2456.15", "2024-09-05T00:43:12.026Z"),
        ])))
        .expect(1)
        .mount(&app.coingecko)
        .await;

    let summary = app.run().await;

    assert_eq!(summary.fetched, 2);
    assert_eq!(
        app.current("ethereum", "price").await.as_deref(),
        Some("2456.15")
    );
}

#[tokio::test]
async fn the_api_key_goes_in_the_header_of_its_plan() {
    for (plan, header_name) in [("demo", "x-cg-demo-api-key"), ("pro", "x-cg-pro-api-key")] {
        let mut app = spawn_app().await;
        app.set("COINGECKO_API_KEY", "CG-test-key");
        app.set("COINGECKO_API_PLAN", plan);
        markets()
            .and(header(header_name, "CG-test-key"))
            .respond_with(
                ResponseTemplate::new(200).set_body_string(fixture("markets-2024-09-05.json")),
            )
            .expect(1)
            .mount(&app.coingecko)
            .await;

        assert_eq!(app.run().await.fetched, 100, "{plan}");
    }
}

#[tokio::test]
async fn a_429_is_retried_after_the_time_coingecko_asks_for() {
    let app = spawn_app().await;
    fail_then_succeed(
        &app.coingecko,
        ResponseTemplate::new(429).insert_header("Retry-After", "1"),
        1,
    )
    .await;

    let summary = app.run().await;

    assert_eq!(summary.fetched, 100);
    assert_eq!(requested_pages(&app.coingecko).await, ["1", "1"]);
    assert!(
        summary.duration_ms >= 1000,
        "waited the Retry-After second: {summary:?}"
    );
}

#[tokio::test]
async fn a_rate_limit_sent_as_http_200_is_retried() {
    let app = spawn_app().await;
    fail_then_succeed(
        &app.coingecko,
        ResponseTemplate::new(200).set_body_string(
            r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit."}}"#,
        ),
        1,
    )
    .await;

    assert_eq!(app.run().await.fetched, 100);
    assert_eq!(requested_pages(&app.coingecko).await.len(), 2);
}

#[tokio::test]
async fn server_errors_are_retried_with_backoff_until_success() {
    let mut app = spawn_app().await;
    app.set("COINGECKO_MAX_ATTEMPTS", "3");
    fail_then_succeed(
        &app.coingecko,
        ResponseTemplate::new(503).set_body_string("upstream busy"),
        2,
    )
    .await;

    assert_eq!(app.run().await.fetched, 100);
    assert_eq!(requested_pages(&app.coingecko).await.len(), 3);
}

#[tokio::test]
async fn a_refusal_fails_at_once_with_coingeckos_message() {
    let app = spawn_app().await;
    markets()
        .respond_with(ResponseTemplate::new(403).set_body_string(fixture("error-403.json")))
        .mount(&app.coingecko)
        .await;

    let error = app.try_run(None).await.unwrap_err().to_string();

    assert!(error.contains("HTTP 403"), "{error}");
    assert!(error.contains("temporarily unavailable"), "{error}");
    assert!(
        error.contains("COINGECKO_API_KEY"),
        "says what to check: {error}"
    );
    assert_eq!(
        requested_pages(&app.coingecko).await.len(),
        1,
        "not retried"
    );
}

#[tokio::test]
async fn a_retry_after_beyond_the_budget_fails_without_waiting() {
    // The largest a header may say, too: past what the clock holds, it must not overflow.
    for wait in ["120", "18446744073709551615"] {
        let mut app = spawn_app().await;
        app.set("FETCH_BUDGET_SECS", "5");
        markets()
            .respond_with(ResponseTemplate::new(429).insert_header("Retry-After", wait))
            .mount(&app.coingecko)
            .await;

        let error = app.try_run(None).await.unwrap_err().to_string();

        assert!(
            error.contains("fetch budget") && error.contains("FETCH_BUDGET_SECS"),
            "{error}"
        );
        assert!(error.contains(&format!("{wait}s")), "{error}");
        assert_eq!(requested_pages(&app.coingecko).await.len(), 1);
    }
}

#[tokio::test]
async fn a_stalled_answer_times_out_and_counts_as_an_attempt() {
    let mut app = spawn_app().await;
    app.set("COINGECKO_TIMEOUT_SECS", "1");
    app.set("COINGECKO_MAX_ATTEMPTS", "2");
    markets()
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(fixture("markets-2024-09-05.json"))
                .set_delay(Duration::from_secs(5)),
        )
        .mount(&app.coingecko)
        .await;

    let error = app.try_run(None).await.unwrap_err().to_string();

    assert!(
        error.contains("after 2 attempts") && error.contains("within 1s"),
        "{error}"
    );
    assert_eq!(app.count("current_prices").await, 0);
}

/// Full pages of distinct coins for any page number; records when each request came.
#[derive(Clone, Default)]
struct EndlessMarket {
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl Respond for EndlessMarket {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.arrivals.lock().unwrap().push(Instant::now());
        let number: usize = request
            .url
            .query_pairs()
            .find(|(k, _)| k == "page")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(1);
        let first = (number - 1) * 250;
        ResponseTemplate::new(200).set_body_string(page(&numbered_coins(first..first + 250, "1")))
    }
}

#[tokio::test]
async fn requests_are_spaced_to_stay_under_the_calls_per_minute() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "1000");
    app.set("COINGECKO_MAX_CALLS_PER_MIN", "240");
    let market = EndlessMarket::default();
    markets()
        .respond_with(market.clone())
        .mount(&app.coingecko)
        .await;

    assert_eq!(app.run().await.fetched, 1000);

    let arrivals = market.arrivals.lock().unwrap().clone();
    assert_eq!(arrivals.len(), 4);
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        // 240 a minute: one every 250 ms. Measured on arrival, a gap also carries the jitter of
        // sending on a busy 2-core machine: 25 ms of it are allowed (unpaced, gaps are ~1 ms).
        assert!(
            gap >= Duration::from_millis(225),
            "{gap:?} between requests"
        );
    }
}

#[tokio::test]
async fn a_crawl_that_cannot_fit_its_time_fails_before_its_first_request() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "17500");
    app.set("COINGECKO_API_KEY", "demo-key");
    app.set("COINGECKO_MAX_CALLS_PER_MIN", "");

    let error = app.try_run(None).await.unwrap_err().to_string();

    assert!(
        error.contains("70 calls at 30 requests a minute (COINGECKO_MAX_CALLS_PER_MIN)")
            && error.contains("138s")
            && error.contains("FETCH_BUDGET_SECS")
            && error.contains("TOP_N"),
        "{error}"
    );
    assert!(requested_pages(&app.coingecko).await.is_empty());
}
