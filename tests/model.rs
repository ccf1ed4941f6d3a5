//! A model-based test of the CDC: random markets and sequences of runs go through the real
//! ingest (real PostgreSQL, the CoinGecko stub), and after every run `current_prices`,
//! `price_history` and the summary must equal what a small reference model of the documented
//! rule says, digit for digit. proptest shrinks a failure to a minimal sequence of runs.
//!
//! The model is what a user expects: the newest observation of a coin wins. Coins come randomly
//! older or newer than what is held (a stale cache); an older one changes nothing and is counted
//! out of order. Overlapping runs with answers of different ages must end at the newest
//! observation of every coin, whatever order they applied in.
//!
//! With several quote currencies, each currency's stream must equal the same model fed that
//! currency's prices.
//!
//! `CDC_MODEL_CASES` sets how many sequences are tried (default 96, about 290 runs);
//! `CDC_OVERLAP_CASES` how many sets of 4–8 overlapping runs (default 24, about 140 runs);
//! `CDC_CURRENCY_CASES` how many sequences in three currencies (default 48, about 120 runs).

mod common;
#[path = "model/feed.rs"]
mod feed;

use std::collections::BTreeMap;
use std::str::FromStr;

use coingecko_cdc::summary::{CurrencySummary, Summary};
use common::simple_price::PriceBook;
use common::{page, spawn_app, TestApp};
use futures::future::join_all;
use proptest::prelude::*;
use rust_decimal::Decimal;
use uuid::Uuid;
use wiremock::MockServer;

const COINS: [&str; 5] = ["alpha", "beta", "gamma", "delta", "epsilon"];
/// Around 100 with steps below, at and above the usual thresholds, plus zero and tiny prices.
const PRICES: [&str; 14] = [
    "100",
    "100.0",
    "100.2",
    "100.4",
    "100.5",
    "100.49",
    "99.5",
    "99.51",
    "101",
    "150",
    "0",
    "0.00000315",
    "0.0000031815",
    "3.15e-06",
];
const THRESHOLDS: [&str; 5] = ["0", "0.5", "1", "50", "10000"];
/// The currencies priced by `/simple/price` after usd's `/coins/markets`.
const FURTHER: [&str; 2] = ["eur", "btc"];

/// One entry of an answer: a coin, its price (None: null, so rejected) and its last_updated minute.
#[derive(Debug, Clone)]
struct Entry {
    coin: usize,
    price: Option<&'static str>,
    minute: u32,
}

fn entry(run: u32) -> impl Strategy<Value = Entry> {
    (
        0..COINS.len(),
        prop::option::weighted(0.9, prop::sample::select(PRICES.to_vec())),
        // Now and then a minute or two old: a timestamp that did not move, or a stale cache's
        // answer older than what an earlier run brought.
        prop::sample::select(vec![0, 0, 0, 1, 2]),
    )
        .prop_map(move |(coin, price, age)| Entry {
            coin,
            price,
            minute: run.saturating_sub(age),
        })
}

fn runs() -> impl Strategy<Value = Vec<Vec<Entry>>> {
    runs_of(1..6)
}

fn runs_of(count: std::ops::Range<u32>) -> impl Strategy<Value = Vec<Vec<Entry>>> {
    count.prop_flat_map(|count| {
        (0..count)
            .map(|run| prop::collection::vec(entry(run), 0..7))
            .collect::<Vec<_>>()
    })
}

/// A further currency's price for each coin in one run: a price, `Some(None)` for null, `None`
/// when the answer leaves the currency out.
type FurtherPrices = Vec<Option<Option<&'static str>>>;

