//! The CDC ingest against a real PostgreSQL and a CoinGecko stub serving recorded answers.

mod common;

use coingecko_cdc::summary::{RunState, Summary};
use common::{coin, fixture, incompressible_text, numbered_coins, page, spawn_app};
use futures::future::join_all;
use tokio_postgres::types::Json;

const SEP5: &str = "markets-2024-09-05.json";
const SEP8: &str = "markets-2024-09-08.json";

#[tokio::test]
async fn first_load_records_every_coin_exactly_as_written() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;

    let summary = app.run().await;

    assert_eq!(summary.status, RunState::Succeeded);
    assert_eq!((summary.fetched, summary.rejected), (100, 0));
    assert_eq!(
        (
            summary.history_inserted,
            summary.upserted,
            summary.unchanged
        ),
        (100, 100, 0)
    );
    assert_eq!(summary.pages, 1);
    assert_eq!(app.count("current_prices").await, 100);
    assert_eq!(app.count("price_history").await, 100);
    assert_eq!(
        app.current("bitcoin", "price").await.as_deref(),
        Some("58083")
    );
    assert_eq!(
        app.current("bitcoin", "total_supply").await.as_deref(),
        Some("21000000.0")
    );
    assert_eq!(
        app.current("bitcoin", "market_cap_rank").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        app.current("bitcoin", "source_updated_at").await.as_deref(),
        Some("2024-09-05 00:43:12.026+00")
    );
    assert_eq!(
        app.current("bitcoin", "recorded_price").await.as_deref(),
        Some("58083")
    );
    let raw: i32 = app
        .db
        .query_one(
            "SELECT jsonb_array_length(payload::jsonb) FROM raw_pages WHERE page = 1",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, 100, "the raw page is stored whole");
    let row = app
        .db
        .query_one(
            "SELECT status, summary->>'history_inserted' FROM ingest_runs",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "succeeded");
    assert_eq!(row.get::<_, String>(1), "100");
}

#[tokio::test]
async fn the_phases_of_a_run_do_not_overlap_and_only_the_returned_summary_times_the_commit() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;

    let returned = app.run().await;

    let phases = |s: &Summary| (s.fetch_ms, s.apply_ms, s.raw_ms, s.duration_ms);
    let (fetch, apply, raw, duration) = phases(&returned);
    assert!(fetch + apply + raw <= duration, "{returned:?}");
    let stored: Json<Summary> = app
        .db
        .query_one("SELECT summary FROM ingest_runs", &[])
        .await
        .unwrap()
        .get(0);
    let (stored_fetch, stored_apply, stored_raw, stored_duration) = phases(&stored.0);
    assert_eq!((stored_fetch, stored_raw), (fetch, raw));
    assert!(
        stored_apply <= apply && stored_duration <= duration,
        "stored {:?}, returned {returned:?}",
        stored.0
    );
}

#[tokio::test]
async fn an_identical_rerun_writes_no_row() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    app.run().await;
    let before = app.price_tables().await;

    let summary = app.run().await;

    assert_eq!(
        (
            summary.history_inserted,
            summary.upserted,
            summary.unchanged
        ),
        (0, 0, 100)
    );
    assert_eq!(
        app.price_tables().await,
        before,
        "no row rewritten (xmin unchanged)"
    );
}

#[tokio::test]
async fn new_timestamps_with_unchanged_prices_add_no_history() {
    let app = spawn_app().await;
    app.serve(&[page(&[coin("a", "1.5", "2026-11-27T15:00:00.000Z")])])
        .await;
    app.run().await;
    app.serve(&[page(&[coin("a", "1.50", "2026-11-27T15:05:00.000Z")])])
        .await;

    let summary = app.run().await;

    assert_eq!(
        (
            summary.history_inserted,
            summary.upserted,
            summary.unchanged
        ),
        (0, 1, 1)
    );
    assert_eq!(app.history("a").await, ["1.5"]);
    assert_eq!(
        app.current("a", "source_updated_at").await.as_deref(),
        Some("2026-11-27 15:05:00+00"),
        "current_prices still ends at the latest values"
    );
}

