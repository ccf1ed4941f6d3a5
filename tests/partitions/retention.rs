//! Retention an operator can trust: a week the owner retired (detached and kept, dropped, or older
//! than `price_points_partitioning.retention`) is never made again by a run or a backfill, whose
//! rows for it are left out and counted; the ingest role can make only the weeks a run can need;
//! bounds are UTC whatever the session; every partition refuses TRUNCATE; a replay leaves the
//! live runs' raw pages and health alone.

use crate::common;

use std::path::Path;

use crate::common::market_chart::backfill_august_2024;
use crate::common::{coin, column, connect, fixture, ingest_login, page, spawn_app, TestApp};
use chrono::{DateTime, Datelike, TimeDelta, Utc};
use coingecko_cdc::archive::{self, SHIPPED_YEAR};
use coingecko_cdc::replay::recorded_answer;
use coingecko_cdc::secrets::SecretsManager;
use coingecko_cdc::summary::{BackfillOutcome, BackfillSummary, RunState};

/// Week 32 of 2024: Monday 2024-08-05 to Sunday 2024-08-11, inside the backfilled August.
const W32: &str = "price_points_2024_w32";

async fn relation_exists(app: &TestApp, name: &str) -> bool {
    app.db
        .query_one("SELECT to_regclass($1) IS NOT NULL", &[&name])
        .await
        .unwrap()
        .get(0)
}

async fn attached(app: &TestApp) -> Vec<String> {
    column(
        &app.db,
        "SELECT inhrelid::regclass::text FROM pg_inherits
         WHERE inhparent = 'price_points'::regclass ORDER BY 1",
    )
    .await
}

/// A live run as of 2024-09-05, then week 32 made by the owner and retired with `retire`.
async fn with_week_32_retired(retire: &str) -> TestApp {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    app.db
        .batch_execute(&format!(
            "SELECT price_history_make_partitions('{{2024-08-07Z}}');
             ALTER TABLE price_points DETACH PARTITION {W32};
             {retire}"
        ))
        .await
        .expect("the owner retires week 32");
    app
}

/// A run with one coin stamped inside week 32 and one stamped after it.
async fn run_into_week_32(app: &TestApp) {
    app.serve(&[page(&[
        coin("old-news", "1.5", "2024-08-07T12:00:00.000Z"),
        coin("fresh", "2.5", "2024-09-06T12:00:00.000Z"),
    ])])
    .await;
    let summary = app.try_run(None).await.expect("the run succeeds");
    assert_eq!(
        (
            summary.fetched,
            summary.history_inserted,
            summary.outside_retention
        ),
        (2, 1, 1),
        "{summary:?}"
    );
    assert_eq!(
        summary.fetched,
        summary.rejected + summary.history_inserted + summary.unchanged + summary.outside_retention
    );
    assert_eq!(summary.currencies[0].outside_retention, 1, "{summary:?}");
    assert_eq!(app.history("fresh").await, ["2.5"]);
    assert!(app.history("old-news").await.is_empty());
    let current = column::<String>(&app.db, "SELECT coin_id FROM current_prices").await;
    assert!(
        !current.contains(&"old-news".to_string()),
        "the coin is left out whole, as a rejected one"
    );
}

/// A daily backfill of bitcoin's August 2024, before its first live row (2024-09-05).
async fn backfill_august(app: &mut TestApp) -> BackfillSummary {
    let summary = backfill_august_2024(app).await;
    assert_eq!(summary.outcome, BackfillOutcome::Finished, "{summary:?}");
    assert_eq!(summary.chunks_left, 0, "{summary:?}");
    // One point a day at 00:00 UTC: August 5 to 11 fall in week 32.
    assert_eq!(summary.outside_retention, 7, "{summary:?}");
    assert!(summary.history_inserted > 0, "{summary:?}");
    let in_week_32: i64 = app
        .db
        .query_one(
            "SELECT count(*) FROM price_history
             WHERE source_updated_at >= '2024-08-05Z' AND source_updated_at < '2024-08-12Z'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_week_32, 0);
    summary
}

#[tokio::test]
async fn a_week_detached_and_kept_blocks_no_run_or_backfill_and_gets_no_row() {
    let mut app = with_week_32_retired("").await;

    run_into_week_32(&app).await;
    backfill_august(&mut app).await;

    assert!(!attached(&app).await.contains(&W32.to_string()));
    assert_eq!(
        app.count(W32).await,
        0,
        "the kept table is the owner's archive"
    );
    let chunks = column::<String>(&app.db, "SELECT state FROM backfill_chunks").await;
    assert!(chunks.iter().all(|s| s == "done"), "{chunks:?}");
}