/// Runs in usd, each with the prices of every further currency.
fn runs_in_currencies() -> impl Strategy<Value = Vec<(Vec<Entry>, Vec<FurtherPrices>)>> {
    runs_of(1..5).prop_flat_map(|runs| {
        let further = prop::collection::vec(
            prop::collection::vec(
                prop::option::weighted(
                    0.9,
                    prop::option::weighted(0.9, prop::sample::select(PRICES.to_vec())),
                ),
                COINS.len(),
            ),
            FURTHER.len(),
        );
        let count = runs.len();
        (Just(runs), prop::collection::vec(further, count))
            .prop_map(|(runs, further)| runs.into_iter().zip(further).collect())
    })
}

fn timestamp(minute: u32) -> String {
    format!(
        "2026-11-27T{:02}:{:02}:00.000Z",
        10 + minute / 60,
        minute % 60
    )
}

/// Of a coin seen more than once in an answer, the newest valid observation: a price beats none,
/// a later minute an earlier one, and of two equal ones the first stays. In order of first sight.
fn newest_of_each_coin(answer: &[Entry]) -> Vec<Entry> {
    let mut kept: Vec<Entry> = Vec::new();
    for entry in answer {
        match kept.iter_mut().find(|k| k.coin == entry.coin) {
            None => kept.push(entry.clone()),
            Some(held) => {
                let newer = match (entry.price, held.price) {
                    (Some(_), None) => true,
                    (Some(_), Some(_)) => entry.minute > held.minute,
                    (None, _) => false,
                };
                if newer {
                    *held = entry.clone();
                }
            }
        }
    }
    kept
}

fn is_recordable(price: Decimal, reference: Option<Decimal>, threshold: Decimal) -> bool {
    reference.is_none_or(|reference| {
        price != reference
            && (price - reference).abs() * Decimal::ONE_HUNDRED >= threshold * reference.abs()
    })
}

/// The documented rule, written again from the README rather than from the code: the newest
/// observation of each coin wins.
#[derive(Default)]
struct Model {
    /// coin → (price, minute) of the newest observation.
    current: BTreeMap<&'static str, (Decimal, u32)>,
    /// coin → prices recorded, oldest first, with their minutes.
    history: BTreeMap<&'static str, Vec<(Decimal, u32)>>,
}

struct Expected {
    fetched: u64,
    rejected: u64,
    history_inserted: u64,
    out_of_order: u64,
}

impl Model {
    fn apply(&mut self, answer: &[Entry], threshold: Decimal) -> Expected {
        let mut expected = Expected {
            fetched: 0,
            rejected: 0,
            history_inserted: 0,
            out_of_order: 0,
        };
        for entry in newest_of_each_coin(answer) {
            let coin = COINS[entry.coin];
            expected.fetched += 1;
            let Some(text) = entry.price else {
                expected.rejected += 1;
                continue;
            };
            if self
                .current
                .get(coin)
                .is_some_and(|&(_, held)| held > entry.minute)
            {
                expected.out_of_order += 1; // older than what is held: changes nothing
                continue;
            }
            let price = parse(text);
            let history = self.history.entry(coin).or_default();
            let reference = history.last().map(|&(price, _)| price);
            // price_history is unique on last_updated: a second price for the same minute waits.
            if is_recordable(price, reference, threshold)
                && history
                    .last()
                    .is_none_or(|&(_, minute)| minute != entry.minute)
            {
                history.push((price, entry.minute));
                expected.history_inserted += 1;
            }
            self.current.insert(coin, (price, entry.minute));
        }
        self.history.retain(|_, h| !h.is_empty());
        expected
    }
}

fn parse(text: &str) -> Decimal {
    Decimal::from_str(text)
        .or_else(|_| Decimal::from_scientific(text))
        .unwrap()
}

async fn stored_current(app: &TestApp, currency: &str) -> BTreeMap<String, (Decimal, String)> {
    app.db
        .query(
            "SELECT coin_id, price::text, to_char(source_updated_at AT TIME ZONE 'UTC', 'HH24:MI')
             FROM current_prices WHERE vs_currency = $1",
            &[&currency],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), (parse(r.get::<_, &str>(1)), r.get(2))))
        .collect()
}

