//! The queries analysts write by natural names are index-driven at a size where reading whole
//! tables would otherwise be the planner's choice: 2,000 coins, 10 currencies, 60 days of history.

mod common;

use common::{column, plan_nodes, spawn_app, TestApp};
use serde_json::Value;

const COINS: i32 = 2_000;
const CURRENCIES: [&str; 10] = [
    "usd", "eur", "jpy", "gbp", "btc", "eth", "chf", "cad", "aud", "inr",
];

/// Coins `coin-1`…, each with a latest price in every currency and, in usd and eur, a history
/// row every 8 hours over the last 60 days: 720,000 rows.
async fn fill(app: &TestApp) {
    app.db
        .execute(
            "INSERT INTO ingest_runs (run_id, status) VALUES ('00000000-0000-7000-8000-000000000001', 'succeeded')",
            &[],
        )
        .await
        .unwrap();
    app.db
        .execute(
            "INSERT INTO coins (coin_id, symbol, name, first_seen_at, last_seen_at)
             SELECT 'coin-' || n, 'c' || n, 'Coin ' || n, now(), now() FROM generate_series(1, $1) n",
            &[&COINS],
        )
        .await
        .unwrap();
    app.db
        .execute(
            "INSERT INTO quotes (vs_currency, coin_key, price, source_updated_at, first_seen_at, last_changed_at)
             SELECT vs, coin_key, coin_key, now(), now(), now() FROM coins, unnest($1::text[]) vs",
            &[&CURRENCIES.as_slice()],
        )
        .await
        .unwrap();
    app.db
        .batch_execute(
            "SELECT price_history_make_partitions(array(
                 SELECT generate_series(now() - interval '61 days', now(), interval '1 day')));
             INSERT INTO price_points (source_updated_at, recorded_at, run_id, coin_key, vs_currency, price)
             SELECT at, at, '00000000-0000-7000-8000-000000000001', coin_key, vs, coin_key + step
             FROM coins, unnest('{usd,eur}'::text[]) vs, generate_series(1, 180) step,
                  LATERAL (SELECT now() - step * interval '8 hours' AS at) t;
             ANALYZE;",
        )
        .await
        .unwrap();
}

/// History is read along its key; only the weeks made ahead, empty, may be read whole (they cost
/// nothing, and no plan can skip them when a query has no upper bound on time).
async fn assert_history_read_by_key(app: &TestApp, history: &[&String]) {
    assert!(history.iter().any(|s| s.contains("Index")), "{history:?}");
    for scan in history.iter().filter(|s| !s.contains("Index")) {
        let partition = scan.rsplit(' ').next().unwrap();
        let empty = format!("SELECT NOT EXISTS (SELECT FROM {partition})");
        assert_eq!(column::<bool>(&app.db, &empty).await, [true], "{history:?}");
    }
}

async fn plan(app: &TestApp, query: &str) -> (Vec<String>, Value) {
    let explained: Value = app
        .db
        .query_one(&format!("EXPLAIN (FORMAT JSON) {query}"), &[])
        .await
        .unwrap()
        .get(0);
    // Every relation the plan reads with the kind of node that reads it, e.g. `Seq Scan on quotes`.
    let found = plan_nodes(&explained[0]["Plan"])
        .into_iter()
        .filter_map(|(node, relation)| Some(format!("{node} on {}", relation?)))
        .collect();
    (found, explained)
}

#[tokio::test]
async fn analysts_queries_by_name_are_index_driven() {
    let app = spawn_app().await;
    fill(&app).await;

    // One coin's last 30 days, the obvious way: through the id's index in coins, then along the
    // history's key in each week asked for, in time order.
    let by_coin = "SELECT source_updated_at, price FROM price_history
                   WHERE coin_id = 'coin-42' AND vs_currency = 'usd'
                     AND source_updated_at >= now() - interval '30 days'
                   ORDER BY source_updated_at";
    let (scans, _) = plan(&app, by_coin).await;
    assert!(
        scans.iter().any(|s| s == "Index Scan on coins"),
        "{scans:?}"
    );
    let history: Vec<&String> = scans
        .iter()
        .filter(|s| s.contains("price_points"))
        .collect();
    assert_history_read_by_key(&app, &history).await;
    let older = column::<String>(
        &app.db,
        "SELECT 'price_points_' || to_char(now() - interval '45 days', 'IYYY_\"w\"IW')",
    )
    .await;
    assert!(
        history.iter().all(|s| !s.ends_with(&older[0])),
        "weeks before the window are pruned: {history:?}"
    );
    let times = column::<chrono::DateTime<chrono::Utc>>(
        &app.db,
        &by_coin.replace("source_updated_at, price", "source_updated_at"),
    )
    .await;
    // Every 8 hours for 30 days, but the one exactly 30 days before the fill is older than the
    // window opened after it.
    assert_eq!(times.len(), 30 * 3 - 1);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "in time order");

    // Every coin's latest price in one currency: one range of the latest prices' key (then every
    // coin's name), and no history read at all.
    let (scans, explained) = plan(
        &app,
        "SELECT coin_id, price FROM latest_prices WHERE vs_currency = 'usd'",
    )
    .await;
    assert!(
        explained
            .to_string()
            .contains(r#""Index Name":"quotes_pkey""#),
        "{scans:?}: {explained}"
    );
    assert!(
        !scans.contains(&"Seq Scan on quotes".to_string()),
        "{scans:?}"
    );
    assert!(
        scans.iter().all(|s| !s.contains("price_points")),
        "{scans:?}"
    );

    // One coin's changes: the window runs over that coin's rows only.
    let (scans, _) = plan(
        &app,
        "SELECT * FROM price_changes WHERE coin_id = 'coin-42' AND vs_currency = 'eur'",
    )
    .await;
    let history: Vec<&String> = scans
        .iter()
        .filter(|s| s.contains("price_points"))
        .collect();
    assert_history_read_by_key(&app, &history).await;
}
