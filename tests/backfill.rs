//! The backfill against a real PostgreSQL and a stub serving `market_chart/range` answers built
//! from the real prices of 2024: chunking by plan, the CDC rule over the series, refusals, rate
//! limits, invocations cut off and resumed, and backfills beside each other and beside live runs.

mod common;
#[path = "backfill/overlaps.rs"]
mod overlaps;

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};
use coingecko_cdc::app::App;
use coingecko_cdc::backfill::{BackfillRequest, Granularity, Window};
use coingecko_cdc::market::exact_decimal;
use coingecko_cdc::secrets::SecretsManager;
use coingecko_cdc::summary::{BackfillOutcome, BackfillSummary};
use common::market_chart::ChartBook;
use common::{coin, page, spawn_app, TestApp};
use rust_decimal::Decimal;

const COINS: [&str; 3] = ["bitcoin", "ethereum", "solana"];

fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

/// A fixed window, so that two databases backfilled at different moments hold the same rows.
fn range(from: &str, to: &str, coins: &[&str], granularity: Granularity) -> BackfillRequest {
    request(
        Window::Range {
            from: at(from),
            to: Some(at(to)),
        },
        Some(coins),
        granularity,
    )
}

fn request(window: Window, coins: Option<&[&str]>, granularity: Granularity) -> BackfillRequest {
    let coins = coins.map(|ids| ids.iter().map(|c| c.to_string()).collect());
    BackfillRequest::new(window, coins, granularity).expect("a valid request")
}

async fn stubbed(app: &mut TestApp, currencies: &str) -> ChartBook {
    app.set("VS_CURRENCIES", currencies);
    let book = ChartBook::default();
    book.serve_on(&app.coingecko).await;
    book
}

async fn backfiller(app: &TestApp, extra: &[(&str, &str)]) -> App<SecretsManager> {
    app.app_with(extra, SecretsManager::default()).await
}

async fn backfill(app: &TestApp, request: &BackfillRequest) -> BackfillSummary {
    backfiller(app, &[])
        .await
        .backfill(request, None)
        .await
        .expect("backfill failed")
}

/// Every history row: (currency, coin, time) → (price, source, granularity).
async fn history(
    app: &TestApp,
) -> BTreeMap<(String, String, DateTime<Utc>), (String, String, Option<String>)> {
    app.db
        .query(
            "SELECT vs_currency, coin_id, source_updated_at, price::text, source, granularity FROM price_history",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2)), (r.get(3), r.get(4), r.get(5))))
        .collect()
}

/// The documented rule, written again: first point, then moves of at least `pct` % against the
/// last recorded price.
fn model(points: &[(i64, String)], pct: &str) -> Vec<(i64, String)> {
    let pct = Decimal::from_str(pct).unwrap();
    let mut last: Option<Decimal> = None;
    let mut kept = Vec::new();
    for (ms, text) in points {
        let price = exact_decimal(text).unwrap();
        let record = match last {
            None => true,
            Some(reference) => {
                price != reference
                    && (price - reference).abs() * Decimal::ONE_HUNDRED >= pct * reference.abs()
            }
        };
        if record {
            last = Some(price);
            kept.push((*ms, text.clone()));
        }
    }
    kept
}

#[tokio::test]
async fn a_year_on_the_demo_plan_is_chunked_as_the_plan_requires() {
    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd").await;
    let hourly = request(Window::Days(365), Some(&["bitcoin"]), Granularity::Hourly);

    let summary = backfill(&app, &hourly).await;

    assert_eq!(summary.outcome, BackfillOutcome::Finished);
    assert_eq!((summary.chunks_done, summary.calls), (5, 5));
    let requests = book.requests();
    let now = Utc::now().timestamp();
    assert_eq!(requests.len(), 5);
    for pair in requests.windows(2) {
        assert_eq!(
            pair[0].to, pair[1].from,
            "chunks tile the window, oldest first"
        );
    }
    for request in &requests {
        assert!(
            request.to - request.from <= 90 * 86_400,
            "{request:?}: hourly needs ≤ 90 days"
        );
        assert!(
            request.to - request.from >= 2 * 86_400,
            "{request:?}: 1 day would come 5-minutely"
        );
        assert!(
            request.from > now - 365 * 86_400,
            "{request:?}: Demo serves 365 days"
        );
        assert_eq!(request.interval, None, "Demo has no interval");
        assert_eq!(request.precision.as_deref(), Some("full"));
        assert_eq!(request.vs_currency, "usd");
    }
    assert!(now - requests[4].to < 60, "the window ends now");
    let granularities: Vec<String> = common::column(
        &app.db,
        "SELECT DISTINCT granularity FROM price_history WHERE source = 'backfill'",
    )
    .await;
    assert_eq!(granularities, ["hourly"]);

    // Daily, the same year is one call; on Pro it says so with interval=daily.
    let mut app = spawn_app().await;
    app.set("COINGECKO_API_PLAN", "pro");
    let book = stubbed(&mut app, "usd").await;
    let daily = request(Window::Days(365), Some(&["bitcoin"]), Granularity::Daily);
    let summary = backfill(&app, &daily).await;
    assert_eq!((summary.chunks_done, summary.calls), (1, 1));
    let request = &book.requests()[0];
    assert_eq!(request.interval.as_deref(), Some("daily"));
    let rows: Vec<String> = common::column(
        &app.db,
        "SELECT DISTINCT to_char(source_updated_at AT TIME ZONE 'UTC', 'HH24:MI') || ' ' || granularity FROM price_history",
    )
    .await;
    assert_eq!(rows, ["00:00 daily"], "daily points at midnight UTC");
}

