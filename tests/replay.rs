//! `coingecko-cdc replay`: recorded answers from files, through the real ingest and the real
//! PostgreSQL, on the year of real daily answers shipped in data/daily-2024.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use coingecko_cdc::archive::{self, SHIPPED_YEAR};
use coingecko_cdc::replay::{recorded_answer, RecordedAnswer};
use common::{cli, column, last_stderr_line, spawn_app, stdout_json};
use rust_decimal::Decimal;

fn shipped(day: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(SHIPPED_YEAR)
        .join(format!("markets-{day}.json.gz"))
}

/// The shipped year as the replay reads it, in the order the answers were recorded.
fn the_year() -> Vec<RecordedAnswer> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(SHIPPED_YEAR);
    let mut answers: Vec<RecordedAnswer> = archive::answer_files(&[dir])
        .unwrap()
        .iter()
        .map(|path| {
            let text = archive::read_answer(path).unwrap();
            recorded_answer(&path.display().to_string(), &text).unwrap()
        })
        .collect();
    answers.sort_by_key(|a| a.recorded_at);
    answers
}

/// The documented rule, walked over the year coin by coin: a coin's first price is recorded,
/// then each price that moved at least `threshold` percent from the last recorded one, unless a
/// row with the same `last_updated` is already there. Each row carries its answer's time.
fn expected_history(
    answers: &[RecordedAnswer],
    threshold: Decimal,
) -> BTreeSet<(String, DateTime<Utc>, Decimal, DateTime<Utc>)> {
    let mut history: BTreeMap<&str, Vec<(Decimal, DateTime<Utc>)>> = BTreeMap::new();
    let mut rows = BTreeSet::new();
    for answer in answers {
        for quote in answer.market.quotes() {
            let updated = quote.source_updated_at.unwrap_or(answer.recorded_at);
            let recorded = history.entry(&quote.coin_id).or_default();
            let moved = recorded.last().is_none_or(|&(reference, _)| {
                quote.price != reference
                    && (quote.price - reference).abs() * Decimal::ONE_HUNDRED
                        >= threshold * reference.abs()
            });
            if moved && recorded.iter().all(|&(_, at)| at != updated) {
                recorded.push((quote.price, updated));
                rows.insert((
                    quote.coin_id.clone(),
                    updated,
                    quote.price,
                    answer.recorded_at,
                ));
            }
        }
    }
    rows
}

#[tokio::test]
async fn replaying_the_shipped_year_records_what_the_rule_says_and_again_adds_nothing() {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", "2");

    let first = stdout_json(&cli(&app, &["replay"], &[]).await);
    let answers = the_year();
    assert_eq!(answers.len(), 366);
    assert_eq!(first["files"], 366);
    assert_eq!(first["succeeded"], 366);
    assert_eq!(first["duplicate"], 0);
    assert_eq!(first["fetched"], 366 * 100);
    assert_eq!(
        first["fetched"].as_u64(),
        Some(
            first["rejected"].as_u64().unwrap()
                + first["history_inserted"].as_u64().unwrap()
                + first["unchanged"].as_u64().unwrap()
        )
    );
    assert_eq!(first["first_recorded_at"], "2024-01-01T00:45:52.176Z");
    assert_eq!(first["last_recorded_at"], "2024-12-31T00:51:50.229Z");

    let stored: BTreeSet<_> = app
        .db
        .query(
            "SELECT coin_id, source_updated_at, price, recorded_at FROM price_history",
            &[],
        )
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let expected = expected_history(&answers, Decimal::TWO);
    assert_eq!(
        first["history_inserted"].as_u64(),
        Some(expected.len() as u64)
    );
    assert_eq!(stored, expected, "price_history differs from the rule");
    // Every run is in the ledger under its answer's trigger id.
    let triggers = column::<String>(
        &app.db,
        "SELECT trigger_id FROM ingest_runs WHERE status = 'succeeded' ORDER BY trigger_id",
    )
    .await;
    let mut wanted: Vec<String> = answers.iter().map(|a| a.trigger_id.clone()).collect();
    wanted.sort();
    assert_eq!(triggers, wanted);

    let tables = app.price_tables().await;
    let again = stdout_json(&cli(&app, &["replay"], &[]).await);
    assert_eq!(
        (again["succeeded"].as_u64(), again["duplicate"].as_u64()),
        (Some(0), Some(366))
    );
    assert_eq!(again["history_inserted"], 0);
    assert_eq!(
        app.price_tables().await,
        tables,
        "a second replay changed the tables"
    );
}

