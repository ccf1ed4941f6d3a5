//! The latest state never moves back: an observation older than the one held changes nothing,
//! whatever order runs apply in or however stale the cache that answered; bad times are refused
//! without freezing a coin; the tracked set is the last run's; health follows the run that
//! finished last.

use crate::common;

use std::time::Duration;

use crate::common::market_chart::ChartBook;
use crate::common::simple_price::PriceBook;
use crate::common::{cli, coin, page, spawn_app, TestApp};
use coingecko_cdc::backfill::{BackfillRequest, Granularity, Window};
use coingecko_cdc::secrets::SecretsManager;
use coingecko_cdc::store::RUN_LOCK;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const AT_15_00: &str = "2026-11-27T15:00:00.000Z";
const AT_15_03: &str = "2026-11-27T15:03:00.000Z";
const AT_15_05: &str = "2026-11-27T15:05:00.000Z";
const AT_15_10: &str = "2026-11-27T15:10:00.000Z";

fn unix(at: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(at)
        .unwrap()
        .timestamp()
}

/// A stub answering `/coins/markets` with `body` after `delay`.
async fn stub_answering(body: String, delay: Duration) -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/coins/markets"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(body)
                .set_delay(delay),
        )
        .mount(&stub)
        .await;
    stub
}

/// (price, last_updated) of every coin's latest price in `currency`, by coin.
async fn latest(app: &TestApp, currency: &str) -> Vec<(String, String, String)> {
    app.db
        .query(
            "SELECT coin_id, price::text, to_char(source_updated_at AT TIME ZONE 'UTC', 'HH24:MI')
             FROM current_prices WHERE vs_currency = $1 ORDER BY coin_id",
            &[&currency],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn row(coin: &str, price: &str, at: &str) -> (String, String, String) {
    (coin.into(), price.into(), at.into())
}

/// (price, last_updated) of a coin's history in usd, in time order.
async fn history(app: &TestApp, coin_id: &str) -> Vec<(String, String)> {
    app.db
        .query(
            "SELECT price::text, to_char(source_updated_at AT TIME ZONE 'UTC', 'HH24:MI')
             FROM price_history WHERE coin_id = $1 AND vs_currency = 'usd' ORDER BY source_updated_at",
            &[&coin_id],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn steps(rows: &[(&str, &str)]) -> Vec<(String, String)> {
    rows.iter()
        .map(|(p, t)| (p.to_string(), t.to_string()))
        .collect()
}

#[tokio::test]
async fn an_older_answer_applied_after_a_newer_one_changes_nothing_and_is_counted() {
    let app = spawn_app().await;
    let coins = |price: &str, at: &str| page(&[coin("a", price, at), coin("b", price, at)]);
    // Run A starts first but its older answer (15:00) arrives late; run B starts 0.8 s after,
    // fetches a newer one (15:10) and applies first.
    let older = stub_answering(coins("26", AT_15_00), Duration::from_secs(3)).await;
    let newer = stub_answering(coins("27", AT_15_10), Duration::ZERO).await;
    let (older_uri, newer_uri) = (older.uri(), newer.uri());
    let later_start = async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        app.try_run_from(&newer_uri, None).await
    };

    let (a, b) = tokio::join!(app.try_run_from(&older_uri, None), later_start);
    let (a, b) = (a.unwrap(), b.unwrap());

    let applied: Vec<uuid::Uuid> = common::column(
        &app.db,
        "SELECT run_id FROM ingest_runs ORDER BY finished_at",
    )
    .await;
    assert_eq!(
        applied,
        [b.run_id, a.run_id],
        "the newer answer applied first"
    );
    assert_eq!(
        latest(&app, "usd").await,
        [row("a", "27", "15:10"), row("b", "27", "15:10")]
    );
    for coin_id in ["a", "b"] {
        assert_eq!(history(&app, coin_id).await, steps(&[("27", "15:10")]));
    }
    assert_eq!((b.history_inserted, b.out_of_order), (2, 0));
    assert_eq!(
        (
            a.fetched,
            a.history_inserted,
            a.upserted,
            a.out_of_order,
            a.unchanged
        ),
        (2, 0, 0, 2, 0)
    );
    let reference: Vec<String> =
        common::column(&app.db, "SELECT recorded_price::text FROM quotes").await;
    assert_eq!(reference, ["27", "27"], "the reference is the newest row");
}

#[tokio::test]
async fn a_stale_cache_answering_one_coin_older_changes_only_what_is_newer() {
    let mut app = spawn_app().await;
    app.set("VS_CURRENCIES", "usd,eur");
    let prices = PriceBook::default();
    let serve = |coins: Vec<String>| {
        let (app, prices) = (&app, &prices);
        async move {
            app.serve(&[page(&coins)]).await;
            prices.serve_on(&app.coingecko).await;
        }
    };
    prices.set("a", "eur", "9.5", unix(AT_15_05));
    prices.set("b", "eur", "4.5", unix(AT_15_05));
    serve(vec![coin("a", "10.00", AT_15_05), coin("b", "5", AT_15_05)]).await;
    app.run().await;

    // The next answer is newer for b, but for a it comes from a stale cache: in usd only, then
    // in eur too.
    prices.clear();
    prices.set("a", "eur", "9", unix(AT_15_10));
    prices.set("b", "eur", "6", unix(AT_15_10));
    serve(vec![coin("a", "9.00", AT_15_03), coin("b", "6", AT_15_10)]).await;
    let stale_in_usd = app.run().await;
    prices.clear();
    prices.set("a", "eur", "8", unix(AT_15_03));
    prices.set("b", "eur", "6", unix(AT_15_10));
    serve(vec![coin("a", "9.00", AT_15_03), coin("b", "6", AT_15_10)]).await;
    let stale_in_both = app.run().await;

    let counts = |s: &coingecko_cdc::summary::Summary| -> Vec<(u64, u64)> {
        s.currencies
            .iter()
            .map(|c| (c.out_of_order, c.history_inserted))
            .collect()
    };
    assert_eq!(counts(&stale_in_usd), [(1, 1), (0, 2)]);
    assert_eq!(stale_in_usd.out_of_order, 1);
    assert_eq!(counts(&stale_in_both), [(1, 0), (1, 0)]);
    assert_eq!(
        latest(&app, "usd").await,
        [row("a", "10.00", "15:05"), row("b", "6", "15:10")]
    );
    assert_eq!(
        latest(&app, "eur").await,
        [row("a", "9", "15:10"), row("b", "6", "15:10")]
    );
    assert_eq!(history(&app, "a").await, steps(&[("10.00", "15:05")]));
    for summary in [&stale_in_usd, &stale_in_both] {
        for c in &summary.currencies {
            assert_eq!(
                c.fetched,
                c.rejected + c.history_inserted + c.unchanged + c.out_of_order,
                "{c:?}"
            );
        }
    }
}

#[tokio::test]
async fn future_unreadable_and_epoch_times_are_refused_and_never_freeze_the_coin() {
    let app = spawn_app().await;
    app.serve(&[page(&[coin("x", "100", AT_15_00)])]).await;
    app.run().await;

    for (bad, named) in [
        (
            "2099-01-01T00:00:00.000Z",
            "last_updated 2099-01-01T00:00:00Z is more than 5 minutes ahead of this run's clock",
        ),
        (
            "2026-13-45T99:00:00Z",
            r#"last_updated "2026-13-45T99:00:00Z" is not an RFC 3339 time"#,
        ),
        (
            "1970-01-01T00:00:00.000Z",
            "last_updated 1970-01-01T00:00:00Z is before 2009-01-03",
        ),
    ] {
        app.serve(&[page(&[coin("x", "120", bad), coin("y", "1", AT_15_03)])])
            .await;
        let run = cli(&app, &["run"], &[("RUST_LOG", "warn")]).await;
        let summary = common::stdout_json(&run);
        assert_eq!(
            (&summary["fetched"], &summary["rejected"]),
            (&2.into(), &1.into()),
            "{bad}"
        );
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(stderr.contains(named), "{bad}: {stderr}");
        assert!(
            stderr.contains("coin_id=\"x\"") || stderr.contains("coin_id=x"),
            "{stderr}"
        );
        assert_eq!(
            latest(&app, "usd").await[0],
            row("x", "100", "15:00"),
            "{bad}"
        );
    }

    // The coin's next real observation is taken: nothing froze it.
    app.serve(&[page(&[coin("x", "130", AT_15_10)])]).await;
    app.run().await;
    assert_eq!(latest(&app, "usd").await[0], row("x", "130", "15:10"));
    assert_eq!(
        history(&app, "x").await,
        steps(&[("100", "15:00"), ("130", "15:10")])
    );
}

#[tokio::test]
async fn a_missing_time_takes_the_answers_own_never_the_runs_clock() {
    let app = spawn_app().await;
    let null_time = r#"{"id":"x","symbol":"x","name":"X","current_price":120,"last_updated":null}"#;
    app.serve(&[page(&[coin("x", "100", AT_15_00)])]).await;
    app.run().await;

    // Alone in its answer, nothing tells when it was seen: refused.
    app.serve(&[page(&[null_time.to_string()])]).await;
    let alone = app.run().await;
    // Beside a coin stamped 15:03, it takes 15:03.
    app.serve(&[page(&[null_time.to_string(), coin("y", "1", AT_15_03)])])
        .await;
    let beside = app.run().await;
    app.serve(&[page(&[coin("x", "100", AT_15_05)])]).await;
    app.run().await;

    assert_eq!((alone.rejected, alone.history_inserted), (1, 0));
    assert_eq!((beside.rejected, beside.history_inserted), (0, 2));
    assert_eq!(
        history(&app, "x").await,
        steps(&[("100", "15:00"), ("120", "15:03"), ("100", "15:05")])
    );
    let changes: Vec<String> = common::column(
        &app.db,
        "SELECT price::text || ' at ' || to_char(source_updated_at AT TIME ZONE 'UTC', 'HH24:MI')
         FROM price_changes WHERE coin_id = 'x' ORDER BY source_updated_at",
    )
    .await;
    assert_eq!(changes, ["100 at 15:00", "120 at 15:03", "100 at 15:05"]);
    let close: String = app
        .db
        .query_one(
            "SELECT close::text FROM price_ohlc_daily WHERE coin_id = 'x'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(close, "100", "the day closes where current_prices stands");
    assert_eq!(latest(&app, "usd").await[0], row("x", "100", "15:05"));
}

#[tokio::test]
async fn of_a_coin_on_two_pages_the_newest_valid_observation_is_kept() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "1000");
    let mut first = common::numbered_coins(2..250, "1");
    first.insert(0, coin("rejected-first", "null", AT_15_00));
    first.insert(1, coin("older-first", "5", AT_15_00));
    let second = vec![
        coin("rejected-first", "2", AT_15_00),
        coin("older-first", "6", AT_15_05),
    ];
    app.serve(&[page(&first), page(&second)]).await;

    let summary = app.run().await;

    assert_eq!((summary.fetched, summary.rejected), (250, 0));
    assert_eq!(
        app.current("rejected-first", "price").await.as_deref(),
        Some("2")
    );
    assert_eq!(
        app.current("older-first", "price").await.as_deref(),
        Some("6")
    );
    assert_eq!(history(&app, "older-first").await, steps(&[("6", "15:05")]));
}

/// The tracked coins ranked in the top 4, in rank order: the query an analyst writes.
async fn tracked_top(db: &tokio_postgres::Client) -> Vec<String> {
    common::column(
        db,
        "SELECT coin_id FROM current_prices
         WHERE tracked AND market_cap_rank <= 4 ORDER BY market_cap_rank",
    )
    .await
}

/// The coins the next backfill of the tracked coins would take, in its order.
async fn backfill_choice(app: &TestApp) -> Vec<String> {
    let backfiller = app.app_with(&[], SecretsManager::default()).await;
    // The weeks before the live rows of 2026-11-27: what a backfill fills.
    let window = Window::Range {
        from: "2026-11-01T00:00:00Z".parse().unwrap(),
        to: Some("2026-11-20T00:00:00Z".parse().unwrap()),
    };
    let request = BackfillRequest::new(window, None, Granularity::Daily).unwrap();
    backfiller.backfill(&request, None).await.unwrap();
    let chosen = common::column(
        &app.db,
        "SELECT c.coin_id FROM backfill_chunks b JOIN coins c USING (coin_key)
         WHERE b.job_id = (SELECT job_id FROM backfill_jobs ORDER BY created_at DESC LIMIT 1)
         GROUP BY c.coin_id ORDER BY min(b.position)",
    )
    .await;
    app.db
        .batch_execute("DELETE FROM backfill_chunks; DELETE FROM backfill_jobs")
        .await
        .unwrap();
    chosen
}

#[tokio::test]
async fn the_tracked_set_is_the_last_runs_and_backfill_takes_it() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "4");
    ChartBook::default().serve_on(&app.coingecko).await;
    let ranked = |ids: &[&str], at: &str| {
        let coins: Vec<String> = ids
            .iter()
            .enumerate()
            .map(|(rank, id)| {
                coin(id, "1", at).replace(
                    r#""current_price""#,
                    &format!(r#""market_cap_rank":{},"current_price""#, rank + 1),
                )
            })
            .collect();
        page(&coins)
    };
    let serve = |ids: &'static [&'static str], at: &'static str| {
        let app = &app;
        async move {
            app.serve(&[ranked(ids, at)]).await;
            ChartBook::default().serve_on(&app.coingecko).await;
        }
    };
    serve(&["a", "b", "c", "d"], AT_15_00).await;
    app.run().await;
    // b falls to rank 5: the answer still carries it, past TOP_N.
    serve(&["a", "c", "d", "e", "b"], AT_15_05).await;
    app.run().await;

    assert_eq!(tracked_top(&app.db).await, ["a", "c", "d", "e"]);
    let departed: (bool, i32) = app
        .db
        .query_one(
            "SELECT tracked, market_cap_rank FROM latest_prices WHERE coin_id = 'b'",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(departed, (false, 2), "kept, with its rows, marked as left");
    assert_eq!(app.history("b").await, ["1"]);
    assert_eq!(backfill_choice(&app).await, ["a", "c", "d", "e"]);

    // b comes back, e leaves.
    serve(&["a", "b", "c", "d", "e"], AT_15_10).await;
    app.run().await;
    assert_eq!(tracked_top(&app.db).await, ["a", "b", "c", "d"]);
    assert_eq!(backfill_choice(&app).await, ["a", "b", "c", "d"]);

    // An empty answer changes nothing, the tracked set neither; nor does an answer of unusable
    // entries, nor a stale one older than what is held.
    app.serve(&["[]".to_string()]).await;
    app.run().await;
    app.serve(&[page(&[r#"{"current_price":1}"#.to_string()])])
        .await;
    app.run().await;
    serve(&["a", "c", "d", "e"], AT_15_03).await;
    let stale = app.run().await;
    assert_eq!(stale.out_of_order, 4);
    assert_eq!(tracked_top(&app.db).await, ["a", "b", "c", "d"]);
    assert_eq!(backfill_choice(&app).await, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn runs_that_died_before_the_last_finished_run_ended_do_not_make_it_unhealthy() {
    let mut app = spawn_app().await;
    app.set("RUST_LOG", "off");
    // Two runs died while a third, which started first, went on to succeed after them.
    app.db
        .batch_execute(
            "INSERT INTO ingest_runs (run_id, status, started_at, finished_at, lease_until) VALUES
                 ('019ac6f2-0000-7000-8000-000000000001', 'succeeded', now() - interval '60 s', now() - interval '10 s', now()),
                 ('019ac6f2-0000-7000-8000-000000000002', 'abandoned', now() - interval '50 s', now() - interval '20 s', now() - interval '40 s'),
                 ('019ac6f2-0000-7000-8000-000000000003', 'abandoned', now() - interval '45 s', now() - interval '20 s', now() - interval '35 s')",
        )
        .await
        .unwrap();
    let healthy = cli(
        &app,
        &["status", "--json", "--abandoned-in-a-row", "1"],
        &[],
    )
    .await;
    assert_eq!(common::stdout_json(&healthy)["abandoned_in_a_row"], 0);
    assert_eq!(healthy.status.code(), Some(0));

    // One that started after the success ended, and died, counts.
    app.db
        .batch_execute(
            "INSERT INTO ingest_runs (run_id, status, started_at, finished_at, lease_until) VALUES
                 ('019ac6f2-0000-7000-8000-000000000004', 'abandoned', now() - interval '5 s', now(), now() - interval '1 s')",
        )
        .await
        .unwrap();
    let abandoned = cli(
        &app,
        &["status", "--json", "--abandoned-in-a-row", "1"],
        &[],
    )
    .await;
    assert_eq!(common::stdout_json(&abandoned)["abandoned_in_a_row"], 1);
    assert_eq!(abandoned.status.code(), Some(6));
}

#[tokio::test]
async fn coin_ids_means_exactly_these_coins() {
    let mut app = spawn_app().await;
    app.set("COIN_IDS", "a,b");
    app.serve(&[page(&[
        coin("a", "1", AT_15_00),
        coin("x", "2", AT_15_00),
        coin("b", "3", AT_15_00),
    ])])
    .await;

    let summary = app.run().await;

    assert_eq!(
        (
            summary.fetched,
            summary.history_inserted,
            summary.unrequested
        ),
        (2, 2, 1)
    );
    assert_eq!(
        common::column::<String>(&app.db, "SELECT coin_id FROM coins ORDER BY coin_id").await,
        ["a", "b"]
    );
}

#[tokio::test]
async fn health_follows_the_run_that_finished_last() {
    let mut app = spawn_app().await;
    app.serve(&[page(&[coin("a", "1", AT_15_00)])]).await;
    app.db
        .execute("SELECT pg_advisory_lock($1)", &[&RUN_LOCK])
        .await
        .unwrap();
    let patient = app.app_with(&[("DB_LOCK_TIMEOUT_SECS", "30")], SecretsManager::default());
    let patient = patient.await;
    let impatient = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let failed = app
            .app_with(&[("DB_LOCK_TIMEOUT_SECS", "1")], SecretsManager::default())
            .await
            .run(None, None)
            .await;
        app.db
            .execute("SELECT pg_advisory_unlock($1)", &[&RUN_LOCK])
            .await
            .unwrap();
        failed
    };

    let (succeeded, failed) = tokio::join!(patient.run(None, None), impatient);

    assert!(succeeded.is_ok(), "{succeeded:?}");
    assert!(failed.unwrap_err().to_string().contains("55P03"));
    app.set("RUST_LOG", "off");
    let status = cli(&app, &["status", "--json"], &[]).await;
    assert_eq!(common::stdout_json(&status)["health"], "healthy");
    assert_eq!(status.status.code(), Some(0));
}

#[tokio::test]
async fn status_on_a_database_never_migrated_says_no_runs() {
    let mut app = common::spawn_app_migrated_to(Some(0)).await;
    app.set("AUTO_MIGRATE", "false");

    let table = cli(&app, &["status"], &[]).await;
    let json = cli(&app, &["status", "--json"], &[]).await;

    assert_eq!(table.status.code(), Some(5), "{table:?}");
    assert!(String::from_utf8_lossy(&table.stderr).contains("never migrated"));
    assert_eq!(json.status.code(), Some(5));
    assert_eq!(common::stdout_json(&json)["health"], "no_runs");
}
