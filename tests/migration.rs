//! V6 moves a V5 database to the coin dimension: every row of every table and view reads the same
//! afterwards, the grants and the append-only rule carry over, and the next run continues the
//! CDC streams where they stood. V7 keeps the raw pages as text.

mod common;

use common::{coin, column, incompressible_text, page, spawn_app_migrated_to, TestApp};

const RUN: &str = "00000000-0000-7000-8000-000000000001";

/// V5's rows, written as V5's ingest wrote them: ids of any length, two currencies, history over
/// two months.
async fn fill_v5(app: &TestApp, long_id: &str) {
    app.db
        .execute(
            "INSERT INTO ingest_runs (run_id, status, finished_at) VALUES ($1::text::uuid, 'succeeded', '2024-10-02Z')",
            &[&RUN],
        )
        .await
        .unwrap();
    app.db
        .execute(
            r#"INSERT INTO raw_pages (run_id, page, fetched_at, payload)
               VALUES ($1::text::uuid, 1, '2024-10-01 12:00Z', '[{"id": "bitcoin", "current_price": 58083.50}]')"#,
            &[&RUN],
        )
        .await
        .unwrap();
    let ids = ["bitcoin", "ethereum", "ünïcode-☃", long_id];
    app.db
        .execute(
            "INSERT INTO current_prices
                 (coin_id, vs_currency, symbol, name, price, market_cap, market_cap_rank, total_volume,
                  high_24h, low_24h, price_change_24h, price_change_percentage_24h, circulating_supply,
                  total_supply, max_supply, source_updated_at, first_seen_at, last_changed_at,
                  recorded_price, recorded_at, coin_key)
             SELECT id, vs, 'sym' || n, 'Name ' || n, 100.5 * n, 1e12 / n, n, 12345.678, 101 * n,
                    99 * n, -0.25, -1.23456789012345678901, 19e6, 21e6, NULL,
                    '2024-10-01 12:00Z', '2024-09-01Z'::timestamptz + n * interval '1 hour',
                    '2024-10-01 12:05Z', 100 * n, '2024-10-01 12:05Z', coin_key(id)
             FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n), unnest('{usd,eur}'::text[]) AS vs",
            &[&ids.as_slice()],
        )
        .await
        .unwrap();
    app.db
        .execute(
            "SELECT price_history_make_partitions('{2024-09-15Z,2024-10-15Z}')",
            &[],
        )
        .await
        .unwrap();
    app.db
        .execute(
            "INSERT INTO price_history
                 (coin_id, vs_currency, price, market_cap, total_volume, source_updated_at, recorded_at, run_id)
             SELECT id, vs, 90 * n + day, CASE WHEN day % 2 = 0 THEN 1e9 END, 0.000000001 * day,
                    '2024-09-01Z'::timestamptz + day * interval '1 day' + n * interval '1 minute',
                    '2024-10-01 12:05Z', $2::text::uuid
             FROM unnest($1::text[]) WITH ORDINALITY AS i(id, n), unnest('{usd,eur}'::text[]) AS vs,
                  generate_series(0, 40) AS day",
            &[&ids.as_slice(), &RUN],
        )
        .await
        .unwrap();
}

/// Every row of what analysts read, as text, in a fixed order.
/// The names of the shipped migrations from `version` on, in order (`V6__coin_dimension`, …).
fn migrations_from(version: u32) -> Vec<String> {
    let folder = concat!(env!("CARGO_MANIFEST_DIR"), "/migrations");
    let mut found: Vec<(u32, String)> = std::fs::read_dir(folder)
        .unwrap()
        .map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            let name = name.trim_end_matches(".sql").to_string();
            let number = name[1..name.find("__").unwrap()].parse().unwrap();
            (number, name)
        })
        .filter(|(number, _)| *number >= version)
        .collect();
    found.sort();
    found.into_iter().map(|(_, name)| name).collect()
}

