//! `price_history` is partitioned by month: runs make the partitions they need, queries by coin
//! and time read one month by index, retention drops a month, and the migration keeps every row.

mod common;

use chrono::{DateTime, Utc};
use common::{
    coin, column, connect, connector, fixture, incompressible_text, page, spawn_app, TestApp,
};
use rust_decimal::Decimal;
use serde_json::Value;

async fn rows_per_partition(app: &TestApp) -> Vec<(String, i64)> {
    app.db
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM price_history GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn history_lands_in_monthly_partitions_that_runs_make_ahead() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    app.serve(&[page(&[
        coin("late", "1", "2026-01-31T23:59:59.999Z"),
        coin("early", "1", "2026-02-01T00:00:00.000Z"),
    ])])
    .await;
    app.run().await;

    assert_eq!(
        rows_per_partition(&app).await,
        [
            ("price_history_2024_09".to_string(), 100),
            ("price_history_2026_01".to_string(), 1),
            ("price_history_2026_02".to_string(), 1),
        ],
        "months are UTC months"
    );
    let ahead: bool = app
        .db
        .query_one(
            "SELECT to_regclass('price_history_' || to_char(now() AT TIME ZONE 'UTC' + interval '1 month', 'YYYY_MM')) IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        ahead,
        "next month's partition exists before any row needs it"
    );
}

/// Every relation a plan reads, and every kind of node in it.
fn plan_parts(plan: &Value, relations: &mut Vec<String>, nodes: &mut Vec<String>) {
    if let Some(name) = plan["Relation Name"].as_str() {
        relations.push(name.to_string());
    }
    if let Some(node) = plan["Node Type"].as_str() {
        nodes.push(node.to_string());
    }
    for child in plan["Plans"].as_array().into_iter().flatten() {
        plan_parts(child, relations, nodes);
    }
}

#[tokio::test]
async fn a_query_by_coin_and_time_range_reads_one_month_by_index() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    app.serve(&[page(&[coin(
        "bitcoin",
        "90000",
        "2026-11-27T15:00:00.000Z",
    )])])
    .await;
    app.run().await;

    // With sequential scans priced out, the plan shows an index scan only if one can serve
    // the query: the tables are too small for the planner to choose it by itself.
    app.db
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    // By coin_id through its hash index; by coin_key(coin_id) through the key, in time order.
    for (coin, index) in [
        ("coin_id = 'bitcoin'", "price_history_2024_09_coin_id_idx"),
        (
            "coin_key(coin_id) = coin_key('bitcoin')",
            "price_history_2024_09_coin_key_",
        ),
    ] {
        let explained: Value = app
            .db
            .query_one(
                &format!(
                    "EXPLAIN (FORMAT JSON) SELECT price FROM price_history
                     WHERE {coin} AND vs_currency = 'usd'
                       AND source_updated_at >= '2024-09-01' AND source_updated_at < '2024-10-01'"
                ),
                &[],
            )
            .await
            .unwrap()
            .get(0);

        let (mut relations, mut nodes) = (Vec::new(), Vec::new());
        plan_parts(&explained[0]["Plan"], &mut relations, &mut nodes);
        assert_eq!(relations, ["price_history_2024_09"], "{explained}");
        assert!(
            nodes.iter().any(|n| n.contains("Index Scan")),
            "{nodes:?}: {explained}"
        );
        assert!(explained.to_string().contains(index), "{coin}: {explained}");
    }
}

/// The charts' steps: the price in effect when the window opens comes from an earlier month.
#[tokio::test]
async fn chart_steps_start_from_the_price_in_effect_whatever_the_month_or_the_id() {
    let app = spawn_app().await;
    let long_id = incompressible_text(10 * 1024);
    for (bitcoin, long, at) in [
        ("100", "5", "2024-09-10T00:00:00.000Z"),
        ("110", "6", "2024-09-20T00:00:00.000Z"),
        ("120", "7", "2024-10-15T00:00:00.000Z"),
        ("120.1", "7", "2024-10-20T00:00:00.000Z"),
    ] {
        app.serve(&[page(&[
            coin("bitcoin", bitcoin, at),
            coin(&long_id, long, at),
        ])])
        .await;
        app.run().await;
    }

    let time = |at: &str| at.parse::<DateTime<Utc>>().unwrap();
    let steps = app
        .store()
        .await
        .price_steps(
            "usd",
            &["bitcoin".to_string(), long_id.clone()],
            time("2024-10-01T00:00:00Z"),
            time("2024-10-31T00:00:00Z"),
        )
        .await
        .unwrap();

    let expected = |points: [(&str, &str); 3]| {
        points.map(|(at, price)| (time(at), price.parse::<Decimal>().unwrap()))
    };
    assert_eq!(steps[0].coin_id, "bitcoin");
    assert_eq!(
        steps[0].points,
        expected([
            ("2024-10-01T00:00:00Z", "110"),
            ("2024-10-15T00:00:00Z", "120"),
            // Below the threshold, so not in history: the current price.
            ("2024-10-20T00:00:00Z", "120.1"),
        ])
    );
    assert_eq!(steps[1].coin_id, long_id);
    assert_eq!(
        steps[1].points,
        expected([
            ("2024-10-01T00:00:00Z", "6"),
            ("2024-10-15T00:00:00Z", "7"),
            ("2024-10-20T00:00:00Z", "7"),
        ])
    );
}