#[tokio::test]
async fn real_price_moves_are_judged_exactly_at_the_threshold() {
    // ethereum was 2456.15 on 2024-09-05: ±0.5% is exactly 2468.43075 / 2443.86925,
    // which f64 arithmetic judges to be below the threshold.
    let app = spawn_app().await;
    let original = fixture(SEP5);
    app.serve(std::slice::from_ref(&original)).await;
    app.run().await;
    let moved = next_day(&original)
        .replacen(
            r#""current_price":2456.15"#,
            r#""current_price":2468.43075"#,
            1,
        )
        .replacen(
            r#""current_price":58083"#,
            r#""current_price":58373.414"#,
            1,
        );
    assert_ne!(moved, original);
    app.serve(&[moved]).await;

    let summary = app.run().await;

    assert_eq!(app.history("ethereum").await, ["2456.15", "2468.43075"]);
    assert_eq!(
        app.history("bitcoin").await,
        ["58083"],
        "0.49999…% stays below"
    );
    assert_eq!(
        app.current("bitcoin", "price").await.as_deref(),
        Some("58373.414")
    );
    assert_eq!(summary.history_inserted, 1);
    assert_eq!(summary.upserted, 100, "every last_updated moved");

    let down = next_day(&next_day(&original)).replacen(
        r#""current_price":2456.15"#,
        r#""current_price":2443.86925"#,
        1,
    );
    app.serve(&[down]).await;
    app.run().await;
    assert_eq!(
        app.history("ethereum").await,
        ["2456.15", "2468.43075", "2443.86925"],
        "measured against the last recorded price, 2468.43075"
    );
}

/// The same answer a day later: every `last_updated` moves one day on.
fn next_day(body: &str) -> String {
    let shifted = body.replace(
        r#""last_updated":"2024-09-06T"#,
        r#""last_updated":"2024-09-07T"#,
    );
    shifted.replace(
        r#""last_updated":"2024-09-05T"#,
        r#""last_updated":"2024-09-06T"#,
    )
}

#[tokio::test]
async fn two_real_days_record_the_moves_past_the_threshold() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    app.run().await;
    app.serve(&[fixture(SEP8)]).await;

    let summary = app.run().await;

    assert_eq!(
        summary.fetched,
        summary.rejected + summary.history_inserted + summary.unchanged
    );
    let expected: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM current_prices c JOIN price_history h USING (coin_id, vs_currency)
             WHERE h.run_id = $1",
            &[&summary.run_id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(summary.history_inserted as i64, expected);
    assert!(
        summary.history_inserted > 50,
        "three days move most prices: {summary:?}"
    );
    assert_eq!(
        app.current("bitcoin", "price").await,
        app.history("bitcoin").await.last().cloned()
    );
}

#[tokio::test]
async fn a_slow_drift_is_recorded_once_it_adds_up() {
    let app = spawn_app().await;
    for (minute, price) in ["100", "100.2", "100.4", "100.5", "100.9", "101.0025"]
        .iter()
        .enumerate()
    {
        let at = format!("2026-11-27T15:0{minute}:00.000Z");
        app.serve(&[page(&[coin("drift", price, &at)])]).await;
        app.run().await;
    }
    assert_eq!(app.history("drift").await, ["100", "100.5", "101.0025"]);
    assert_eq!(
        app.current("drift", "price").await.as_deref(),
        Some("101.0025")
    );
}