#[tokio::test]
async fn backfilled_history_is_the_rule_walked_over_the_series_digit_for_digit() {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", "1");
    let book = stubbed(&mut app, "usd,eur").await;
    let request = range(
        "2026-06-01T00:00:00Z",
        "2026-08-15T00:00:00Z",
        &COINS,
        Granularity::Hourly,
    );

    let summary = backfill(&app, &request).await;

    assert_eq!(summary.outcome, BackfillOutcome::Finished);
    // 75 days: one hourly chunk for each coin and currency.
    assert_eq!(summary.chunks_done, 6);
    let stored = history(&app).await;
    let mut expected_rows = 0;
    for currency in ["usd", "eur"] {
        for coin in COINS {
            let (from, to) = (at("2026-06-01T00:00:00Z"), at("2026-08-15T00:00:00Z"));
            let served: Vec<(i64, String)> = book
                .expected_points(coin, currency, from.timestamp(), to.timestamp(), None)
                .into_iter()
                .filter(|p| p.0 < to.timestamp_millis())
                .map(|p| (p.0, p.1))
                .collect();
            assert!(
                served.len() > 1000,
                "{coin} {currency}: {} points",
                served.len()
            );
            let want = model(&served, "1");
            let got: Vec<(i64, String)> = stored
                .iter()
                .filter(|((c, id, _), _)| c == currency && id == coin)
                .map(|((_, _, t), (price, source, granularity))| {
                    assert_eq!(
                        (source.as_str(), granularity.as_deref()),
                        ("backfill", Some("hourly"))
                    );
                    (t.timestamp_millis(), price.clone())
                })
                .collect();
            let want_decimal: Vec<(i64, Decimal)> = want
                .iter()
                .map(|(t, p)| (*t, exact_decimal(p).unwrap()))
                .collect();
            let got_decimal: Vec<(i64, Decimal)> = got
                .iter()
                .map(|(t, p)| (*t, Decimal::from_str(p).unwrap()))
                .collect();
            assert_eq!(got_decimal, want_decimal, "{coin} in {currency}");
            expected_rows += want.len() as u64;
        }
    }
    assert_eq!(summary.history_inserted, expected_rows);
    // Bitcoin's prices are written without an exponent: the digits themselves are kept.
    let bitcoin_first = book.expected_points(
        "bitcoin",
        "usd",
        at("2026-06-01T00:00:00Z").timestamp(),
        at("2026-06-02T00:00:00Z").timestamp(),
        None,
    )[0]
    .1
    .clone();
    assert_eq!(
        stored[&("usd".into(), "bitcoin".into(), at("2026-06-01T00:00:00Z"))].0,
        bitcoin_first
    );
    // The live reference is untouched: no coin has a latest price.
    assert_eq!(app.count("current_prices").await, 0);
}

#[tokio::test]
async fn a_coin_the_plan_refuses_ends_alone_and_a_rate_limit_only_waits() {
    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd,eur").await;
    book.refuse_range("ethereum");
    book.rate_limit_call(2);
    let request = range(
        "2026-01-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        &COINS,
        Granularity::Daily,
    );

    let summary = backfill(&app, &request).await;

    assert_eq!(summary.outcome, BackfillOutcome::Finished);
    assert_eq!(summary.refused.len(), 1, "{:?}", summary.refused);
    let refused = &summary.refused[0];
    assert_eq!(refused.coin_id, "ethereum");
    assert!(
        refused.error.contains("365 days") && refused.error.contains("COINGECKO_API_PLAN=pro"),
        "{}",
        refused.error
    );
    // ethereum: one call refused, its other currency given up without a call.
    assert_eq!(summary.chunks_refused, 2);
    assert_eq!(summary.chunks_done, 4);
    // 4 chunks, ethereum's refusal, and the 429 answered again after its Retry-After.
    assert_eq!(summary.calls, 6);
    let coins: Vec<String> = common::column(
        &app.db,
        "SELECT DISTINCT coin_id FROM price_history ORDER BY 1",
    )
    .await;
    assert_eq!(coins, ["bitcoin", "solana"]);
}

#[tokio::test]
async fn an_invocation_cut_off_resumes_to_the_same_rows_and_a_second_backfill_adds_nothing() {
    let request = range(
        "2026-03-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        &COINS,
        Granularity::Hourly,
    );
    let mut whole = spawn_app().await;
    stubbed(&mut whole, "usd,eur").await;
    let uninterrupted = backfill(&whole, &request).await;
    assert_eq!(uninterrupted.outcome, BackfillOutcome::Finished);

    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd,eur").await;
    book.delay(std::time::Duration::from_millis(400));
    // 2 s an invocation: about four chunks.
    let short = [("FETCH_BUDGET_SECS", "2")];
    let mut invocations = Vec::new();
    loop {
        let summary = backfiller(&app, &short)
            .await
            .backfill(&request, None)
            .await
            .expect("an invocation failed");
        let outcome = summary.outcome;
        invocations.push(summary);
        if outcome == BackfillOutcome::Finished {
            break;
        }
        assert_eq!(outcome, BackfillOutcome::OutOfTime);
        assert!(invocations.len() < 40, "no progress");
    }
    assert!(invocations.len() >= 3, "{} invocations", invocations.len());
    assert_eq!(
        invocations.iter().map(|s| s.chunks_done).sum::<u64>(),
        uninterrupted.chunks_done
    );
    assert_eq!(history(&app).await, history(&whole).await, "row for row");

    let before = app.price_tables().await;
    let calls = book.requests().len();
    let again = backfill(&app, &request).await;
    assert_eq!(again.outcome, BackfillOutcome::AlreadyDone);
    assert_eq!((again.calls, again.history_inserted), (0, 0));
    let shorter = range(
        "2026-06-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        &COINS,
        Granularity::Hourly,
    );
    assert_eq!(
        backfill(&app, &shorter).await.outcome,
        BackfillOutcome::AlreadyDone
    );
    assert_eq!(book.requests().len(), calls);
    assert_eq!(app.price_tables().await, before);
}