async fn stored_history(app: &TestApp, currency: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut history: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    let rows = app
        .db
        .query(
            "SELECT coin_id, price::text, to_char(source_updated_at AT TIME ZONE 'UTC', 'HH24:MI')
             FROM price_history WHERE vs_currency = $1 ORDER BY coin_id, source_updated_at",
            &[&currency],
        )
        .await
        .unwrap();
    for row in rows {
        history
            .entry(row.get(0))
            .or_default()
            .push((row.get(1), row.get(2)));
    }
    history
}

fn clock(minute: u32) -> String {
    timestamp(minute)[11..16].to_string()
}

fn assert_summary(summary: &Summary, expected: &Expected, run: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(summary.currencies.len(), 1, "{}: currencies", run);
    assert_counts(&summary.currencies[0], expected, run)?;
    prop_assert_eq!(summary.fetched, expected.fetched, "{}: fetched", run);
    prop_assert_eq!(summary.rejected, expected.rejected, "{}: rejected", run);
    prop_assert_eq!(
        summary.history_inserted,
        expected.history_inserted,
        "{}: history_inserted",
        run
    );
    prop_assert_eq!(
        summary.out_of_order,
        expected.out_of_order,
        "{}: out_of_order",
        run
    );
    prop_assert_eq!(
        summary.fetched,
        summary.rejected + summary.history_inserted + summary.unchanged + summary.out_of_order,
        "{}: the counts add up",
        run
    );
    Ok(())
}

fn assert_counts(
    counts: &CurrencySummary,
    expected: &Expected,
    run: &str,
) -> Result<(), TestCaseError> {
    let currency = &counts.vs_currency;
    prop_assert_eq!(
        counts.fetched,
        expected.fetched,
        "{} {}: fetched",
        run,
        currency
    );
    prop_assert_eq!(
        counts.rejected,
        expected.rejected,
        "{} {}: rejected",
        run,
        currency
    );
    prop_assert_eq!(
        counts.history_inserted,
        expected.history_inserted,
        "{} {}: history_inserted",
        run,
        currency
    );
    prop_assert_eq!(
        counts.out_of_order,
        expected.out_of_order,
        "{} {}: out_of_order",
        run,
        currency
    );
    prop_assert_eq!(
        counts.fetched,
        counts.rejected + counts.history_inserted + counts.unchanged + counts.out_of_order,
        "{} {}: the counts add up",
        run,
        currency
    );
    Ok(())
}

/// `current_prices` and `price_history` in usd against the model.
async fn assert_tables(app: &TestApp, model: &Model, run: &str) -> Result<(), TestCaseError> {
    assert_tables_in(app, "usd", model, run).await
}

/// `current_prices` and `price_history` in `currency` against the model, row for row and digit
/// for digit.
async fn assert_tables_in(
    app: &TestApp,
    currency: &str,
    model: &Model,
    run: &str,
) -> Result<(), TestCaseError> {
    let want_current: BTreeMap<String, (Decimal, String)> = model
        .current
        .iter()
        .map(|(coin, (price, minute))| (coin.to_string(), (*price, clock(*minute))))
        .collect();
    prop_assert_eq!(
        stored_current(app, currency).await,
        want_current,
        "{} {}: current_prices",
        run,
        currency
    );
    // The model only ever appends newer rows, so its history is already in time order.
    let want_history: BTreeMap<String, Vec<(String, String)>> = model
        .history
        .iter()
        .map(|(coin, rows)| {
            let rows = rows
                .iter()
                .map(|(p, m)| (p.to_string(), clock(*m)))
                .collect();
            (coin.to_string(), rows)
        })
        .collect();
    prop_assert_eq!(
        stored_history(app, currency).await,
        want_history,
        "{} {}: price_history",
        run,
        currency
    );
    Ok(())
}