#[tokio::test]
async fn ruby_style_and_long_numbers_are_stored_digit_for_digit() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP8)]).await;
    app.run().await;
    let exponent_rows: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM current_prices WHERE total_supply::text = '2100000000000000' OR price::text = '0.000000000056366'
             OR total_volume::text = '0.000000000056366' OR market_cap::text = '0.000000000056366'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        exponent_rows >= 1,
        "2.1e+15 / 5.6366e-11 stored as exact numerics"
    );

    app.serve(&[page(&[
        coin("tiny", "3.15e-06", "2026-11-27T15:00:00.000Z"),
        coin(
            "long",
            "0.1234567890123456789012345678",
            "2026-11-27T15:00:00.000Z",
        ),
        coin(
            "big",
            "12345678901234567890.12345678",
            "2026-11-27T15:00:00.000Z",
        ),
        coin("round", "21000000.0", "2026-11-27T15:00:00.000Z"),
    ])])
    .await;
    app.run().await;
    assert_eq!(
        app.current("tiny", "price").await.as_deref(),
        Some("0.00000315")
    );
    assert_eq!(
        app.history("long").await,
        ["0.1234567890123456789012345678"]
    );
    assert_eq!(
        app.current("big", "price").await.as_deref(),
        Some("12345678901234567890.12345678")
    );
    assert_eq!(
        app.current("round", "price").await.as_deref(),
        Some("21000000.0")
    );
}

#[tokio::test]
async fn coins_with_unusable_prices_are_counted_and_the_run_goes_on() {
    let app = spawn_app().await;
    let at = "2026-11-27T15:00:00.000Z";
    app.serve(&[page(&[
        coin("good", "1", at),
        coin("null", "null", at),
        coin("text", r#""abc""#, at),
        coin("negative", "-2", at),
        r#"{"symbol":"noid","current_price":3}"#.to_string(),
        r#"{"id":"huge-supply","current_price":2,"total_supply":1e40,"market_cap_rank":null}"#
            .to_string(),
    ])])
    .await;

    let summary = app.run().await;

    assert_eq!(
        (summary.fetched, summary.rejected, summary.history_inserted),
        (6, 4, 2)
    );
    let stored: Vec<String> = common::column(
        &app.db,
        "SELECT coin_id FROM current_prices ORDER BY coin_id",
    )
    .await;
    assert_eq!(stored, ["good", "huge-supply"]);
    assert_eq!(
        app.current("huge-supply", "total_supply").await,
        None,
        "unholdable → NULL"
    );
}

#[tokio::test]
async fn hostile_but_valid_text_is_stored_verbatim() {
    let app = spawn_app().await;
    let at = "2026-11-27T15:00:00.000Z";
    let ids = [
        r#"o'brien"; DROP TABLE price_history; --"#.to_string(),
        "🚀 to the moon 🌕".to_string(),
        "比特币-ビットコイン-비트코인".to_string(),
        r"back\slash\n %_$1 \u0000".to_string(),
        incompressible_text(10 * 1024),
    ];
    let long_name = format!(
        r#"{{"id":"long-name","symbol":"{0}","name":"{0}","current_price":2}}"#,
        incompressible_text(10 * 1024).replace(['"', '\\'], "x")
    );
    let mut coins: Vec<String> = ids.iter().map(|id| coin(id, "1.5", at)).collect();
    coins.push(long_name.clone());
    app.serve(&[page(&coins)]).await;

    let summary = app.run().await;

    assert_eq!((summary.rejected, summary.history_inserted), (0, 6));
    for id in &ids {
        assert_eq!(
            app.current(id, "symbol").await.as_deref(),
            Some(id.as_str())
        );
        assert_eq!(app.current(id, "name").await, Some(format!("Coin {id}")));
        assert_eq!(app.history(id).await, ["1.5"], "{id}");
    }
    let name = app.current("long-name", "name").await.unwrap();
    assert_eq!(name.len(), 10 * 1024);
    assert!(long_name.contains(&name));
    let raw: String = app
        .db
        .query_one("SELECT payload::text FROM raw_pages", &[])
        .await
        .unwrap()
        .get(0);
    assert!(raw.contains(&serde_json::to_string(&ids[0]).unwrap()));
}

/// The keys hash the id's bytes: ids that bytea's escape syntax would read alike stay apart.
#[tokio::test]
async fn ids_alike_but_for_backslashes_are_different_coins() {
    let app = spawn_app().await;
    let at = "2026-11-27T15:00:00.000Z";
    let ids = ["a", r"\x61", r"\141", r"\", r"\\"];
    let coins: Vec<String> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| coin(id, &(i + 1).to_string(), at))
        .collect();
    app.serve(&[page(&coins)]).await;

    let summary = app.run().await;

    assert_eq!(summary.history_inserted, 5);
    for (i, id) in ids.iter().enumerate() {
        let price = (i + 1).to_string();
        assert_eq!(app.current(id, "price").await, Some(price.clone()), "{id}");
        assert_eq!(app.history(id).await, [price], "{id}");
        // Unique through the digest of the id's UTF-8 bytes, whatever its length.
        let key_is_sha256_of_utf8: bool = app
            .db
            .query_one(
                "SELECT coin_id_digest(coin_id) = sha256(convert_to(coin_id, 'UTF8')) FROM coins WHERE coin_id = $1",
                &[id],
            )
            .await
            .unwrap()
            .get(0);
        assert!(key_is_sha256_of_utf8, "{id}");
    }
}

#[tokio::test]
async fn text_postgresql_cannot_hold_is_refused_alone_and_the_run_goes_on() {
    let app = spawn_app().await;
    let at = "2026-11-27T15:00:00.000Z";
    app.serve(&[page(&[
        coin("plain", "1", at),
        coin("nul\u{0}id", "1", at),
        r#"{"id":"nul-name","symbol":"n\u0000","name":"a\u0000b","current_price":2,"image":"\ud800"}"#.to_string(),
        r#"{"id":"lone-surrogate","name":"\udc00","current_price":3}"#.to_string(),
    ])])
    .await;

    let summary = app.run().await;

    assert_eq!(
        (summary.fetched, summary.rejected, summary.history_inserted),
        (4, 1, 3)
    );
    assert_eq!(app.current("nul-name", "name").await, None);
    assert_eq!(app.current("lone-surrogate", "name").await, None);
    assert_eq!(app.current("nul-name", "price").await.as_deref(), Some("2"));
    let raw: String = app
        .db
        .query_one("SELECT payload::jsonb->2->>'name' FROM raw_pages", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, "a\u{fffd}b", "the raw page keeps the rest of the text");
}

#[tokio::test]
async fn ten_thousand_coins_in_one_page_are_all_stored() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "10000");
    app.serve(&[page(&numbered_coins(0..10_000, "0.5"))]).await;

    let summary = app.run().await;

    assert_eq!(
        (summary.fetched, summary.history_inserted),
        (10_000, 10_000)
    );
    assert_eq!(app.count("current_prices").await, 10_000);
    assert_eq!(
        app.current("coin-9999", "price").await.as_deref(),
        Some("0.5")
    );
}