async fn everything(app: &TestApp) -> Vec<Vec<String>> {
    let mut all = Vec::new();
    for (relation, order) in [
        ("current_prices", "coin_id, vs_currency"),
        ("price_history", "coin_id, vs_currency, source_updated_at"),
        ("latest_prices", "coin_id, vs_currency"),
        ("price_changes", "coin_id, vs_currency, source_updated_at"),
        ("price_ohlc_hourly", "coin_id, vs_currency, bucket"),
        ("price_ohlc_daily", "coin_id, vs_currency, bucket"),
        ("raw_pages", "page"),
    ] {
        // current_prices.coin_key was the id's digest and is now the dimension's key; raw pages
        // are read as JSON, as before.
        let row = if relation == "raw_pages" {
            "(r.run_id, r.page, r.fetched_at, r.payload::jsonb)"
        } else if relation == "current_prices" {
            "(r.coin_id, r.vs_currency, r.symbol, r.name, r.price, r.market_cap, r.market_cap_rank,
              r.total_volume, r.high_24h, r.low_24h, r.price_change_24h, r.price_change_percentage_24h,
              r.circulating_supply, r.total_supply, r.max_supply, r.source_updated_at,
              r.first_seen_at, r.last_changed_at, r.recorded_price, r.recorded_at)"
        } else if relation == "price_history" {
            // V9 adds where a row came from: checked apart.
            "(r.coin_id, r.vs_currency, r.price, r.market_cap, r.total_volume, r.source_updated_at,
              r.recorded_at, r.run_id)"
        } else if relation == "latest_prices" {
            // V11 adds whether the coin is tracked: every coin with a price is, until a run says.
            "(r.coin_id, r.vs_currency, r.symbol, r.name, r.price, r.market_cap, r.market_cap_rank,
              r.total_volume, r.price_change_percentage_24h, r.source_updated_at, r.last_changed_at,
              r.recorded_price, r.recorded_at, r.pct_from_recorded)"
        } else {
            "r"
        };
        let rows = column::<String>(
            &app.db,
            &format!("SELECT {row}::text FROM {relation} r ORDER BY {order}"),
        )
        .await;
        assert!(!rows.is_empty(), "{relation} has rows to compare");
        all.push(rows);
    }
    all
}