#[tokio::test]
async fn retention_drops_a_month_while_rows_stay_append_only() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;

    for statement in [
        "TRUNCATE price_history_2024_09",
        "UPDATE price_history_2024_09 SET price = 0",
        "DELETE FROM price_history_2024_09",
    ] {
        let error = app.db.batch_execute(statement).await.unwrap_err();
        let code = error.as_db_error().map(|db| db.code().code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }

    app.db
        .batch_execute(
            "ALTER TABLE price_history DETACH PARTITION price_history_2024_09;
             DROP TABLE price_history_2024_09;",
        )
        .await
        .expect("the owner retires a month");
    assert_eq!(app.count("price_history").await, 0);
    assert_eq!(
        app.run().await.history_inserted,
        0,
        "the reference lives in current_prices: a dropped month is not re-recorded"
    );
}

#[tokio::test]
async fn migrating_to_partitions_keeps_every_row_the_views_and_their_grants() {
    let database = common::fresh_database().await;
    let database_url = &database.url;
    let config = database_url.parse().unwrap();
    let mut store = connector().connect(&config).await.unwrap();
    store.migrate_to(Some(2)).await.unwrap();
    let db = connect(database_url).await;
    let reader = database.role_name("cdc_reader");
    // A generated role name: DDL takes no parameters.
    db.batch_execute(&format!(
        "CREATE ROLE {reader};
         GRANT SELECT ON latest_prices, price_changes TO {reader};
         GRANT SELECT, INSERT ON price_history TO {reader};
         INSERT INTO ingest_runs (run_id, status) VALUES ('00000000-0000-7000-8000-000000000001', 'succeeded');
         INSERT INTO current_prices (coin_id, vs_currency, price, source_updated_at, first_seen_at, last_changed_at, recorded_price, recorded_at)
         VALUES ('bitcoin', 'usd', 58083.5, '2024-10-01 00:00:00+00', now(), now(), 58083.5, now());
         INSERT INTO price_history (coin_id, vs_currency, price, source_updated_at, recorded_at, run_id)
         VALUES ('bitcoin', 'usd', 56000.25, '2024-09-30 23:59:59.999+00', now(), '00000000-0000-7000-8000-000000000001'),
                ('bitcoin', 'usd', 58083.5, '2024-10-01 00:00:00+00', now(), '00000000-0000-7000-8000-000000000001');"
    ))
    .await
    .unwrap();
    let snapshot = || async {
        (
            column::<String>(
                &db,
                "SELECT h::text FROM price_history h ORDER BY source_updated_at",
            )
            .await,
            column::<String>(
                &db,
                "SELECT v::text FROM price_changes v ORDER BY source_updated_at",
            )
            .await,
            column::<String>(&db, "SELECT v::text FROM latest_prices v").await,
        )
    };
    let before = snapshot().await;

    store.migrate().await.unwrap();

    assert_eq!(snapshot().await, before);
    assert_eq!(before.0.len(), 2);
    let check = |sql: String| {
        let db = &db;
        async move { db.query_one(&sql, &[]).await.unwrap().get::<_, bool>(0) }
    };
    assert!(
        check("SELECT relkind = 'p' FROM pg_class WHERE relname = 'price_history'".into()).await
    );
    assert!(
        check("SELECT to_regclass('price_history_2024_09') IS NOT NULL AND to_regclass('price_history_2024_10') IS NOT NULL".into())
            .await
    );
    // V5 keys the rows it finds the way the ingest keys new ones.
    let key: Vec<u8> = db
        .query_one("SELECT coin_key FROM current_prices", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(key, coingecko_cdc::store::coin_key("bitcoin"));
    for (object, privilege) in [
        ("latest_prices", "SELECT"),
        ("price_changes", "SELECT"),
        ("price_history", "INSERT"),
    ] {
        assert!(
            check(format!(
                "SELECT has_table_privilege('{reader}', '{object}', '{privilege}')"
            ))
            .await,
            "{reader} keeps {privilege} on {object}"
        );
    }
}