#[tokio::test]
async fn every_page_of_a_long_crawl_is_kept_raw() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "2750");
    let pages: Vec<String> = (0..11)
        .map(|n| page(&numbered_coins(n * 250..(n + 1) * 250, "1")))
        .collect();
    app.serve(&pages).await;

    assert_eq!(app.run().await.pages, 11);

    let stored: Vec<i32> =
        common::column(&app.db, "SELECT page FROM raw_pages ORDER BY page").await;
    assert_eq!(stored, (1..=11).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_coin_on_two_pages_is_kept_once() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "1000");
    let mut second = numbered_coins(249..260, "2");
    second.insert(0, coin("coin-0000", "9", "2026-11-27T15:00:00.000Z"));
    app.serve(&[page(&numbered_coins(0..250, "1")), page(&second)])
        .await;

    let summary = app.run().await;

    assert_eq!(summary.fetched, 260, "coin-0000 and coin-0249 came twice");
    assert_eq!(summary.history_inserted, 260);
    assert_eq!(
        app.current("coin-0000", "price").await.as_deref(),
        Some("1"),
        "first appearance wins"
    );
    assert_eq!(
        app.current("coin-0249", "price").await.as_deref(),
        Some("1")
    );
}

#[tokio::test]
async fn a_coin_missing_from_an_answer_keeps_its_rows_and_an_empty_answer_changes_nothing() {
    let app = spawn_app().await;
    let at = "2026-11-27T15:00:00.000Z";
    app.serve(&[page(&[coin("a", "1", at), coin("b", "2", at)])])
        .await;
    app.run().await;
    app.serve(&[page(&[coin("a", "1", at)])]).await;
    app.run().await;
    assert_eq!(app.count("current_prices").await, 2);
    let before = app.price_tables().await;

    app.serve(&["[]".to_string()]).await;
    let summary = app.run().await;

    assert_eq!(
        (summary.fetched, summary.upserted, summary.history_inserted),
        (0, 0, 0)
    );
    assert_eq!(app.price_tables().await, before);
}