fn answer_page(answer: &[Entry]) -> String {
    let coins: Vec<String> = answer
        .iter()
        .map(|e| {
            common::coin(
                COINS[e.coin],
                e.price.unwrap_or("null"),
                &timestamp(e.minute),
            )
        })
        .collect();
    page(&coins)
}

async fn check(threshold: &'static str, runs: Vec<Vec<Entry>>) -> Result<(), TestCaseError> {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", threshold);
    let mut model = Model::default();
    for (number, answer) in runs.iter().enumerate() {
        app.serve(&[answer_page(answer)]).await;
        let summary = app.run().await;
        let expected = model.apply(answer, parse(threshold));
        let run = format!("run {number}");
        assert_summary(&summary, &expected, &run)?;
        assert_tables(&app, &model, &run).await?;
    }
    Ok(())
}

/// Runs in usd, eur and btc: usd from `/coins/markets`, the others from `/simple/price`. Each
/// currency's stream is the model fed that currency's prices for the coins of the usd answer.
async fn check_currencies(
    threshold: &'static str,
    runs: Vec<(Vec<Entry>, Vec<FurtherPrices>)>,
) -> Result<(), TestCaseError> {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", threshold);
    app.set("VS_CURRENCIES", &format!("usd,{}", FURTHER.join(",")));
    let book = PriceBook::default();
    let mut models: Vec<Model> = (0..=FURTHER.len()).map(|_| Model::default()).collect();
    for (number, (answer, further)) in runs.iter().enumerate() {
        app.serve(&[answer_page(answer)]).await;
        book.clear();
        let coins = newest_of_each_coin(answer);
        let mut streams = vec![answer.clone()];
        for (currency, prices) in FURTHER.iter().zip(further) {
            let stream = coins
                .iter()
                .map(|e| {
                    let price = prices[e.coin];
                    if let Some(text) = price {
                        book.set(
                            COINS[e.coin],
                            currency,
                            text.unwrap_or("null"),
                            unix(e.minute),
                        );
                    }
                    Entry {
                        coin: e.coin,
                        price: price.flatten(),
                        minute: e.minute,
                    }
                })
                .collect();
            streams.push(stream);
        }
        book.serve_on(&app.coingecko).await;

        let summary = app.run().await;

        let run = format!("run {number}");
        let currencies = std::iter::once("usd").chain(FURTHER);
        prop_assert_eq!(summary.currencies.len(), streams.len());
        for (((currency, stream), model), counts) in currencies
            .zip(&streams)
            .zip(&mut models)
            .zip(&summary.currencies)
        {
            let expected = model.apply(stream, parse(threshold));
            prop_assert_eq!(&counts.vs_currency, currency);
            assert_counts(counts, &expected, &run)?;
            assert_tables_in(&app, currency, model, &run).await?;
        }
        prop_assert_eq!(
            summary.fetched,
            summary.rejected + summary.history_inserted + summary.unchanged + summary.out_of_order
        );
    }
    Ok(())
}

fn unix(minute: u32) -> i64 {
    chrono::DateTime::parse_from_rfc3339(&timestamp(minute))
        .unwrap()
        .timestamp()
}