#[tokio::test]
async fn a_dropped_week_is_never_made_again() {
    let mut app = with_week_32_retired(&format!("DROP TABLE {W32};")).await;

    run_into_week_32(&app).await;
    backfill_august(&mut app).await;

    assert!(!relation_exists(&app, W32).await);
}

#[tokio::test]
async fn weeks_older_than_the_retention_horizon_are_neither_written_nor_made() {
    let app = spawn_app().await;
    app.db
        .batch_execute("UPDATE price_points_partitioning SET retention = '1 year'")
        .await
        .expect("the owner declares the horizon");
    let now = Utc::now();
    let stamp = |at: DateTime<Utc>| at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    app.serve(&[page(&[
        coin("ancient", "1", &stamp(now - TimeDelta::days(400))),
        coin("recent", "1", &stamp(now - TimeDelta::days(300))),
    ])])
    .await;

    let summary = app.run().await;

    assert_eq!(
        (summary.history_inserted, summary.outside_retention),
        (1, 1),
        "{summary:?}"
    );
    let old_week = format!(
        "price_points_{}",
        (now - TimeDelta::days(400)).format("%G_w%V")
    );
    assert!(!relation_exists(&app, &old_week).await, "{old_week}");
    let error = app
        .db
        .execute(
            "SELECT price_history_make_partitions(ARRAY[now() - interval '400 days'])",
            &[],
        )
        .await
        .unwrap_err();
    let message = error.as_db_error().unwrap().message().to_string();
    assert!(
        message.contains(
            "before the retention horizon (price_points_partitioning.retention = 1 year)"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn the_ingest_role_can_make_only_the_weeks_a_run_can_need() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    app.db
        .batch_execute(
            "ALTER TABLE price_points DETACH PARTITION price_points_2024_w36;
             DROP TABLE price_points_2024_w36;",
        )
        .await
        .unwrap();
    let partitions = attached(&app).await;
    let ingest = connect(&ingest_login(&app).await).await;

    for (times, reason) in [
        (
            "{1990-01-01Z,1990-01-08Z}",
            "price_points_1990_w01 ends before CoinGecko's first prices (2013-04-28)",
        ),
        (
            "{2100-01-04Z}",
            "price_points_2100_w01 starts after next week",
        ),
        (
            "{2026-11-27Z,2024-09-05Z}",
            "price_points_2024_w36 was dropped: the owner retired it",
        ),
    ] {
        let error = ingest
            .execute(
                "SELECT price_history_make_partitions($1::text::timestamptz[])",
                &[&times],
            )
            .await
            .unwrap_err();
        let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
        assert_eq!(db.code().code(), "22023", "{times}: {db:?}");
        assert!(db.message().contains(reason), "{times}: {}", db.message());
        assert!(
            db.hint().is_some_and(|h| h.contains("outside_retention")),
            "{db:?}"
        );
    }
    // Temporary tables named like the owner's do not stand in for them inside the functions.
    ingest
        .batch_execute(
            "CREATE TEMP TABLE price_points_periods (from_at timestamptz, to_at timestamptz,
                 partition_oid oid, PRIMARY KEY (from_at, to_at, partition_oid));
             CREATE TEMP TABLE price_points_partitioning (period text, only_row bool, retention interval);
             INSERT INTO price_points_partitioning VALUES ('day', true, NULL);
             CREATE TEMP TABLE pg_inherits (inhrelid oid, inhparent oid, inhseqno int, inhdetachpending bool);",
        )
        .await
        .unwrap();
    let error = ingest
        .execute("SELECT price_history_make_partitions('{2024-09-05Z}')", &[])
        .await
        .unwrap_err();
    let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
    assert_eq!(db.code().code(), "22023", "shadowed: {db:?}");
    assert_eq!(attached(&app).await, partitions, "nothing was made");
    // A week the role may make is made as the owner's table says: a week, not a day.
    ingest
        .execute("SELECT price_history_make_partitions('{2014-01-01Z}')", &[])
        .await
        .unwrap();
    app.db.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let made: Vec<String> = column(
        &app.db,
        "SELECT c.relname || ' ' || pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i
         JOIN pg_class c ON c.oid = i.inhrelid
         WHERE i.inhparent = 'price_points'::regclass AND c.relname LIKE '%2014%'",
    )
    .await;
    assert_eq!(
        made,
        ["price_points_2014_w01 FOR VALUES FROM ('2013-12-30 00:00:00+00') TO ('2014-01-06 00:00:00+00')"]
    );
    let judged: Vec<Option<String>> = ingest
        .query_one(
            "SELECT price_points_outside_retention('{2024-09-05Z,NULL}')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        judged,
        [
            Some("price_points_2024_w36 was dropped: the owner retired it".to_string()),
            None
        ]
    );
}

/// Monday 00:00 UTC, every bound, whatever the database's TimeZone and DateStyle: from a fresh
/// migrate, and for the weeks runs make after.
#[tokio::test]
async fn partition_bounds_are_utc_mondays_whatever_the_session() {
    for (time_zone, date_style) in [
        ("Asia/Kolkata", "Postgres, MDY"),
        ("America/New_York", "SQL, DMY"),
        ("Pacific/Chatham", "German, DMY"),
        ("Asia/Kolkata", "ISO, MDY"),
    ] {
        let app = unmigrated_with(time_zone, date_style).await;
        app.store().await.migrate().await.expect("migrating");
        // This week's Monday, 01:00 UTC: before 03:30, where a bound read as Israel time fell.
        let today = Utc::now().date_naive();
        let monday = today - TimeDelta::days(today.weekday().num_days_from_monday().into());
        let this_monday = format!("{monday}T01:00:00.000Z");
        app.serve(&[page(&[
            coin("monday-early", "1", "2024-09-02T00:30:00.000Z"),
            coin("this-week", "1", &this_monday),
        ])])
        .await;

        let summary = app
            .try_run(None)
            .await
            .unwrap_or_else(|e| panic!("{time_zone}, {date_style}: {e}"));

        assert_eq!(summary.history_inserted, 2, "{time_zone}, {date_style}");
        let utc = on_the_utc_grid(&app, &format!("{time_zone}, {date_style}")).await;
        let homes = column::<String>(
            &utc,
            "SELECT c.coin_id || ' ' || p.tableoid::regclass
             FROM price_points p JOIN coins c USING (coin_key) ORDER BY 1",
        )
        .await;
        assert_eq!(
            homes,
            [
                "monday-early price_points_2024_w36".to_string(),
                format!("this-week price_points_{}", monday.format("%G_w%V")),
            ],
            "{time_zone}, {date_style}"
        );
    }
}

async fn assert_truncate_refused(app: &TestApp, partitions: &[&str]) {
    for partition in partitions {
        let error = app
            .db
            .batch_execute(&format!("TRUNCATE {partition}"))
            .await
            .unwrap_err();
        let code = error.as_db_error().map(|db| db.code().code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{partition}: {error}");
    }
}

/// An empty database whose sessions (the store's, from now on) get these settings.
async fn unmigrated_with(time_zone: &str, date_style: &str) -> TestApp {
    let app = common::spawn_app_migrated_to(Some(0)).await;
    app.db
        .batch_execute(&format!(
            "ALTER DATABASE {name} SET timezone = '{time_zone}';
             ALTER DATABASE {name} SET datestyle = '{date_style}';",
            name = app.database.name()
        ))
        .await
        .unwrap();
    app
}

/// A connection to `app`'s database in UTC, once every partition's bounds are checked to be a
/// Monday 00:00 UTC, a week long, named for its week.
async fn on_the_utc_grid(app: &TestApp, context: &str) -> tokio_postgres::Client {
    let utc = connect(&app.database_url).await;
    utc.batch_execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
        .await
        .unwrap();
    let bounds: Vec<(String, String)> = utc
        .query(
            "SELECT c.relname::text, pg_get_expr(c.relpartbound, c.oid)
             FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'price_points'::regclass",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(bounds.len() >= 3, "{context}: {bounds:?}");
    for (name, bound) in &bounds {
        let (from, to) = bound
            .strip_prefix("FOR VALUES FROM ('")
            .and_then(|b| b.strip_suffix("')"))
            .and_then(|b| b.split_once("') TO ('"))
            .unwrap_or_else(|| panic!("{name}: {bound}"));
        let parse = |t: &str| {
            DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%#z")
                .unwrap_or_else(|e| panic!("{name}: {t}: {e}"))
                .to_utc()
        };
        let (from, to) = (parse(from), parse(to));
        let context = format!("{context}: {name} {bound}");
        assert_eq!(from.weekday(), chrono::Weekday::Mon, "{context}");
        assert_eq!(from.time(), chrono::NaiveTime::MIN, "{context}");
        assert_eq!(to - from, TimeDelta::weeks(1), "{context}");
        assert_eq!(
            *name,
            format!("price_points_{}", from.format("%G_w%V")),
            "{context}"
        );
    }
    utc
}

/// An earlier release, under India's time zone, made weeks from Monday 03:30 UTC and wrote into
/// them: V12 makes them again on the grid, every row moved into its own week.
#[tokio::test]
async fn v12_puts_the_weeks_an_earlier_release_made_off_the_grid_back_on_it() {
    let app = unmigrated_with("Asia/Kolkata", "Postgres, MDY").await;
    app.store().await.migrate_to(Some(10)).await.unwrap();
    connect(&app.database_url)
        .await
        .batch_execute(
            "SELECT price_history_make_partitions('{2024-09-04Z,2024-09-11Z}');
             INSERT INTO ingest_runs (run_id, status) VALUES ('00000000-0000-7000-8000-000000000001', 'succeeded');
             INSERT INTO coins (coin_id, first_seen_at, last_seen_at) VALUES ('bitcoin', now(), now());
             INSERT INTO price_points (source_updated_at, recorded_at, run_id, coin_key, vs_currency, price)
             SELECT at, at, '00000000-0000-7000-8000-000000000001', 1, 'usd', 100
             FROM unnest('{2024-09-04Z,2024-09-09 02:00Z,2024-09-11Z}'::timestamptz[]) at;",
        )
        .await
        .expect("rows in weeks made from Monday 03:30 UTC");

    app.store().await.migrate().await.expect("migrating to V12");

    let utc = on_the_utc_grid(&app, "after V12").await;
    let homes = column::<String>(
        &utc,
        "SELECT source_updated_at || ' ' || tableoid::regclass FROM price_points ORDER BY 1",
    )
    .await;
    assert_eq!(
        homes,
        [
            "2024-09-04 00:00:00+00 price_points_2024_w36",
            "2024-09-09 02:00:00+00 price_points_2024_w37",
            "2024-09-11 00:00:00+00 price_points_2024_w37",
        ]
    );
}

#[tokio::test]
async fn a_partition_made_or_attached_by_hand_refuses_truncate() {
    let app = spawn_app().await;
    app.db
        .batch_execute(
            "CREATE TABLE hand_made PARTITION OF price_points
                 FOR VALUES FROM ('2020-01-06 00:00+00') TO ('2020-01-13 00:00+00');
             CREATE TABLE hand_attached (LIKE price_points);
             ALTER TABLE price_points ATTACH PARTITION hand_attached
                 FOR VALUES FROM ('2020-01-13 00:00+00') TO ('2020-01-20 00:00+00');",
        )
        .await
        .unwrap();

    assert_truncate_refused(&app, &["hand_made", "hand_attached"]).await;
    let ingest = connect(&ingest_login(&app).await).await;
    ingest
        .batch_execute("CREATE TEMPORARY TABLE scratch (n int)")
        .await
        .expect("the event trigger stands in no other role's DDL");

    // Where the migration could make no event trigger (no superuser), the next run guards it.
    app.db
        .batch_execute(
            "DROP EVENT TRIGGER price_points_adopt_partitions;
             CREATE TABLE hand_made_unwatched PARTITION OF price_points
                 FOR VALUES FROM ('2020-01-20 00:00+00') TO ('2020-01-27 00:00+00');",
        )
        .await
        .unwrap();
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    assert_truncate_refused(&app, &["hand_made_unwatched"]).await;
}

#[tokio::test]
async fn a_replay_prunes_no_live_page_and_stays_out_of_the_health() {
    let mut app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    app.serve(&[]).await;
    app.try_run(None)
        .await
        .expect_err("no answer: the run fails");
    app.set("RAW_RETENTION_DAYS", "0");

    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(SHIPPED_YEAR)
        .join("markets-2024-12-30.json.gz");
    let answer = recorded_answer(
        &file.display().to_string(),
        &archive::read_answer(&file).unwrap(),
    )
    .unwrap();
    let replayed = app
        .app_with(&[], SecretsManager::default())
        .await
        .replay(&answer)
        .await
        .expect("the replay succeeds");

    assert_eq!(replayed.status, RunState::Succeeded);
    assert_eq!(app.count("raw_pages").await, 1, "the live run's page stays");
    let kinds = column::<String>(
        &app.db,
        "SELECT kind || ' ' || status FROM ingest_runs ORDER BY started_at",
    )
    .await;
    assert_eq!(kinds, ["live succeeded", "live failed", "replay succeeded"]);
    let health = app.store().await.health_facts().await.unwrap();
    assert_eq!(
        health.last_finished_status,
        Some(RunState::Failed),
        "health judges the live runs: {health:?}"
    );
}