#[tokio::test]
async fn a_repeated_trigger_id_returns_the_first_summary_and_does_nothing() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    let first = app.try_run(Some("2026-11-27T15:00:00Z")).await.unwrap();
    app.serve(&[fixture(SEP8)]).await;
    let before = app.price_tables().await;

    let second = app.try_run(Some("2026-11-27T15:00:00Z")).await.unwrap();

    assert_eq!(second.status, RunState::Duplicate);
    assert_eq!(second.run_id, first.run_id);
    assert_eq!(second.history_inserted, first.history_inserted);
    assert_eq!(app.price_tables().await, before);
    assert_eq!(
        app.coingecko.received_requests().await.unwrap().len(),
        0,
        "not even fetched"
    );
    let another = app.try_run(Some("2026-11-27T15:01:00Z")).await.unwrap();
    assert_eq!(another.status, RunState::Succeeded);
}

#[tokio::test]
async fn a_failed_run_does_not_block_the_retry_of_its_trigger() {
    let mut app = spawn_app().await;
    app.set("COINGECKO_MAX_ATTEMPTS", "1");
    app.serve(&["<html>502 Bad Gateway</html>".to_string()])
        .await;
    assert!(app.try_run(Some("t-1")).await.is_err());
    app.serve(&[fixture(SEP5)]).await;

    let retried = app.try_run(Some("t-1")).await.unwrap();

    assert_eq!(retried.status, RunState::Succeeded);
    let statuses: Vec<String> = common::column(
        &app.db,
        "SELECT status FROM ingest_runs WHERE trigger_id = 't-1' ORDER BY started_at",
    )
    .await;
    assert_eq!(statuses, ["failed", "succeeded"]);
}

#[tokio::test]
async fn a_broken_page_fails_the_run_with_nothing_applied() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "500");
    app.set("COINGECKO_MAX_ATTEMPTS", "2");
    app.serve(&[fixture(SEP5)]).await;
    app.run().await;
    let before = app.price_tables().await;
    let truncated = page(&numbered_coins(250..300, "1"));
    app.serve(&[
        page(&numbered_coins(0..250, "1")),
        truncated[..truncated.len() / 2].to_string(),
    ])
    .await;

    let error = app.try_run(None).await.unwrap_err().to_string();

    assert!(
        error.contains("page 2") && error.contains("2 attempts"),
        "{error}"
    );
    assert_eq!(app.price_tables().await, before);
    assert_eq!(app.count("raw_pages").await, 1, "only the first run's page");
    let row = app
        .db
        .query_one(
            "SELECT status, error FROM ingest_runs ORDER BY started_at DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "failed");
    assert_eq!(row.get::<_, String>(1), error);
}

#[tokio::test]
async fn overlapping_runs_serialize_and_never_duplicate_history() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;

    let runs = join_all((0..4).map(|_| app.try_run(None))).await;

    let inserted: u64 = runs
        .iter()
        .map(|r| r.as_ref().unwrap().history_inserted)
        .sum();
    assert_eq!(
        inserted, 100,
        "one run records, the others find nothing new: {runs:?}"
    );
    assert_eq!(app.count("price_history").await, 100);
}

#[tokio::test]
async fn the_later_of_two_overlapping_runs_compares_against_what_the_earlier_wrote() {
    let app = spawn_app().await;
    app.serve(&[page(&[coin("eth", "2456.15", "2026-11-27T15:00:00.000Z")])])
        .await;
    app.run().await;
    let other = wiremock::MockServer::start().await;
    app.serve(&[page(&[coin("eth", "2500", "2026-11-27T15:01:00.000Z")])])
        .await;
    common::serve_on(
        &other,
        &[page(&[coin("eth", "2501", "2026-11-27T15:01:30.000Z")])],
    )
    .await;

    let other_uri = other.uri();
    let (a, b) = tokio::join!(app.try_run(None), app.try_run_from(&other_uri, None));

    let recorded = a.unwrap().history_inserted + b.unwrap().history_inserted;
    let history = app.history("eth").await;
    assert_eq!(recorded, 1, "2500 and 2501 are 0.04% apart: {history:?}");
    assert_eq!(history.len(), 2);
}

