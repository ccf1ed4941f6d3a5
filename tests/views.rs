//! The analyst views of `V2__analyst_views.sql`, over real ingests into a real PostgreSQL.
//! Every number is compared as PostgreSQL writes it (`::text`), digit for digit.

mod common;

use std::str::FromStr;

use common::{coin, fixture, page, spawn_app, TestApp};
use rust_decimal::{Decimal, RoundingStrategy};

const SEP5: &str = "markets-2024-09-05.json";
const SEP8: &str = "markets-2024-09-08.json";

/// One run serving these `(coin, price, last_updated)` quotes; returns its run id.
async fn ingest(app: &TestApp, quotes: &[(&str, &str, &str)]) -> String {
    let coins: Vec<String> = quotes
        .iter()
        .map(|(id, price, at)| coin(id, price, at))
        .collect();
    app.serve(&[page(&coins)]).await;
    app.run().await.run_id.to_string()
}

/// Every row of `sql`, each column as text (the query casts them), NULL as "NULL".
async fn rows(app: &TestApp, sql: &str) -> Vec<Vec<String>> {
    app.db
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.get::<_, Option<String>>(i)
                        .unwrap_or_else(|| "NULL".into())
                })
                .collect()
        })
        .collect()
}

async fn count(app: &TestApp, sql: &str) -> i64 {
    app.db
        .query_one(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

/// Coin `a` moves 100 → 110 → 88 → 99 across two UTC hours of 2026-11-27, is fetched unchanged
/// at 00:15 on the 28th (no history row), then moves 79.2 → 81.18 in the 01:00 hour.
/// Coin `b` moves 1 → 2. Returns the run ids, in order.
async fn two_days_of_moves(app: &TestApp) -> Vec<String> {
    let runs: [&[(&str, &str, &str)]; 7] = [
        &[
            ("a", "100", "2026-11-27T22:10:00.000Z"),
            ("b", "1", "2026-11-27T22:10:00.000Z"),
        ],
        &[("a", "110", "2026-11-27T22:40:00.000Z")],
        &[("a", "88", "2026-11-27T22:50:00.000Z")],
        &[
            ("a", "99", "2026-11-27T23:20:00.000Z"),
            ("b", "2", "2026-11-27T23:20:00.000Z"),
        ],
        &[("a", "99", "2026-11-28T00:15:00.000Z")],
        &[("a", "79.2", "2026-11-28T01:30:00.000Z")],
        &[("a", "81.18", "2026-11-28T01:45:00.000Z")],
    ];
    let mut ids = Vec::new();
    for quotes in runs {
        ids.push(ingest(app, quotes).await);
    }
    ids
}

#[tokio::test]
async fn price_changes_pair_each_recorded_price_with_the_previous_one() {
    let app = spawn_app().await;
    let runs = two_days_of_moves(&app).await;

    let a = rows(
        &app,
        "SELECT source_updated_at::text, price::text, previous_price::text, change_pct::text
         FROM price_changes WHERE coin_id = 'a' ORDER BY source_updated_at",
    )
    .await;

    assert_eq!(
        a,
        [
            ["2026-11-27 22:10:00+00", "100", "NULL", "NULL"],
            ["2026-11-27 22:40:00+00", "110", "100", "10"],
            ["2026-11-27 22:50:00+00", "88", "110", "-20"],
            ["2026-11-27 23:20:00+00", "99", "88", "12.5"],
            ["2026-11-28 01:30:00+00", "79.2", "99", "-20"],
            ["2026-11-28 01:45:00+00", "81.18", "79.2", "2.5"],
        ],
        "the unchanged fetch at 00:15 is no change"
    );
    let b = rows(
        &app,
        "SELECT price::text, previous_price::text, change_pct::text
         FROM price_changes WHERE coin_id = 'b' ORDER BY source_updated_at",
    )
    .await;
    assert_eq!(
        b,
        [["1", "NULL", "NULL"], ["2", "1", "100"]],
        "no previous price from another coin"
    );
    let written_by = rows(
        &app,
        "SELECT c.run_id::text, (c.recorded_at = h.recorded_at)::text, c.vs_currency
         FROM price_changes c JOIN price_history h USING (coin_id, vs_currency, source_updated_at)
         WHERE c.coin_id = 'a' AND c.price = 88",
    )
    .await;
    assert_eq!(written_by, [[runs[2].as_str(), "true", "usd"]]);
}

#[tokio::test]
async fn change_pct_is_exact_numeric_not_float() {
    let app = spawn_app().await;
    ingest(
        &app,
        &[
            ("third", "3", "2026-11-27T15:00:00.000Z"),
            ("tiny", "0.00000003", "2026-11-27T15:00:00.000Z"),
            ("point-two", "0.2", "2026-11-27T15:00:00.000Z"),
        ],
    )
    .await;
    ingest(
        &app,
        &[
            ("third", "4", "2026-11-27T15:01:00.000Z"),
            ("tiny", "0.00000004", "2026-11-27T15:01:00.000Z"),
            ("point-two", "0.3", "2026-11-27T15:01:00.000Z"),
        ],
    )
    .await;

    let moves = rows(
        &app,
        "SELECT coin_id, change_pct::text FROM price_changes
         WHERE change_pct IS NOT NULL ORDER BY coin_id",
    )
    .await;

    // f64 says 49.999999999999986, 33.33333333333333 and 33.33333333333335; numeric division
    // rounds the exact quotient once, here to 16 decimals.
    assert_eq!(
        moves,
        [
            ["point-two", "50"],
            ["third", "33.3333333333333333"],
            ["tiny", "33.3333333333333333"],
        ]
    );
}

#[tokio::test]
async fn a_zero_price_and_another_currency_get_no_percentage() {
    let mut app = spawn_app().await;
    ingest(&app, &[("z", "0", "2026-11-27T15:00:00.000Z")]).await;
    // A moved price with the same last_updated: current_prices has it, the history key is taken.
    ingest(&app, &[("z", "1", "2026-11-27T15:00:00.000Z")]).await;

    let pending = rows(
        &app,
        "SELECT price::text, recorded_price::text, pct_from_recorded::text
         FROM latest_prices WHERE coin_id = 'z'",
    )
    .await;
    assert_eq!(pending, [["1", "0", "NULL"]], "no division by zero");

    ingest(&app, &[("z", "1", "2026-11-27T15:01:00.000Z")]).await;
    app.set("VS_CURRENCY", "eur");
    ingest(&app, &[("z", "0.9", "2026-11-27T15:02:00.000Z")]).await;

    let changes = rows(
        &app,
        "SELECT vs_currency, price::text, previous_price::text, change_pct::text
         FROM price_changes ORDER BY vs_currency, source_updated_at",
    )
    .await;
    assert_eq!(
        changes,
        [
            ["eur", "0.9", "NULL", "NULL"],
            ["usd", "0", "NULL", "NULL"],
            ["usd", "1", "0", "NULL"],
        ]
    );
    let latest = rows(
        &app,
        "SELECT vs_currency, price::text, recorded_price::text, pct_from_recorded::text
         FROM latest_prices ORDER BY vs_currency",
    )
    .await;
    assert_eq!(latest, [["eur", "0.9", "0.9", "0"], ["usd", "1", "1", "0"]]);
}

#[tokio::test]
async fn ohlc_buckets_hold_open_high_low_close_per_utc_hour_and_day() {
    let app = spawn_app().await;
    two_days_of_moves(&app).await;
    let ohlc = |view: &str, coin_id: &str| {
        format!(
            "SELECT bucket::text, open::text, high::text, low::text, close::text, changes::text
             FROM {view} WHERE coin_id = '{coin_id}' AND vs_currency = 'usd' ORDER BY bucket"
        )
    };

    assert_eq!(
        rows(&app, &ohlc("price_ohlc_hourly", "a")).await,
        [
            ["2026-11-27 22:00:00+00", "100", "110", "88", "88", "3"],
            ["2026-11-27 23:00:00+00", "99", "99", "99", "99", "1"],
            [
                "2026-11-28 01:00:00+00",
                "79.2",
                "81.18",
                "79.2",
                "81.18",
                "2"
            ],
        ],
        "no row for the 00:00 hour: the price did not change"
    );
    assert_eq!(
        rows(&app, &ohlc("price_ohlc_daily", "a")).await,
        [
            ["2026-11-27 00:00:00+00", "100", "110", "88", "99", "4"],
            [
                "2026-11-28 00:00:00+00",
                "79.2",
                "81.18",
                "79.2",
                "81.18",
                "2"
            ],
        ]
    );
    assert_eq!(
        rows(&app, &ohlc("price_ohlc_hourly", "b")).await,
        [
            ["2026-11-27 22:00:00+00", "1", "1", "1", "1", "1"],
            ["2026-11-27 23:00:00+00", "2", "2", "2", "2", "1"],
        ]
    );
    assert_eq!(
        rows(&app, &ohlc("price_ohlc_daily", "b")).await,
        [["2026-11-27 00:00:00+00", "1", "2", "1", "2", "2"]]
    );

    // 22:10 UTC is already the 28th in Kolkata: the buckets stay UTC days whatever the session says.
    app.db
        .batch_execute("SET TIME ZONE 'Asia/Kolkata'")
        .await
        .unwrap();
    assert_eq!(
        rows(
            &app,
            "SELECT bucket::text, changes::text FROM price_ohlc_daily
             WHERE coin_id = 'a' ORDER BY bucket"
        )
        .await,
        [
            ["2026-11-27 05:30:00+05:30", "4"],
            ["2026-11-28 05:30:00+05:30", "2"],
        ]
    );
}

#[tokio::test]
async fn latest_prices_show_the_latest_fetch_against_the_last_recorded_price() {
    let app = spawn_app().await;
    two_days_of_moves(&app).await;
    // 0.25% above 81.18: below the 0.5% threshold, so current_prices moves and history does not.
    let last = ingest(&app, &[("a", "81.38295", "2026-11-28T02:10:00.000Z")]).await;

    let latest = rows(
        &app,
        "SELECT coin_id, vs_currency, symbol, name, price::text, market_cap::text,
                market_cap_rank::text, total_volume::text, price_change_percentage_24h::text,
                source_updated_at::text, recorded_price::text, pct_from_recorded::text
         FROM latest_prices ORDER BY coin_id",
    )
    .await;

    assert_eq!(
        latest,
        [
            [
                "a",
                "usd",
                "a",
                "Coin a",
                "81.38295",
                "1000",
                "NULL",
                "10",
                "NULL",
                "2026-11-28 02:10:00+00",
                "81.18",
                "0.25",
            ],
            [
                "b",
                "usd",
                "b",
                "Coin b",
                "2",
                "1000",
                "NULL",
                "10",
                "NULL",
                "2026-11-27 23:20:00+00",
                "2",
                "0",
            ],
        ]
    );
    let times = rows(
        &app,
        &format!(
            "SELECT (l.recorded_at = h.recorded_at)::text,
                    (l.last_changed_at BETWEEN r.started_at AND r.finished_at)::text,
                    (l.last_changed_at > l.recorded_at)::text
             FROM latest_prices l
             JOIN price_history h ON h.coin_id = l.coin_id AND h.price = l.recorded_price
             JOIN ingest_runs r ON r.run_id::text = '{last}'
             WHERE l.coin_id = 'a'"
        ),
    )
    .await;
    assert_eq!(
        times,
        [["true", "true", "true"]],
        "recorded_at is the 81.18 row's; last_changed_at is the last run's"
    );
}

/// `text` is the quotient `num / den`, correctly rounded at its own number of decimals.
fn is_rounded_quotient(text: &str, num: Decimal, den: Decimal) -> bool {
    let decimals = text.split_once('.').map_or(0, |(_, f)| f.len()) as u32;
    let exact =
        (num / den).round_dp_with_strategy(decimals, RoundingStrategy::MidpointAwayFromZero);
    Decimal::from_str(text).unwrap() == exact
}

#[tokio::test]
async fn the_views_work_on_two_real_recorded_days() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    let first = app.run().await;
    app.serve(&[fixture(SEP8)]).await;
    let second = app.run().await;
    let second_rows = second.history_inserted as i64;
    assert!(second_rows > 50, "{second:?}");

    // sats-ordinals is new on the 8th and elrond-erd-2 is gone: 101 coins, both kept.
    assert_eq!(count(&app, "SELECT count(*) FROM latest_prices").await, 101);
    let history = count(&app, "SELECT count(*) FROM price_history").await;
    assert_eq!(history, first.history_inserted as i64 + second_rows);
    assert_eq!(
        count(&app, "SELECT count(*) FROM price_changes").await,
        history
    );
    // Every second-run row has a previous price but the newcomer's; none is 0.
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM price_changes WHERE change_pct IS NOT NULL"
        )
        .await,
        second_rows - 1
    );
    assert_eq!(
        rows(
            &app,
            "SELECT coin_id, previous_price::text FROM price_changes
             WHERE change_pct IS NULL AND source_updated_at >= '2024-09-06'"
        )
        .await,
        [["sats-ordinals", "NULL"]]
    );

    let bitcoin = rows(
        &app,
        "SELECT previous_price::text, price::text, change_pct::text
         FROM price_changes WHERE coin_id = 'bitcoin' AND previous_price IS NOT NULL",
    )
    .await;
    assert_eq!(
        bitcoin,
        [["58083", "54152", "-6.7679011070364823"]],
        "-393100 / 58083 %"
    );
    assert!(is_rounded_quotient(
        &bitcoin[0][2],
        Decimal::from(-393_100),
        Decimal::from(58_083)
    ));

    // tether's 0.999465 → 1.0 is below the threshold: latest_prices shows the pending move.
    let tether = rows(
        &app,
        "SELECT price::text, recorded_price::text, pct_from_recorded::text
         FROM latest_prices WHERE coin_id = 'tether'",
    )
    .await;
    assert_eq!(tether, [["1.0", "0.999465", "0.05352863782123436038"]]);
    assert!(is_rounded_quotient(
        &tether[0][2],
        Decimal::from_str("0.0535").unwrap(),
        Decimal::from_str("0.999465").unwrap()
    ));
    assert_eq!(
        count(
            &app,
            &format!(
                "SELECT count(*) FROM latest_prices l JOIN price_history h
               ON h.coin_id = l.coin_id AND h.recorded_at = l.recorded_at
             WHERE h.run_id::text = '{}' AND l.pct_from_recorded = 0",
                second.run_id
            )
        )
        .await,
        second_rows,
        "a price recorded by the last run is 0% from it"
    );

    for view in ["price_ohlc_hourly", "price_ohlc_daily"] {
        let changes = count(&app, &format!("SELECT sum(changes)::bigint FROM {view}")).await;
        assert_eq!(changes, history, "{view} counts every history row once");
    }
    let daily = rows(
        &app,
        "SELECT bucket::text, open::text, high::text, low::text, close::text, changes::text
         FROM price_ohlc_daily WHERE coin_id = 'bitcoin' ORDER BY bucket",
    )
    .await;
    assert_eq!(
        daily,
        [
            [
                "2024-09-05 00:00:00+00",
                "58083",
                "58083",
                "58083",
                "58083",
                "1"
            ],
            [
                "2024-09-08 00:00:00+00",
                "54152",
                "54152",
                "54152",
                "54152",
                "1"
            ],
        ],
        "no rows for the 6th and 7th: nothing was fetched then"
    );
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM price_ohlc_daily
             WHERE bucket = '2024-09-08 00:00+00' AND changes = 1 AND open = close"
        )
        .await,
        second_rows
    );
}