/// All runs start at once, each fetching its own answer from its own stub: answers of different
/// ages, applied in whatever order the run lock gives. Whatever that order, every coin ends at
/// its newest observation, and no history row lies before one committed earlier; the summaries
/// and the tables equal the model fed the answers in the order they applied.
async fn check_overlapping(
    threshold: &'static str,
    answers: Vec<Vec<Entry>>,
) -> Result<(), TestCaseError> {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", threshold);
    let mut stubs = Vec::new();
    for answer in &answers {
        let stub = MockServer::start().await;
        common::serve_on(&stub, &[answer_page(answer)]).await;
        stubs.push(stub);
    }

    let uris: Vec<String> = stubs.iter().map(MockServer::uri).collect();
    let summaries = join_all(uris.iter().map(|uri| app.try_run_from(uri, None))).await;

    let summaries: Vec<Summary> = summaries
        .into_iter()
        .map(|s| s.expect("an overlapping run failed"))
        .collect();

    // Whatever the order: each coin at its newest valid observation (of two as new, either).
    let mut newest: BTreeMap<String, (u32, Vec<Decimal>)> = BTreeMap::new();
    for entry in answers.iter().flat_map(|a| newest_of_each_coin(a)) {
        let Some(price) = entry.price.map(parse) else {
            continue;
        };
        let held = newest
            .entry(COINS[entry.coin].to_string())
            .or_insert((entry.minute, Vec::new()));
        if entry.minute > held.0 {
            *held = (entry.minute, Vec::new());
        }
        if entry.minute == held.0 {
            held.1.push(price);
        }
    }
    let current = stored_current(&app, "usd").await;
    prop_assert_eq!(
        current.keys().collect::<Vec<_>>(),
        newest.keys().collect::<Vec<_>>()
    );
    for (coin, (minute, prices)) in &newest {
        let (price, at) = &current[coin];
        prop_assert_eq!(at, &clock(*minute), "{}: not its newest observation", coin);
        prop_assert!(
            prices.contains(price),
            "{}: {} of {:?}",
            coin,
            price,
            prices
        );
    }
    // In commit order, each coin's rows go forward both in CoinGecko's time and in recorded_at.
    let out_of_commit_order: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM (
                 SELECT h.source_updated_at, h.recorded_at,
                        lag(h.source_updated_at) OVER w AS source_before,
                        lag(h.recorded_at) OVER w AS recorded_before
                 FROM price_history h JOIN ingest_runs r USING (run_id)
                 WINDOW w AS (PARTITION BY h.coin_id ORDER BY r.finished_at)) rows
             WHERE source_before >= source_updated_at OR recorded_before > recorded_at",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    prop_assert_eq!(
        out_of_commit_order,
        0,
        "history rows committed after newer ones"
    );

    let applied_in_order: Vec<Uuid> = common::column(
        &app.db,
        "SELECT run_id FROM ingest_runs ORDER BY finished_at",
    )
    .await;
    prop_assert_eq!(applied_in_order.len(), answers.len());
    let mut model = Model::default();
    for (position, run_id) in applied_in_order.iter().enumerate() {
        let index = summaries.iter().position(|s| &s.run_id == run_id).unwrap();
        let expected = model.apply(&answers[index], parse(threshold));
        assert_summary(
            &summaries[index],
            &expected,
            &format!("answer {index}, applied {position}"),
        )?;
    }
    assert_tables(
        &app,
        &model,
        &format!("after {} overlapping runs", answers.len()),
    )
    .await?;
    Ok(())
}

fn cases(variable: &str, default: u32) -> u32 {
    std::env::var(variable)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn block_on(
    check: impl std::future::Future<Output = Result<(), TestCaseError>>,
) -> Result<(), TestCaseError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(check)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases("CDC_MODEL_CASES", 96), ..ProptestConfig::default() })]

    #[test]
    fn the_ingest_matches_the_model_run_after_run(
        threshold in prop::sample::select(THRESHOLDS.to_vec()),
        runs in runs(),
    ) {
        block_on(check(threshold, runs))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases("CDC_OVERLAP_CASES", 24), ..ProptestConfig::default() })]

    #[test]
    fn overlapping_runs_end_at_the_newest_observation_whatever_order_they_applied_in(
        threshold in prop::sample::select(THRESHOLDS.to_vec()),
        answers in runs_of(4..9),
    ) {
        block_on(check_overlapping(threshold, answers))?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases("CDC_CURRENCY_CASES", 48), ..ProptestConfig::default() })]

    #[test]
    fn each_currency_matches_the_model_fed_its_prices(
        threshold in prop::sample::select(THRESHOLDS.to_vec()),
        runs in runs_in_currencies(),
    ) {
        block_on(check_currencies(threshold, runs))?;
    }
}
