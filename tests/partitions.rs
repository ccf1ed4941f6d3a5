//! History (`price_points`) is partitioned by ISO week: runs make the partitions they need,
//! queries by coin and time read the weeks asked for by index, retention drops a week.
//! The migration from V5 is in tests/migration.rs.

mod common;

use chrono::{DateTime, Utc};
use common::{coin, fixture, incompressible_text, page, plan_nodes, spawn_app, TestApp};
use rust_decimal::Decimal;
use serde_json::Value;

async fn rows_per_partition(app: &TestApp) -> Vec<(String, i64)> {
    app.db
        .query(
            "SELECT tableoid::regclass::text, count(*) FROM price_points GROUP BY 1 ORDER BY 1",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn history_lands_in_weekly_partitions_that_runs_make_ahead() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    // 2026-02-01 is a Sunday: the last instant of ISO week 5, then the first of week 6.
    app.serve(&[page(&[
        coin("late", "1", "2026-02-01T23:59:59.999Z"),
        coin("early", "1", "2026-02-02T00:00:00.000Z"),
    ])])
    .await;
    app.run().await;

    assert_eq!(
        rows_per_partition(&app).await,
        [
            ("price_points_2024_w36".to_string(), 100),
            ("price_points_2026_w05".to_string(), 1),
            ("price_points_2026_w06".to_string(), 1),
        ],
        "weeks are UTC ISO weeks"
    );
    let ahead: bool = app
        .db
        .query_one(
            "SELECT to_regclass('price_points_' || to_char(now() AT TIME ZONE 'UTC' + interval '1 week', 'IYYY_\"w\"IW')) IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        ahead,
        "next week's partition exists before any row needs it"
    );
}

#[tokio::test]
async fn a_query_by_coin_id_and_time_range_reads_the_weeks_asked_for_by_index() {
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
    // the query: the tables are too small for the planner to choose it by itself (tests/plans.rs
    // asserts the plans at a size where it does).
    app.db
        .batch_execute("SET enable_seqscan = off")
        .await
        .unwrap();
    let explained: Value = app
        .db
        .query_one(
            "EXPLAIN (FORMAT JSON) SELECT price FROM price_history
             WHERE coin_id = 'bitcoin' AND vs_currency = 'usd'
               AND source_updated_at >= '2024-09-02' AND source_updated_at < '2024-09-09'",
            &[],
        )
        .await
        .unwrap()
        .get(0);

    let parts = plan_nodes(&explained[0]["Plan"]);
    let mut relations: Vec<String> = parts.iter().filter_map(|(_, r)| r.clone()).collect();
    let nodes: Vec<&String> = parts.iter().map(|(node, _)| node).collect();
    relations.sort();
    assert_eq!(relations, ["coins", "price_points_2024_w36"], "{explained}");
    assert!(
        nodes.iter().all(|n| *n != "Seq Scan"),
        "{nodes:?}: {explained}"
    );
    for index in ["coins_coin_id", "price_points_2024_w36_pkey"] {
        assert!(
            explained.to_string().contains(index),
            "{index}: {explained}"
        );
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
async fn retention_drops_a_week_while_rows_stay_append_only() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;

    for statement in [
        "TRUNCATE price_points_2024_w36",
        "UPDATE price_points_2024_w36 SET price = 0",
        "DELETE FROM price_points_2024_w36",
    ] {
        let error = app.db.batch_execute(statement).await.unwrap_err();
        let code = error.as_db_error().map(|db| db.code().code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }

    app.db
        .batch_execute(
            "ALTER TABLE price_points DETACH PARTITION price_points_2024_w36;
             DROP TABLE price_points_2024_w36;",
        )
        .await
        .expect("the owner retires a week");
    assert_eq!(app.count("price_history").await, 0);
    assert_eq!(
        app.run().await.history_inserted,
        0,
        "the reference lives in the latest prices: a dropped week is not re-recorded"
    );
}

#[path = "partitions/retention.rs"]
mod retention;
