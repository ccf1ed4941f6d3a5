//! Least privilege: a run as a role with only `docs/ingest-role.sql`'s grants works, and that role
//! can neither rewrite history nor change the schema.

mod common;

use common::{connect, fixture, spawn_app};

#[tokio::test]
async fn the_ingest_role_runs_an_ingest_and_can_do_nothing_more() {
    let mut app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.run().await;
    let grants =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/ingest-role.sql"))
            .unwrap();
    app.db
        .batch_execute(&grants)
        .await
        .expect("docs/ingest-role.sql runs as the owner");
    let login = format!("ingest_{}", uuid::Uuid::now_v7().simple());
    // A generated name: roles cannot be bound as parameters.
    app.db
        .batch_execute(&format!(
            "CREATE ROLE {login} LOGIN IN ROLE coingecko_cdc_ingest"
        ))
        .await
        .unwrap();
    let as_ingest = app
        .database_url
        .replacen("postgres@", &format!("{login}@"), 1);
    assert_ne!(
        as_ingest, app.database_url,
        "the test server URL names its user"
    );

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

    let ingest = connect(&as_ingest).await;
    for statement in [
        "UPDATE price_history SET price = 0",
        "DELETE FROM price_history",
        "TRUNCATE price_history",
        "DELETE FROM current_prices",
        "CREATE TABLE intruder (id int)",
        "ALTER TABLE current_prices ADD COLUMN intruder int",
        "DROP TABLE raw_pages",
        "DROP VIEW latest_prices",
        "ALTER TABLE price_history DETACH PARTITION price_history_2024_09",
        "DROP TABLE price_history_2024_09",
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