#[tokio::test]
async fn two_backfills_at_once_write_each_row_once() {
    let request = range(
        "2026-03-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        &COINS,
        Granularity::Hourly,
    );
    let mut whole = spawn_app().await;
    stubbed(&mut whole, "usd").await;
    backfill(&whole, &request).await;

    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd").await;
    book.delay(std::time::Duration::from_millis(50));
    let (a, b) = (backfiller(&app, &[]).await, backfiller(&app, &[]).await);
    let (first, second) = tokio::join!(a.backfill(&request, None), b.backfill(&request, None));
    let outcomes = [first.unwrap().outcome, second.unwrap().outcome];

    assert!(
        outcomes.contains(&BackfillOutcome::Finished),
        "{outcomes:?}"
    );
    assert!(
        // The other finds it at work, or (on a slow start) already done.
        outcomes.contains(&BackfillOutcome::Busy)
            || outcomes.contains(&BackfillOutcome::AlreadyDone),
        "{outcomes:?}"
    );
    assert_eq!(history(&app).await, history(&whole).await);
    let chunks = 3 * 3;
    assert_eq!(book.requests().len(), chunks, "no chunk fetched twice");
}

#[tokio::test]
async fn a_backfill_beside_live_runs_fills_only_before_the_first_live_row() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "3");
    let book = stubbed(&mut app, "usd,eur").await;
    let now = Utc::now();
    let live_at = |t: DateTime<Utc>| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let serve_live = |t: DateTime<Utc>| {
        let app = &app;
        let book = &book;
        async move {
            app.serve(&[page(&[
                coin("bitcoin", "95000.5", &live_at(t)),
                coin("ethereum", "3100.25", &live_at(t)),
                coin("solana", "140.125", &live_at(t)),
            ])])
            .await;
            let prices = common::simple_price::PriceBook::default();
            for c in COINS {
                prices.set(c, "eur", "1.5", t.timestamp());
            }
            prices.serve_on(&app.coingecko).await;
            book.serve_on(&app.coingecko).await;
        }
    };
    // The live run goes first: the backfill of the tracked coins stops at its rows.
    serve_live(now - TimeDelta::days(3)).await;
    app.run().await;
    let reference: Vec<String> = common::column(
        &app.db,
        "SELECT recorded_price::text FROM quotes ORDER BY vs_currency, coin_key",
    )
    .await;
    let month = request(Window::Days(30), None, Granularity::Hourly);

    // The next live run and the backfill at once.
    serve_live(now - TimeDelta::days(2)).await;
    let (live, filled) = tokio::join!(app.try_run(None), backfill(&app, &month));
    live.expect("the live run failed");

    assert_eq!(filled.outcome, BackfillOutcome::Finished);
    assert_eq!(filled.chunks_done, 3 * 2);
    let first_live: Vec<(String, String, DateTime<Utc>)> = app
        .db
        .query(
            "SELECT vs_currency, coin_id, min(source_updated_at) FROM price_history
             WHERE source = 'live' GROUP BY 1, 2",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(first_live.len(), 6);
    let stored = history(&app).await;
    let (from, to) = (filled.window_from.unwrap(), filled.window_to.unwrap());
    for (currency, coin, live) in first_live {
        // The series up to the first live row, walked by the rule: nothing at or after it.
        let served: Vec<(i64, String)> = book
            .expected_points(&coin, &currency, from.timestamp(), to.timestamp(), None)
            .into_iter()
            .filter(|p| p.0 >= from.timestamp_millis() && p.0 < live.timestamp_millis())
            .map(|p| (p.0, p.1))
            .collect();
        let want: Vec<(i64, Decimal)> = model(&served, "0.5")
            .into_iter()
            .map(|(t, p)| (t, exact_decimal(&p).unwrap()))
            .collect();
        let got: Vec<(i64, Decimal)> = stored
            .iter()
            .filter(|((c, id, _), (_, source, _))| {
                c == &currency && id == &coin && source == "backfill"
            })
            .map(|((_, _, t), (price, _, _))| {
                (t.timestamp_millis(), Decimal::from_str(price).unwrap())
            })
            .collect();
        assert!(!got.is_empty(), "{coin} {currency}");
        assert_eq!(got, want, "{coin} {currency}: live from {live}");
    }
    let after: Vec<String> = common::column(
        &app.db,
        "SELECT recorded_price::text FROM quotes ORDER BY vs_currency, coin_key",
    )
    .await;
    assert_eq!(
        after, reference,
        "the live CDC reference never moves for a backfill"
    );
    let live_rows: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM price_history WHERE source = 'live'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        live_rows, 6,
        "the second live run moved no price: only the first recorded"
    );
}

