//! Least privilege: a run as a role with only `docs/ingest-role.sql`'s grants works, and that role
//! can neither rewrite history nor change the schema.

mod common;

use coingecko_cdc::app::AppError;
use coingecko_cdc::summary::BackfillOutcome;
use common::market_chart::backfill_august_2024;
use common::{connect, fixture, ingest_login, spawn_app};

#[tokio::test]
async fn the_ingest_role_runs_an_ingest_and_can_do_nothing_more() {
    let mut app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    let as_ingest = ingest_login(&app).await;

    app.set("DATABASE_URL", &as_ingest);
    app.set("AUTO_MIGRATE", "false");
    app.set("RAW_RETENTION_DAYS", "0");
    app.serve(&[fixture("markets-2024-09-08.json")]).await;
    let summary = app.run().await;
    assert!(summary.history_inserted > 50, "{summary:?}");
    assert_eq!(
        app.count("raw_pages").await,
        1,
        "the first run's page pruned by the ingest role"
    );
    // A backfill, with the same grants: its job, its chunks and history before the live rows.
    let backfilled = backfill_august_2024(&mut app).await;
    assert_eq!(backfilled.outcome, BackfillOutcome::Finished);
    assert!(backfilled.history_inserted > 0, "{backfilled:?}");

    let ingest = connect(&as_ingest).await;
    for statement in [
        "UPDATE price_history SET price = 0",
        "DELETE FROM price_history",
        "TRUNCATE price_points",
        "UPDATE price_points SET price = 0",
        "DELETE FROM quotes",
        "DELETE FROM coins",
        "CREATE TABLE intruder (id int)",
        "ALTER TABLE quotes ADD COLUMN intruder int",
        "DROP TABLE raw_pages",
        "DROP VIEW latest_prices",
        "ALTER TABLE price_points DETACH PARTITION price_points_2024_w36",
        "DROP TABLE price_points_2024_w36",
        // What a run was stays: a failed live run cannot be passed off as a replay (status skips
        // those), nor its trigger id freed for another.
        "UPDATE ingest_runs SET kind = 'replay'",
        "UPDATE ingest_runs SET trigger_id = NULL",
        "DELETE FROM ingest_runs",
    ] {
        let error = ingest.batch_execute(statement).await.unwrap_err();
        let code = error.as_db_error().map(|db| db.code().code().to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{statement}: {error}");
    }
    let readable: i64 = ingest
        .query_one("SELECT count(*) FROM latest_prices", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(readable, 101);
}

#[tokio::test]
async fn migrating_as_the_ingest_role_says_to_turn_auto_migrate_off_and_migrate_as_the_owner() {
    let mut app = spawn_app().await;
    let as_ingest = ingest_login(&app).await;
    app.set("DATABASE_URL", &as_ingest);
    app.serve(&[fixture("markets-2024-09-05.json")]).await;

    // AUTO_MIGRATE left on, its default.
    let error = app.try_run(None).await.unwrap_err();

    assert!(matches!(error, AppError::Migrate(_)), "{error:?}");
    let message = error.to_string();
    for advice in [
        "applying migrations",
        "(SQLSTATE 42501)",
        "may not change the schema",
        "AUTO_MIGRATE=false",
        "AutoMigrate=false",
        "`coingecko-cdc migrate`",
        "events/migrate.json",
    ] {
        assert!(message.contains(advice), "{advice}: {message}");
    }
    assert!(app.coingecko.received_requests().await.unwrap().is_empty());
    app.set("AUTO_MIGRATE", "false");
    assert!(app.try_run(None).await.is_ok(), "the advice works");
}