#[tokio::test]
async fn price_history_refuses_update_delete_and_truncate() {
    let app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    app.run().await;

    for statement in [
        "UPDATE price_history SET price = 0 WHERE coin_id = 'bitcoin'",
        "DELETE FROM price_history WHERE coin_id = 'bitcoin'",
        "UPDATE price_points SET price = 0",
        "DELETE FROM price_points",
        "TRUNCATE price_points CASCADE",
    ] {
        let error = app.db.execute(statement, &[]).await.unwrap_err();
        let db = error.as_db_error().expect(statement);
        assert_eq!(db.code().code(), "42501", "{statement}");
        assert!(db.message().contains("append-only"), "{}", db.message());
    }
    assert_eq!(app.history("bitcoin").await, ["58083"]);
}

#[tokio::test]
async fn raw_pages_follow_store_raw_and_are_pruned_after_the_retention() {
    let mut app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    app.run().await;
    app.db
        .execute(
            "UPDATE raw_pages SET fetched_at = now() - interval '8 days'",
            &[],
        )
        .await
        .unwrap();
    app.set("STORE_RAW", "false");

    app.run().await;

    assert_eq!(
        app.count("raw_pages").await,
        0,
        "8-day-old page pruned, none stored"
    );
    app.set("STORE_RAW", "true");
    app.set("RAW_RETENTION_DAYS", "30");
    app.run().await;
    assert_eq!(app.count("raw_pages").await, 1);
}

#[tokio::test]
async fn processes_starting_at_once_migrate_safely() {
    let database = common::fresh_database().await;
    let url = &database.url;
    let config: tokio_postgres::Config = url.parse().unwrap();
    let migrations = (0..4).map(|_| async {
        let mut store = common::connector().connect(&config).await.unwrap();
        store.migrate().await
    });

    for outcome in join_all(migrations).await {
        outcome.expect("a concurrent migration failed");
    }

    let db = common::connect(url).await;
    let applied: i64 = db
        .query_one("SELECT count(*) FROM refinery_schema_history", &[])
        .await
        .unwrap()
        .get(0);
    let shipped = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations"))
        .unwrap()
        .count() as i64;
    assert_eq!(applied, shipped);
}

#[tokio::test]
async fn a_move_with_an_unchanged_last_updated_is_recorded_once_the_timestamp_moves_on() {
    let app = spawn_app().await;
    app.serve(&[page(&[coin("a", "100", "2026-11-27T15:00:00.000Z")])])
        .await;
    app.run().await;
    app.serve(&[page(&[coin("a", "102", "2026-11-27T15:00:00.000Z")])])
        .await;

    let same_timestamp = app.run().await;

    assert_eq!(
        same_timestamp.history_inserted, 0,
        "the history key is taken"
    );
    assert_eq!(app.history("a").await, ["100"]);
    assert_eq!(app.current("a", "price").await.as_deref(), Some("102"));
    assert_eq!(
        app.current("a", "recorded_price").await.as_deref(),
        Some("100")
    );
    app.serve(&[page(&[coin("a", "102", "2026-11-27T15:01:00.000Z")])])
        .await;
    app.run().await;
    assert_eq!(app.history("a").await, ["100", "102"]);
}