#[tokio::test]
async fn the_monthly_call_budget_stops_the_backfill_and_status_shows_what_is_left() {
    let mut app = spawn_app().await;
    stubbed(&mut app, "usd").await;
    let request = range(
        "2026-03-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
        &COINS,
        Granularity::Hourly,
    );

    let summary = backfiller(&app, &[("COINGECKO_MONTHLY_CALL_BUDGET", "4")])
        .await
        .backfill(&request, None)
        .await
        .unwrap();

    assert_eq!(summary.outcome, BackfillOutcome::OutOfMonthlyCalls);
    assert_eq!(
        (summary.calls, summary.chunks_done, summary.chunks_left),
        (4, 4, 5)
    );
    let output = common::cli(&app, &["status", "--json"], &[]).await;
    let status = common::stdout_json(&output);
    let progress = &status["backfill"]["progress"];
    assert_eq!(progress["chunks_left"], 5);
    assert_eq!(progress["calls"], 4);
    assert_eq!(progress["coins_done"], 1);
    assert_eq!(status["backfill"]["estimate"]["calls_left"], 5);
    assert_eq!(
        status["runs"].as_array().unwrap().len(),
        0,
        "a backfill is no live run"
    );
}

#[tokio::test]
async fn a_chunk_aged_past_the_demo_plans_year_is_refused_without_a_call() {
    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd").await;
    let request = request(Window::Days(100), Some(&["bitcoin"]), Granularity::Daily);
    // No time for the answer: the backfill is planned, then left.
    book.delay(std::time::Duration::from_millis(1500));
    let planned = backfiller(&app, &[("FETCH_BUDGET_SECS", "1")])
        .await
        .backfill(&request, None)
        .await
        .unwrap();
    book.delay(std::time::Duration::ZERO);
    let asked = book.requests().len();
    assert_eq!(
        (planned.outcome, planned.chunks_left),
        (BackfillOutcome::OutOfTime, 1)
    );
    // Resumed 400 days later, as far as the job can tell.
    app.db
        .batch_execute(
            "UPDATE backfill_chunks SET chunk_from = chunk_from - interval '400 days',
                                        chunk_to = chunk_to - interval '400 days';
             UPDATE backfill_jobs SET window_from = window_from - interval '400 days',
                                      window_to = window_to - interval '400 days'",
        )
        .await
        .unwrap();

    let resumed = backfill(&app, &request).await;

    assert_eq!(resumed.outcome, BackfillOutcome::Finished);
    assert!(
        resumed.refused[0].error.contains("365 days"),
        "{:?}",
        resumed.refused
    );
    // The old job's chunk is given up unasked; the last 100 days of today get a job of their own.
    assert_eq!(
        (resumed.chunks_refused, resumed.chunks_done, resumed.calls),
        (1, 1, 1)
    );
    let requests = book.requests();
    assert_eq!(requests.len(), asked + 1);
    let today = Utc::now().timestamp();
    assert!(
        requests[asked].from > today - 101 * 86_400,
        "{:?}: only today's window is asked",
        requests[asked]
    );
}

/// A `/coins/markets` row with a rank, so that the tracked coins are the first by market cap.
fn ranked(id: &str, rank: u32, at: DateTime<Utc>) -> String {
    let at = at.format("%Y-%m-%dT%H:%M:%S%.3fZ");
    format!(
        r#"{{"id":"{id}","symbol":"{id}","name":"Coin {id}","current_price":100.5,"market_cap":1000,"market_cap_rank":{rank},"total_volume":10,"last_updated":"{at}"}}"#
    )
}

/// One live run serving `coins` (in rank order) on the stub, beside the chart book.
async fn live_run(app: &TestApp, book: &ChartBook, coins: &[&str], at: DateTime<Utc>) {
    let rows: Vec<String> = coins
        .iter()
        .zip(1..)
        .map(|(id, rank)| ranked(id, rank, at))
        .collect();
    app.serve(&[page(&rows)]).await;
    book.serve_on(&app.coingecko).await;
    app.run().await;
}

/// The two columns of a query's rows.
async fn two_columns<A, B>(app: &TestApp, sql: &str) -> Vec<(A, B)>
where
    A: for<'a> tokio_postgres::types::FromSql<'a>,
    B: for<'a> tokio_postgres::types::FromSql<'a>,
{
    let rows = app.db.query(sql, &[]).await.unwrap();
    rows.iter().map(|r| (r.get(0), r.get(1))).collect()
}

/// The (coin, currency) pairs with backfilled rows.
async fn backfilled_pairs(app: &TestApp) -> BTreeSet<(String, String)> {
    two_columns::<String, String>(
        app,
        "SELECT DISTINCT coin_id, vs_currency FROM price_history WHERE source = 'backfill'",
    )
    .await
    .into_iter()
    .collect()
}

fn pair(coin: &str, currency: &str) -> (String, String) {
    (coin.to_string(), currency.to_string())
}