#[tokio::test]
async fn an_answer_older_than_what_the_database_holds_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    let later = shipped("2024-03-02");
    let earlier = shipped("2024-03-01");
    stdout_json(&cli(&app, &["replay", later.to_str().unwrap()], &[]).await);
    let tables = app.price_tables().await;

    let refused = cli(&app, &["replay", earlier.to_str().unwrap()], &[]).await;

    assert_eq!(refused.status.code(), Some(1));
    let error = last_stderr_line(&refused);
    for part in [
        "markets-2024-03-01.json.gz",
        "2024-03-01",
        "up to 2024-03-02",
        "forward in time only",
    ] {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }
    assert_eq!(app.price_tables().await, tables);
    assert_eq!(app.failed_runs().await.len(), 1);
}

#[tokio::test]
async fn files_and_directories_replay_together_in_the_order_they_were_recorded() {
    let app = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    // Plain and gzip answers, named against their order: the times inside decide.
    std::fs::write(
        dir.path().join("a.json"),
        archive::read_answer(&shipped("2024-06-02")).unwrap(),
    )
    .unwrap();
    std::fs::copy(shipped("2024-06-01"), dir.path().join("b.json.gz")).unwrap();
    std::fs::write(dir.path().join("notes.txt"), "not an answer").unwrap();
    let also = shipped("2024-06-03");

    let summary = stdout_json(
        &cli(
            &app,
            &[
                "replay",
                dir.path().to_str().unwrap(),
                also.to_str().unwrap(),
            ],
            &[],
        )
        .await,
    );

    assert_eq!(
        (summary["files"].as_u64(), summary["succeeded"].as_u64()),
        (Some(3), Some(3))
    );
    let first_days = column::<String>(
        &app.db,
        "SELECT to_char(min(recorded_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD') FROM price_history GROUP BY run_id ORDER BY 1",
    )
    .await;
    assert_eq!(first_days, ["2024-06-01", "2024-06-02", "2024-06-03"]);
    assert_eq!(app.count("raw_pages").await, 0, "the files are the archive");
    let fetch_ms = column::<String>(&app.db, "SELECT summary->>'fetch_ms' FROM ingest_runs").await;
    assert_eq!(fetch_ms, ["0", "0", "0"], "nothing is fetched");
}

#[tokio::test]
async fn what_cannot_be_replayed_is_named_and_nothing_is_applied() {
    let app = spawn_app().await;
    let empty = tempfile::tempdir().unwrap();
    let not_an_answer =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coingecko/error-403.json");
    let broken = empty.path().join("broken.json.gz");
    std::fs::write(&broken, [0x1f, 0x8b, 0, 1, 2]).unwrap();

    for (path, expected) in [
        (empty.path().join("missing"), "no such file or directory"),
        (not_an_answer.clone(), "not a /coins/markets answer"),
        (broken.clone(), "not a readable gzip file"),
    ] {
        let output = cli(&app, &["replay", path.to_str().unwrap()], &[]).await;
        assert_eq!(output.status.code(), Some(1));
        let error = last_stderr_line(&output);
        assert!(
            error.contains(path.to_str().unwrap()) && error.contains(expected),
            "{error}"
        );
    }
    std::fs::remove_file(&broken).unwrap();
    let output = cli(&app, &["replay", empty.path().to_str().unwrap()], &[]).await;
    assert!(last_stderr_line(&output).contains("holds no .json or .json.gz file"));
    assert_eq!(app.count("ingest_runs").await, 0);
}