#[tokio::test]
async fn v6_keeps_every_row_the_views_the_grants_and_the_append_only_rule() {
    let app = spawn_app_migrated_to(Some(5)).await;
    let long_id = incompressible_text(10 * 1024);
    fill_v5(&app, &long_id).await;
    let reader = app.database.role_name("cdc_reader");
    let ingest = app.database.role_name("ingest");
    // Generated role names: DDL takes no parameters. The ingest's grants are V5's ingest-role.sql.
    app.db
        .batch_execute(&format!(
            "CREATE ROLE {reader};
             GRANT SELECT ON current_prices, price_history, latest_prices, price_changes TO {reader};
             CREATE ROLE {ingest};
             GRANT SELECT, INSERT, UPDATE ON current_prices TO {ingest};
             GRANT SELECT, INSERT ON price_history TO {ingest};"
        ))
        .await
        .unwrap();
    let before = everything(&app).await;

    let applied = app.store().await.migrate().await.unwrap();

    assert_eq!(applied, migrations_from(6));
    assert_eq!(everything(&app).await, before, "every row reads the same");
    let tracked = column::<bool>(&app.db, "SELECT DISTINCT tracked FROM current_prices").await;
    assert_eq!(tracked, [true], "tracked, until a run says otherwise");
    let origins = column::<String>(
        &app.db,
        "SELECT DISTINCT source || ' ' || coalesce(granularity, '-') FROM price_history
         UNION ALL SELECT DISTINCT endpoint FROM raw_pages
         UNION ALL SELECT DISTINCT kind FROM ingest_runs",
    )
    .await;
    assert_eq!(
        origins,
        ["live -", "coins/markets", "live"],
        "rows from before are live runs' and pages"
    );
    let compression: String = app
        .db
        .query_one(
            "SELECT attcompression::text FROM pg_attribute WHERE attrelid = 'raw_pages'::regclass AND attname = 'payload'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        compression, "l",
        "raw pages compressed with lz4 (the test server has it)"
    );
    assert_eq!(before[1].len(), 4 * 2 * 41);
    let coins = column::<String>(&app.db, "SELECT coin_id FROM coins ORDER BY coin_key").await;
    assert_eq!(
        coins,
        ["bitcoin", "ethereum", "ünïcode-☃", long_id.as_str()],
        "one row per id, stored verbatim, keyed in order of first sighting"
    );

    for (role, relation, privilege, expected) in [
        (&reader, "current_prices", "SELECT", true),
        (&reader, "price_history", "SELECT", true),
        (&reader, "latest_prices", "SELECT", true),
        (&reader, "price_changes", "SELECT", true),
        (&reader, "price_points", "SELECT", true),
        (&reader, "price_points", "INSERT", false),
        (&ingest, "coins", "UPDATE", true),
        (&ingest, "quotes", "UPDATE", true),
        (&ingest, "price_points", "INSERT", true),
        (&ingest, "price_points", "UPDATE", false),
        (&ingest, "price_points", "DELETE", false),
    ] {
        let sql = format!("SELECT has_table_privilege('{role}', '{relation}', '{privilege}')");
        let has: bool = app.db.query_one(&sql, &[]).await.unwrap().get(0);
        assert_eq!(has, expected, "{role} {privilege} on {relation}");
    }
    for statement in [
        "UPDATE price_points SET price = 0",
        "DELETE FROM price_history",
        "TRUNCATE price_points",
    ] {
        let error = app.db.batch_execute(statement).await.unwrap_err();
        let code = error.as_db_error().map(|db| db.code().code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }
}

#[tokio::test]
async fn the_first_run_after_v6_continues_each_stream_from_its_v5_reference() {
    let app = spawn_app_migrated_to(Some(5)).await;
    let long_id = incompressible_text(10 * 1024);
    fill_v5(&app, &long_id).await;
    app.store().await.migrate().await.unwrap();

    // bitcoin's usd reference is 100 (V5's recorded_price); the long id's is 400.
    app.serve(&[page(&[
        coin("bitcoin", "100.4", "2024-10-02T00:00:00.000Z"),
        coin(&long_id, "402.5", "2024-10-02T00:00:00.000Z"),
    ])])
    .await;
    let summary = app.run().await;

    assert_eq!(summary.history_inserted, 1, "{summary:?}");
    let recorded = column::<String>(
        &app.db,
        "SELECT recorded_price::text FROM current_prices
         WHERE vs_currency = 'usd' AND coin_id IN ('bitcoin', 'ethereum') ORDER BY coin_id",
    )
    .await;
    assert_eq!(
        recorded,
        ["100", "200"],
        "bitcoin moved 0.4 %: not recorded"
    );
    let long: String = app
        .db
        .query_one(
            "SELECT recorded_price::text FROM current_prices WHERE vs_currency = 'usd' AND coin_id = $1",
            &[&long_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        long, "402.5",
        "the long id moved 0.625 % from 400: recorded"
    );
    let keys = column::<i64>(&app.db, "SELECT count(*) FROM coins").await;
    assert_eq!(keys, [4], "no coin keyed twice");
}

/// Heap and indexes of a table and its partitions, per row.
async fn bytes_per_row(app: &TestApp, table: &str) -> f64 {
    app.db.batch_execute("VACUUM ANALYZE").await.unwrap();
    let sql = format!(
        "SELECT sum(pg_table_size(relid) + pg_indexes_size(relid))::float8 / (SELECT count(*) FROM {table})
         FROM pg_partition_tree('{table}')"
    );
    app.db.query_one(&sql, &[]).await.unwrap().get(0)
}

#[tokio::test]
async fn a_history_row_takes_at_least_30_percent_less_room_after_v6() {
    let app = spawn_app_migrated_to(Some(5)).await;
    // 200 coins, 3 currencies, 60 points each: 36,000 rows shaped as the ingest writes them.
    app.db
        .batch_execute(
            "INSERT INTO ingest_runs (run_id, status) VALUES ('00000000-0000-7000-8000-000000000001', 'succeeded');
             SELECT price_history_make_partitions('{2024-09-15Z}');
             INSERT INTO current_prices (coin_id, vs_currency, price, source_updated_at, first_seen_at,
                                         last_changed_at, coin_key)
             SELECT id, vs, n, '2024-09-30Z', '2024-09-01Z', '2024-09-30Z', coin_key(id)
             FROM generate_series(1, 200) n, unnest('{usd,eur,btc}'::text[]) vs,
                  LATERAL (SELECT 'coin-number-' || n AS id) i;
             INSERT INTO price_history
                 (coin_id, vs_currency, price, market_cap, total_volume, source_updated_at, recorded_at, run_id)
             SELECT coin_id, vs_currency, 1 + step * 7 / 100.0, step * 1000.0, step::numeric,
                    '2024-09-01Z'::timestamptz + step * interval '11 hours', '2024-09-30Z',
                    '00000000-0000-7000-8000-000000000001'
             FROM current_prices, generate_series(1, 60) step;",
        )
        .await
        .unwrap();
    let before = bytes_per_row(&app, "price_history").await;

    app.store().await.migrate().await.unwrap();

    let after = bytes_per_row(&app, "price_points").await;
    assert!(
        after <= 0.7 * before,
        "{after:.1} bytes a row after V6 against {before:.1} before"
    );
}

#[tokio::test]
async fn v10_gives_the_runs_earlier_releases_left_running_a_lease_so_they_are_found_dead() {
    let app = spawn_app_migrated_to(Some(9)).await;
    let left_running = uuid::Uuid::now_v7();
    let recent = uuid::Uuid::now_v7();
    app.db
        .execute(
            "INSERT INTO ingest_runs (run_id, status, started_at) VALUES
                 ($1, 'running', now() - interval '1 hour'), ($2, 'running', now())",
            &[&left_running, &recent],
        )
        .await
        .unwrap();

    app.store().await.migrate().await.unwrap();
    let abandoned = app.store().await.abandon_dead_runs().await.unwrap();

    assert_eq!(
        abandoned.iter().map(|r| r.run_id).collect::<Vec<_>>(),
        [left_running],
        "the run of an hour ago is dead; the one of now may still be working"
    );
}

#[tokio::test]
async fn v11_tracks_every_coin_with_a_price_and_forgets_a_stamp_from_the_future() {
    let app = spawn_app_migrated_to(Some(10)).await;
    app.db
        .batch_execute(
            "INSERT INTO coins (coin_id, first_seen_at, last_seen_at) VALUES
                 ('frozen', now(), now()), ('never-priced', now(), now());
             INSERT INTO quotes (vs_currency, coin_key, price, source_updated_at, first_seen_at,
                                 last_changed_at, recorded_price, recorded_at)
             SELECT 'usd', coin_key, 1, '2099-01-01T00:00:00Z', now(), now(), 1, now()
             FROM coins WHERE coin_id = 'frozen';",
        )
        .await
        .unwrap();

    app.store().await.migrate().await.unwrap();
    app.serve(&[page(&[coin("frozen", "2", "2026-11-27T15:00:00.000Z")])])
        .await;
    let summary = app.run().await;

    let tracked = column::<String>(
        &app.db,
        "SELECT coin_id || ' ' || tracked FROM coins ORDER BY coin_id",
    )
    .await;
    assert_eq!(tracked, ["frozen true", "never-priced false"]);
    assert_eq!(
        (summary.out_of_order, summary.history_inserted),
        (0, 1),
        "the 2099 stamp no longer holds the coin off"
    );
    assert_eq!(app.current("frozen", "price").await.as_deref(), Some("2"));
}

#[tokio::test]
async fn v14_gives_the_history_held_positions_in_the_order_it_was_recorded_and_runs_continue_after_them(
) {
    let app = spawn_app_migrated_to(Some(13)).await;
    // Two runs' rows: the later run recorded an older backfilled point and a newer live one.
    app.db
        .batch_execute(
            "INSERT INTO ingest_runs (run_id, status, started_at) VALUES
                 ('00000000-0000-7000-8000-000000000001', 'succeeded', '2026-12-01T10:00:00Z'),
                 ('00000000-0000-7000-8000-000000000002', 'succeeded', '2026-12-01T10:05:00Z');
             INSERT INTO coins (coin_id, symbol, first_seen_at, last_seen_at)
                 VALUES ('bitcoin', 'btc', now(), now());
             SELECT price_history_make_partitions('{2026-11-01Z,2026-12-01Z}');
             INSERT INTO price_points (source_updated_at, recorded_at, run_id, coin_key, vs_currency,
                                       price, granularity)
             SELECT t::timestamptz, r::timestamptz, run::uuid, coin_key, 'usd', p, g
             FROM coins, (VALUES
                 ('2026-12-01T10:00:00Z', '2026-12-01T10:00:01Z', '00000000-0000-7000-8000-000000000001', 100, NULL),
                 ('2026-12-01T10:05:00Z', '2026-12-01T10:05:01Z', '00000000-0000-7000-8000-000000000002', 102, NULL),
                 ('2026-11-01T00:00:00Z', '2026-12-01T10:06:00Z', '00000000-0000-7000-8000-000000000002', 90, 'daily'))
                 AS v(t, r, run, p, g);
             INSERT INTO quotes (vs_currency, coin_key, price, source_updated_at, first_seen_at,
                                 last_changed_at, recorded_price, recorded_at)
             SELECT 'usd', coin_key, 102, '2026-12-01T10:05:00Z', now(), now(), 102, now() FROM coins;",
        )
        .await
        .unwrap();

    app.store().await.migrate().await.unwrap();

    let feed = column::<String>(
        &app.db,
        "SELECT seq || ' ' || price || ' ' || coalesce(previous_price::text, '-') FROM price_feed ORDER BY seq",
    )
    .await;
    assert_eq!(
        feed,
        ["1 100 90", "2 102 100", "3 90 -"],
        "in the order recorded; each moved from the row before it in its series"
    );
    app.serve(&[page(&[coin("bitcoin", "110", "2026-12-01T10:10:00.000Z")])])
        .await;
    app.run().await;
    let changes = app.store().await.changes_after(2, 10).await.unwrap();
    let read: Vec<(i64, String, Option<String>)> = changes
        .iter()
        .map(|c| {
            (
                c.seq,
                c.price.to_string(),
                c.previous_price.map(|p| p.to_string()),
            )
        })
        .collect();
    assert_eq!(
        read,
        [
            (3, "90".to_string(), None),
            (4, "110".to_string(), Some("102".to_string()))
        ],
        "the next run continues after the positions held"
    );
    let published: Option<i64> = app
        .db
        .query_one("SELECT last_seq FROM price_feed_published", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(published, None, "no event is due until a run publishes");
    let rewrite = app
        .db
        .execute("UPDATE price_feed SET price = 1 WHERE seq = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(
        rewrite.as_db_error().map(|e| e.message()),
        Some("price_feed positions are never rewritten: UPDATE is refused")
    );
}