#[tokio::test]
async fn coins_and_currencies_a_finished_backfill_never_covered_get_their_own_chunks() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "2");
    let book = stubbed(&mut app, "usd").await;
    let now = Utc::now();
    // The live runs track bitcoin and ethereum; a month of backfill finishes for them.
    live_run(
        &app,
        &book,
        &["bitcoin", "ethereum"],
        now - TimeDelta::days(2),
    )
    .await;
    let month = request(Window::Days(30), None, Granularity::Daily);
    let first = backfill(&app, &month).await;
    assert_eq!(
        (first.outcome, first.chunks_done),
        (BackfillOutcome::Finished, 2)
    );
    assert_eq!(
        backfill(&app, &month).await.outcome,
        BackfillOutcome::AlreadyDone,
        "nothing new: nothing to do"
    );

    // Solana enters the top 2: the same backfill now has a coin to cover, and only that one.
    live_run(
        &app,
        &book,
        &["solana", "bitcoin"],
        now - TimeDelta::days(1),
    )
    .await;
    let asked = book.requests().len();
    let second = backfill(&app, &month).await;
    assert_eq!(
        (second.outcome, second.chunks_done),
        (BackfillOutcome::Finished, 1),
        "{second:?}"
    );
    let requests = book.requests();
    assert_eq!(requests.len(), asked + 1);
    assert_eq!(requests[asked].coin_id, "solana");
    let solana = request(Window::Days(30), Some(&["solana"]), Granularity::Daily);
    assert_eq!(
        backfill(&app, &solana).await.outcome,
        BackfillOutcome::AlreadyDone
    );

    // A new currency: bitcoin has no eur yet.
    app.set("VS_CURRENCIES", "usd,eur");
    let bitcoin = request(Window::Days(30), Some(&["bitcoin"]), Granularity::Daily);
    let third = backfill(&app, &bitcoin).await;
    assert_eq!(
        (third.outcome, third.chunks_done),
        (BackfillOutcome::Finished, 1),
        "{third:?}"
    );
    assert_eq!(book.requests().last().unwrap().vs_currency, "eur");
    let pairs = backfilled_pairs(&app).await;
    for covered in [
        pair("bitcoin", "usd"),
        pair("ethereum", "usd"),
        pair("solana", "usd"),
        pair("bitcoin", "eur"),
    ] {
        assert!(pairs.contains(&covered), "{covered:?}: {pairs:?}");
    }

    // Status tells the tracked coins (solana, bitcoin) in both currencies: solana's eur is left.
    let output = common::cli(&app, &["status", "--json"], &[]).await;
    let coverage = &common::stdout_json(&output)["backfill"]["coverage"];
    let states: Vec<(String, String, String)> = coverage["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let text = |key: &str| p[key].as_str().unwrap().to_string();
            (text("coin_id"), text("vs_currency"), text("state"))
        })
        .collect();
    let state = |coin: &str, vs: &str, state: &str| (coin.into(), vs.into(), state.into());
    assert_eq!(
        states,
        [
            state("solana", "usd", "covered"),
            state("solana", "eur", "not_covered"),
            state("bitcoin", "usd", "covered"),
            state("bitcoin", "eur", "covered"),
        ]
    );
    assert_eq!(coverage["granularity"], "hourly");
    let output = common::cli(&app, &["status"], &[]).await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("3 of 4 coins and currencies covered; not covered: solana eur"),
        "{text}"
    );

    // The default backfill covers the rest; then everything is covered.
    let fourth = backfill(&app, &month).await;
    assert_eq!(
        (fourth.outcome, fourth.chunks_done),
        (BackfillOutcome::Finished, 1),
        "{fourth:?}"
    );
    assert_eq!(
        backfill(&app, &month).await.outcome,
        BackfillOutcome::AlreadyDone
    );
    let output = common::cli(&app, &["status"], &[]).await;
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("4 of 4 coins and currencies covered"),
        "{text}"
    );
}

#[tokio::test]
async fn an_open_backfill_is_finished_first_then_the_request_gets_its_own() {
    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd").await;
    let window = || Window::Range {
        from: at("2026-06-01T00:00:00Z"),
        to: Some(at("2026-08-01T00:00:00Z")),
    };
    let first = request(
        window(),
        Some(&["bitcoin", "ethereum"]),
        Granularity::Hourly,
    );
    // Planned, then left open: no time for an answer.
    book.delay(std::time::Duration::from_millis(1500));
    let planned = backfiller(&app, &[("FETCH_BUDGET_SECS", "1")])
        .await
        .backfill(&first, None)
        .await
        .unwrap();
    assert_eq!(planned.outcome, BackfillOutcome::OutOfTime);
    book.delay(std::time::Duration::ZERO);

    // Another request meanwhile: the open one is finished, then solana gets its own job.
    let other = request(window(), Some(&["solana"]), Granularity::Hourly);
    let summary = backfill(&app, &other).await;
    assert_eq!(summary.outcome, BackfillOutcome::Finished, "{summary:?}");
    assert_eq!(summary.chunks_done, 3, "{summary:?}");
    let pairs = backfilled_pairs(&app).await;
    assert_eq!(
        pairs.into_iter().collect::<Vec<_>>(),
        [
            pair("bitcoin", "usd"),
            pair("ethereum", "usd"),
            pair("solana", "usd")
        ]
    );
    for asked in [first, other] {
        assert_eq!(
            backfill(&app, &asked).await.outcome,
            BackfillOutcome::AlreadyDone
        );
    }
    // A window reaching past what was covered is not covered.
    let longer = range(
        "2026-06-01T00:00:00Z",
        "2026-09-01T00:00:00Z",
        &["bitcoin"],
        Granularity::Hourly,
    );
    assert_eq!(
        backfill(&app, &longer).await.outcome,
        BackfillOutcome::Finished
    );
}