#[tokio::test]
async fn a_run_kept_waiting_by_an_overlapping_one_or_a_slow_statement_fails_clearly_within_its_bounds(
) {
    let mut app = spawn_app().await;
    app.serve(&[fixture(SEP5)]).await;
    // The test's own session holds the run lock, as a slow overlapping run would.
    app.db
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&coingecko_cdc::store::RUN_LOCK],
        )
        .await
        .unwrap();
    app.set("DB_LOCK_TIMEOUT_SECS", "1");
    let waited = std::time::Instant::now();
    let lock_error = app.try_run(None).await.unwrap_err().to_string();
    let waited = waited.elapsed();
    app.db
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&coingecko_cdc::store::RUN_LOCK],
        )
        .await
        .unwrap();
    // A statement the server takes 30 s over: a slow disk, a lock held outside the ingest.
    common::slow_applies(&app.db, 30).await;
    app.set("DB_STATEMENT_TIMEOUT_SECS", "1");
    let statement_error = app.try_run(None).await.unwrap_err().to_string();

    assert!(
        lock_error.contains("55P03") && lock_error.contains("DB_LOCK_TIMEOUT_SECS"),
        "{lock_error}"
    );
    assert!(waited < std::time::Duration::from_secs(5), "{waited:?}");
    assert!(
        statement_error.contains("57014") && statement_error.contains("DB_STATEMENT_TIMEOUT_SECS"),
        "{statement_error}"
    );
    // Cancelled on the server too, not left sleeping with the run's locks.
    let sleeping: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep'
             AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sleeping, 0);
    assert_eq!(app.count("price_history").await, 0, "nothing applied");
    let failed: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM ingest_runs WHERE status = 'failed'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(failed, 2);

    app.db
        .batch_execute("DROP TRIGGER slow_apply ON quotes")
        .await
        .unwrap();
    assert_eq!(
        app.run().await.history_inserted,
        100,
        "the next run catches up"
    );
}

#[tokio::test]
async fn the_coin_dimension_keys_each_id_once_and_keeps_its_latest_description() {
    let app = spawn_app().await;
    let described = |name: &str, at: &str| {
        coin("bitcoin", "100", at).replace("\"Coin bitcoin\"", &format!("\"{name}\""))
    };
    app.serve(&[page(&[described("Bitcoin", "2024-09-05T00:00:00.000Z")])])
        .await;
    app.run().await;
    let coins = || async {
        app.db
            .query_one(
                "SELECT coin_key, name, first_seen_at, last_seen_at, xmin::text FROM coins WHERE coin_id = 'bitcoin'",
                &[],
            )
            .await
            .unwrap()
    };
    let first = coins().await;

    // A new price within the hour: the coin's row is not rewritten.
    app.serve(&[page(&[described("Bitcoin", "2024-09-05T00:05:00.000Z")])])
        .await;
    app.run().await;
    let same = coins().await;
    assert_eq!(
        same.get::<_, String>(4),
        first.get::<_, String>(4),
        "row untouched"
    );

    // A new name: kept at once, under the same key.
    app.serve(&[page(&[described(
        "Bitcoin (BTC)",
        "2024-09-05T00:10:00.000Z",
    )])])
    .await;
    app.run().await;
    let renamed = coins().await;
    assert_eq!(renamed.get::<_, i32>(0), first.get::<_, i32>(0));
    assert_eq!(renamed.get::<_, String>(1), "Bitcoin (BTC)");
    assert_eq!(
        app.current("bitcoin", "name").await.as_deref(),
        Some("Bitcoin (BTC)")
    );

    // Seen again over an hour later: last_seen_at moves, first_seen_at never does.
    app.db
        .batch_execute("UPDATE coins SET first_seen_at = first_seen_at - interval '2 hours', last_seen_at = last_seen_at - interval '2 hours'")
        .await
        .unwrap();
    let before = coins().await;
    app.serve(&[page(&[described(
        "Bitcoin (BTC)",
        "2024-09-05T00:15:00.000Z",
    )])])
    .await;
    app.run().await;
    let later = coins().await;
    type At = chrono::DateTime<chrono::Utc>;
    assert_eq!(later.get::<_, At>(2), before.get::<_, At>(2));
    assert!(later.get::<_, At>(3) > before.get::<_, At>(3));
    assert_eq!(app.count("coins").await, 1);
}

#[path = "ingest/latest_state.rs"]
mod latest_state;
#[path = "ingest/replication.rs"]
mod replication;