#[tokio::test]
async fn repeated_coins_count_once_and_empty_ids_are_refused_on_every_path() {
    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd").await;

    for (coins, refused) in [("newcoin,newcoin", 1), ("bitcoin,bitcoin", 0)] {
        let output = common::cli(&app, &["backfill", "--days", "3", "--coins", coins], &[]).await;
        assert_eq!(
            output.status.code(),
            Some(0),
            "{coins}: {}",
            common::last_stderr_line(&output)
        );
        let summary = common::stdout_json(&output);
        assert_eq!(summary["outcome"], "finished", "{coins}: {summary}");
        assert_eq!(
            summary["refused"].as_array().unwrap().len(),
            refused,
            "{coins}"
        );
        assert_eq!(summary["calls"], 1, "{coins}: one chunk, asked once");
    }
    let calls = book.requests().len();
    assert_eq!(calls, 2);

    let output = common::cli(&app, &["backfill", "--days", "3", "--coins", ","], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let cause = common::last_stderr_line(&output);
    assert!(
        cause.contains("coin id number 1 is empty") && cause.contains("--coins bitcoin,ethereum"),
        "{cause}"
    );

    let function = backfiller(&app, &[]).await;
    for (coins, why) in [
        (serde_json::json!([""]), "is empty"),
        // Not the default coins: a template that lost its ids must not backfill them all.
        (serde_json::json!([]), "an empty list"),
    ] {
        let payload = serde_json::json!({"backfill": {"days": 3, "coins": coins}});
        let refused = coingecko_cdc::lambda::handle(
            &function,
            lambda_runtime::LambdaEvent::new(payload, lambda_runtime::Context::default()),
        )
        .await
        .expect_err("an empty coin id or list is refused");
        let diagnostic = lambda_runtime::Diagnostic::from(refused);
        assert_eq!(diagnostic.error_type, "UnrecognisedEvent");
        assert!(
            diagnostic.error_message.contains(why),
            "{coins}: {}",
            diagnostic.error_message
        );
    }
    assert_eq!(book.requests().len(), calls, "no call for an empty id");
    let empty: Vec<i64> =
        common::column(&app.db, "SELECT count(*) FROM coins WHERE coin_id = ''").await;
    assert_eq!(empty, [0]);
}

#[tokio::test]
async fn a_backfill_writes_only_inside_its_window_and_says_the_granularity_its_rows_carry() {
    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd").await;

    // One day, daily by default: on the Demo plan one 2-day request, which comes hourly.
    let output = common::cli(
        &app,
        &["backfill", "--days", "1", "--coins", "bitcoin"],
        &[],
    )
    .await;
    let summary = common::stdout_json(&output);
    assert_eq!(summary["outcome"], "finished", "{summary}");
    let request = &book.requests()[0];
    assert_eq!(request.to - request.from, 2 * 86_400, "fetched wider");
    assert_eq!(summary["granularity"], "hourly");
    let from: DateTime<Utc> = summary["window_from"].as_str().unwrap().parse().unwrap();
    let to: DateTime<Utc> = summary["window_to"].as_str().unwrap().parse().unwrap();
    let rows: Vec<(DateTime<Utc>, Option<String>)> = two_columns(
        &app,
        "SELECT source_updated_at, granularity FROM price_history",
    )
    .await;
    assert!(!rows.is_empty());
    for (at, granularity) in &rows {
        assert!(from <= *at && *at < to, "{at} outside {from} to {to}");
        assert_eq!(granularity.as_deref(), Some("hourly"));
    }
    assert_eq!(
        summary["history_inserted"].as_u64(),
        Some(rows.len() as u64)
    );
    let output = common::cli(&app, &["status", "--json"], &[]).await;
    let status = common::stdout_json(&output);
    assert_eq!(status["backfill"]["progress"]["granularity"], "hourly");
}

#[tokio::test]
async fn the_monthly_budget_counts_the_calls_of_a_failed_live_run() {
    let mut app = spawn_app().await;
    app.set("COINGECKO_MAX_ATTEMPTS", "3");
    let book = stubbed(&mut app, "usd").await;
    wiremock::Mock::given(wiremock::matchers::path("/coins/markets"))
        .respond_with(wiremock::ResponseTemplate::new(500).set_body_string("down"))
        .mount(&app.coingecko)
        .await;
    app.try_run(None).await.expect_err("CoinGecko is down");

    let budget = [("COINGECKO_MONTHLY_CALL_BUDGET", "3")];
    let request = request(Window::Days(30), Some(&["bitcoin"]), Granularity::Daily);
    let summary = backfiller(&app, &budget)
        .await
        .backfill(&request, None)
        .await
        .unwrap();
    assert_eq!(summary.outcome, BackfillOutcome::OutOfMonthlyCalls);
    assert_eq!(summary.calls, 0);
    assert!(book.requests().is_empty(), "no 4th call");
    let calls: Vec<Option<i32>> = common::column(
        &app.db,
        "SELECT calls FROM ingest_runs WHERE status = 'failed'",
    )
    .await;
    assert_eq!(calls, [Some(3)], "three attempts, three calls");
}

#[tokio::test]
async fn a_backfill_whose_process_died_is_taken_over_once_its_lease_is_over() {
    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd").await;
    // The lease: the fetch's 2 s, the apply's 1 s + 1 s, and 5 s.
    let settings = [
        ("FETCH_BUDGET_SECS", "2"),
        ("DB_LOCK_TIMEOUT_SECS", "1"),
        ("DB_STATEMENT_TIMEOUT_SECS", "1"),
    ];
    book.delay(std::time::Duration::from_secs(60));
    let mut dying = tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .args(["backfill", "--days", "30", "--coins", "bitcoin"])
        .env_clear()
        .envs(app.env())
        .envs(settings)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let leased = loop {
        let lease: Vec<(DateTime<Utc>, DateTime<Utc>)> = two_columns(
            &app,
            "SELECT created_at, leased_until FROM backfill_jobs WHERE leased_by IS NOT NULL",
        )
        .await;
        if let Some(&lease) = lease.first() {
            break lease;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    dying.kill().await.unwrap();
    book.delay(std::time::Duration::ZERO);
    let (created, until) = leased;
    assert!(
        until - created <= TimeDelta::seconds(10),
        "the lease is the invocation's own bounds: {created} to {until}"
    );

    let request = request(Window::Days(30), Some(&["bitcoin"]), Granularity::Daily);
    let early = backfiller(&app, &settings)
        .await
        .backfill(&request, None)
        .await
        .unwrap();
    assert_eq!(
        early.outcome,
        BackfillOutcome::Busy,
        "within the dead one's lease"
    );
    let wait = (until - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(wait + std::time::Duration::from_millis(200)).await;
    let taken_over = backfiller(&app, &settings)
        .await
        .backfill(&request, None)
        .await
        .unwrap();
    assert_eq!(
        (
            taken_over.outcome,
            taken_over.chunks_done,
            taken_over.job_id
        ),
        (BackfillOutcome::Finished, 1, early.job_id)
    );
}

#[tokio::test]
async fn a_backfill_that_cannot_start_holds_no_lease() {
    let mut app = spawn_app().await;
    stubbed(&mut app, "usd").await;
    // Too large to add to a clock: refused or failed, it must fail before the job is leased.
    let output = common::cli(
        &app,
        &["backfill", "--days", "3", "--coins", "bitcoin"],
        &[("FETCH_BUDGET_SECS", "18446744073709551615")],
    )
    .await;
    assert_ne!(output.status.code(), Some(0));
    let request = request(Window::Days(3), Some(&["bitcoin"]), Granularity::Daily);
    let next = backfill(&app, &request).await;
    assert_eq!(next.outcome, BackfillOutcome::Finished, "{next:?}");
}

/// A fixed window of whole hours, `from_days_ago` to `to_days_ago` (0: now, so ending now).
fn days_ago(from_days_ago: i64, to_days_ago: i64, granularity: Granularity) -> BackfillRequest {
    let hour = Utc::now().timestamp() / 3600 * 3600;
    let day = |ago: i64| DateTime::from_timestamp(hour - ago * 86_400, 0).unwrap();
    let window = match to_days_ago {
        0 => Window::Days(from_days_ago as u32),
        _ => Window::Range {
            from: day(from_days_ago),
            to: Some(day(to_days_ago)),
        },
    };
    request(window, Some(&["bitcoin"]), granularity)
}

/// Bitcoin's rows in usd: time → price.
async fn bitcoin_rows(app: &TestApp) -> BTreeMap<DateTime<Utc>, Decimal> {
    history(app)
        .await
        .into_iter()
        .filter(|((vs, coin, _), _)| vs == "usd" && coin == "bitcoin")
        .map(|((_, _, t), (price, _, _))| (t, Decimal::from_str(&price).unwrap()))
        .collect()
}

/// The points the stub serves bitcoin in usd over `[from, to)` at `interval`, asked in slices of
/// 30 days (a longer request would be served daily).
fn bitcoin_served(
    book: &ChartBook,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    interval: Option<&str>,
) -> Vec<(DateTime<Utc>, Decimal)> {
    let mut served = Vec::new();
    let (mut start, end) = (from.timestamp(), to.timestamp());
    while start < end {
        let slice_end = (start + 30 * 86_400).min(end);
        served.extend(
            book.expected_points("bitcoin", "usd", start, slice_end, interval)
                .into_iter()
                .filter(|p| p.0 < slice_end * 1000)
                .map(|p| {
                    let at = DateTime::from_timestamp_millis(p.0).unwrap();
                    (at, exact_decimal(&p.1).unwrap())
                }),
        );
        start = slice_end;
    }
    served
}

/// What a user expects of a series: each point served is a row, or moved less than `pct` % from
/// the last row before it (held or backfilled, at any granularity). The points that are neither.
fn unrecorded_moves(
    served: &[(DateTime<Utc>, Decimal)],
    rows: &BTreeMap<DateTime<Utc>, Decimal>,
    pct: &str,
) -> Vec<String> {
    let pct = Decimal::from_str(pct).unwrap();
    served
        .iter()
        .filter(|(t, _)| !rows.contains_key(t))
        .filter_map(|(t, price)| match rows.range(..*t).next_back() {
            None => Some(format!("{t}: {price}, no row at or before it")),
            Some((held_at, reference))
                if (price - reference).abs() * Decimal::ONE_HUNDRED >= pct * reference.abs() =>
            {
                Some(format!(
                    "{t}: {price} moved {pct} % or more from {reference} (at {held_at})"
                ))
            }
            Some(_) => None,
        })
        .collect()
}

/// [`unrecorded_moves`] of bitcoin's history in usd over `span`, which has to be none; some of the
/// points must be rows.
async fn assert_no_unrecorded_move(
    app: &TestApp,
    book: &ChartBook,
    span: (DateTime<Utc>, DateTime<Utc>),
    interval: Option<&str>,
    pct: &str,
) {
    let served = bitcoin_served(book, span, interval);
    let rows = bitcoin_rows(app).await;
    let unrecorded = unrecorded_moves(&served, &rows, pct);
    assert!(
        unrecorded.is_empty(),
        "{} of {} points: {:#?}",
        unrecorded.len(),
        served.len(),
        &unrecorded[..unrecorded.len().min(5)]
    );
    assert!(
        served.iter().any(|(t, _)| rows.contains_key(t)),
        "{span:?}: no point recorded"
    );
}

/// [`assert_no_unrecorded_move`] over a backfill's window.
async fn assert_every_move_is_recorded(
    app: &TestApp,
    book: &ChartBook,
    summary: &BackfillSummary,
    interval: Option<&str>,
    pct: &str,
) {
    let span = (summary.window_from.unwrap(), summary.window_to.unwrap());
    assert_no_unrecorded_move(app, book, span, interval, pct).await;
}

/// The times of a backfill invocation's rows.
async fn rows_of_run(app: &TestApp, summary: &BackfillSummary) -> Vec<DateTime<Utc>> {
    let rows = app
        .db
        .query(
            "SELECT source_updated_at FROM price_history WHERE run_id = $1 ORDER BY 1",
            &[&summary.run_id],
        )
        .await
        .unwrap();
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test]
async fn a_wider_backfill_fills_around_a_narrower_one_and_walks_from_its_rows() {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", "1");
    let book = stubbed(&mut app, "usd").await;
    let narrow = backfill(&app, &days_ago(40, 30, Granularity::Hourly)).await;
    let wide_request = days_ago(80, 10, Granularity::Hourly);

    let wide = backfill(&app, &wide_request).await;

    assert_eq!(
        (wide.outcome, wide.chunks_done),
        (BackfillOutcome::Finished, 1)
    );
    let added = rows_of_run(&app, &wide).await;
    let (narrow_from, narrow_to) = (narrow.window_from.unwrap(), narrow.window_to.unwrap());
    assert!(
        added.iter().any(|t| *t < narrow_from),
        "before the narrow one"
    );
    assert!(
        added.iter().any(|t| *t >= narrow_to),
        "after the narrow one"
    );
    assert!(
        added.iter().all(|t| *t < narrow_from || *t >= narrow_to),
        "the narrow one's span is left as it was"
    );
    assert_every_move_is_recorded(&app, &book, &wide, None, "1").await;
    assert_eq!(
        backfill(&app, &wide_request).await.outcome,
        BackfillOutcome::AlreadyDone
    );
}

#[tokio::test]
async fn hourly_fills_a_span_held_daily_and_daily_takes_what_hourly_holds() {
    let mut app = spawn_app().await;
    app.set("COINGECKO_API_PLAN", "pro");
    app.set("CDC_THRESHOLD_PCT", "1");
    let book = stubbed(&mut app, "usd").await;
    let hourly = backfill(&app, &days_ago(60, 40, Granularity::Hourly)).await;
    let (hourly_from, hourly_to) = (hourly.window_from.unwrap(), hourly.window_to.unwrap());

    // Daily over the hourly span: the hourly rows serve it.
    let daily = backfill(&app, &days_ago(100, 20, Granularity::Daily)).await;
    assert_eq!(daily.granularity.as_deref(), Some("daily"));
    let added = rows_of_run(&app, &daily).await;
    assert!(added.iter().any(|t| *t < hourly_from));
    assert!(
        added.iter().any(|t| *t >= hourly_to),
        "after the hourly span"
    );
    assert!(added.iter().all(|t| *t < hourly_from || *t >= hourly_to));
    assert_every_move_is_recorded(&app, &book, &daily, Some("daily"), "1").await;

    // Hourly over a span held daily: the hours between the days are filled.
    let request = days_ago(70, 50, Granularity::Hourly);
    let finer = backfill(&app, &request).await;
    assert_eq!(
        (finer.outcome, finer.chunks_done),
        (BackfillOutcome::Finished, 1)
    );
    let added = rows_of_run(&app, &finer).await;
    assert!(
        added.iter().any(|t| t.timestamp() % 86_400 != 0),
        "hours between the days: {added:?}"
    );
    assert!(added.iter().all(|t| *t < hourly_from), "{added:?}");
    assert_every_move_is_recorded(&app, &book, &finer, None, "1").await;
    assert_eq!(
        backfill(&app, &request).await.outcome,
        BackfillOutcome::AlreadyDone
    );
}

#[tokio::test]
async fn a_window_ending_now_fills_the_time_since_an_earlier_backfill_ended() {
    let mut app = spawn_app().await;
    // Any move: the stub's prices change once a day, and the last two days must hold a row
    // whatever today's date makes of them (with 1 %, two quiet days of 2024 left none).
    app.set("CDC_THRESHOLD_PCT", "0");
    let book = stubbed(&mut app, "usd").await;
    // Bitcoin has no live rows: nothing else records the last two days.
    let earlier = backfill(&app, &days_ago(100, 2, Granularity::Hourly)).await;
    assert_eq!(earlier.chunks_done, 2, "8 days, then 90");
    let until_now = days_ago(100, 0, Granularity::Hourly);

    let now = backfill(&app, &until_now).await;

    assert_eq!(
        (now.outcome, now.chunks_done, now.calls),
        (BackfillOutcome::Finished, 1, 1),
        "the newest 90 days, not the 10 before them, which are held: {now:?}"
    );
    let added = rows_of_run(&app, &now).await;
    assert!(!added.is_empty());
    assert!(added.iter().all(|t| *t >= earlier.window_to.unwrap()));
    assert_every_move_is_recorded(&app, &book, &now, None, "0").await;
    assert_eq!(
        backfill(&app, &until_now).await.outcome,
        BackfillOutcome::AlreadyDone,
        "within the last hour: nothing to add yet"
    );
}
