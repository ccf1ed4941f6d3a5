//! The `coingecko-cdc` binary as cron or Airflow runs it.

mod common;

use std::process::Output;

use common::{cli, cli_alone, fixture, last_stderr_line, spawn_app, stdout_json};
use serde_json::Value;

#[tokio::test]
async fn run_prints_the_summary_and_a_repeated_event_is_a_duplicate() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;

    let first = cli(
        &app,
        &["run", "--event", "events/eventbridge-rule.json"],
        &[],
    )
    .await;
    let second = cli(
        &app,
        &["run", "--event", "events/eventbridge-rule.json"],
        &[],
    )
    .await;

    assert!(first.status.success(), "{}", last_stderr_line(&first));
    let summary = stdout_json(&first);
    assert_eq!(summary["status"], "succeeded");
    assert_eq!(
        summary["trigger_id"],
        "7bf73129-1428-4cd3-a780-95db273d1602"
    );
    assert_eq!(summary["fetched"], 100);
    assert_eq!(summary["history_inserted"], 100);
    assert!(second.status.success());
    let repeated = stdout_json(&second);
    assert_eq!(repeated["status"], "duplicate");
    assert_eq!(repeated["run_id"], summary["run_id"]);
}

#[tokio::test]
async fn every_event_shape_in_events_is_accepted() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    for (file, trigger) in [
        (
            "events/scheduler-input.json",
            Value::from("2026-11-27T15:00:00Z"),
        ),
        ("events/manual.json", Value::Null),
    ] {
        let output = cli(&app, &["run", "--event", file], &[]).await;
        assert!(
            output.status.success(),
            "{file}: {}",
            last_stderr_line(&output)
        );
        assert_eq!(stdout_json(&output)["trigger_id"], trigger, "{file}");
    }
}

#[tokio::test]
async fn a_bad_setting_fails_before_any_io_and_names_the_variable() {
    let app = spawn_app().await;

    let output = cli(&app, &["run"], &[("TOP_N", "lots")]).await;

    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let error = last_stderr_line(&output);
    assert!(
        error.starts_with("error: TOP_N:") && error.contains("\"lots\""),
        "{error}"
    );
    assert!(app.coingecko.received_requests().await.unwrap().is_empty());
    assert_eq!(app.count("ingest_runs").await, 0);
}

#[tokio::test]
async fn an_unrecognised_event_says_what_was_expected() {
    let app = spawn_app().await;
    let event = std::env::temp_dir().join(format!("cdc-event-{}.json", uuid::Uuid::now_v7()));
    std::fs::write(&event, r#"{"hello": "world"}"#).unwrap();

    let output = cli(&app, &["run", "--event", event.to_str().unwrap()], &[]).await;

    assert_eq!(output.status.code(), Some(1));
    let error = last_stderr_line(&output);
    assert!(
        error.contains("expected an EventBridge scheduled event"),
        "{error}"
    );
    assert!(
        error.contains(event.to_str().unwrap()),
        "names the file: {error}"
    );
}

#[tokio::test]
async fn a_failed_run_exits_non_zero_with_a_one_line_cause() {
    let app = spawn_app().await;
    app.serve(&["<html>Bad Gateway</html>".into()]).await;

    let output = cli(&app, &["run"], &[("COINGECKO_MAX_ATTEMPTS", "1")]).await;

    assert_eq!(output.status.code(), Some(1));
    assert!(output.stdout.is_empty());
    let error = last_stderr_line(&output);
    assert!(
        error.starts_with("error: CoinGecko page 1 failed after 1 attempts"),
        "{error}"
    );
    let status: String = app
        .db
        .query_one("SELECT status FROM ingest_runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "failed");
}

#[tokio::test]
async fn without_auto_migrate_an_unmigrated_database_says_to_migrate() {
    let mut app = spawn_app().await;
    let empty = common::fresh_database().await;
    app.set("DATABASE_URL", &empty.url);
    app.serve(&[fixture("markets-2024-09-05.json")]).await;

    let refused = cli(&app, &["run"], &[("AUTO_MIGRATE", "false")]).await;
    let migrated = cli(&app, &["migrate"], &[]).await;
    let ran = cli(&app, &["run"], &[("AUTO_MIGRATE", "false")]).await;

    assert_eq!(refused.status.code(), Some(1));
    let error = last_stderr_line(&refused);
    assert!(
        error.contains("42P01") && error.contains("coingecko-cdc migrate"),
        "{error}"
    );
    assert!(migrated.status.success(), "{}", last_stderr_line(&migrated));
    assert!(ran.status.success(), "{}", last_stderr_line(&ran));
    assert_eq!(stdout_json(&ran)["history_inserted"], 100);
}

#[tokio::test]
async fn migrate_applies_the_migrations_and_a_missing_database_url_is_named() {
    let app = spawn_app().await;
    let output = cli(&app, &["migrate"], &[]).await;
    assert!(output.status.success(), "{}", last_stderr_line(&output));

    let output = cli_alone(&["migrate"], &[]).await;
    assert_eq!(output.status.code(), Some(1));
    let error = last_stderr_line(&output);
    assert!(
        error.contains("DATABASE_URL") && error.contains("DB_SECRET_ID"),
        "{error}"
    );
}

#[tokio::test]
async fn logs_captured_in_a_file_are_plain_text() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;

    let output = cli(&app, &["run"], &[]).await;

    assert!(output.status.success(), "{}", last_stderr_line(&output));
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(logs.contains(" INFO "), "the run logs: {logs}");
    assert!(!logs.contains('\x1b'), "no terminal escape codes: {logs:?}");
}

#[tokio::test]
async fn server_warnings_are_logged_and_routine_notices_are_not() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    app.db
        .batch_execute(
            "CREATE FUNCTION warn_of_run() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE WARNING 'a run is starting'; RETURN NEW; END $$;
             CREATE TRIGGER warn_of_run BEFORE INSERT ON ingest_runs
                 FOR EACH ROW EXECUTE FUNCTION warn_of_run();",
        )
        .await
        .unwrap();

    // Migrating an up-to-date database: refinery's CREATE TABLE IF NOT EXISTS draws a NOTICE.
    let output = cli(&app, &["run"], &[("AUTO_MIGRATE", "true")]).await;

    assert!(output.status.success(), "{}", last_stderr_line(&output));
    let logs = String::from_utf8_lossy(&output.stderr);
    assert!(
        logs.lines()
            .any(|line| line.contains("WARN") && line.contains("a run is starting")),
        "{logs}"
    );
    assert!(!logs.contains("already exists, skipping"), "{logs}");
}

#[tokio::test]
async fn a_refused_connection_names_the_host_port_and_database_but_not_the_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://ingest:hunter2@127.0.0.1:{port}/prices");

    let output = cli_alone(&["migrate"], &[("DATABASE_URL", &url)]).await;

    assert_eq!(output.status.code(), Some(1));
    let error = last_stderr_line(&output);
    for part in [
        format!("127.0.0.1:{port}"),
        "database prices".into(),
        "user ingest".into(),
        "is PostgreSQL running".into(),
        "DATABASE_URL".into(),
        "DB_HOST".into(),
    ] {
        assert!(error.contains(&part), "{part} missing: {error}");
    }
    assert!(!String::from_utf8_lossy(&output.stderr).contains("hunter2"));
}

/// No AWS settings but `env`: no home with profiles, no instance metadata (it would wait on the
/// network), and Secrets Manager pointed at moto, so nothing can reach AWS.
async fn cli_with_aws(env: &[(&str, &str)]) -> Output {
    let endpoint = common::moto::endpoint();
    let mut all = vec![
        ("DB_SECRET_ID", "cdc-test/database"),
        ("AWS_EC2_METADATA_DISABLED", "true"),
        ("HOME", "/nonexistent"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &endpoint),
    ];
    all.extend_from_slice(env);
    cli_alone(&["migrate"], &all).await
}

#[tokio::test]
async fn a_secret_without_an_aws_region_credentials_or_a_reachable_endpoint_says_so_in_one_line() {
    let no_region = cli_with_aws(&[]).await;
    let no_credentials = cli_with_aws(&[("AWS_REGION", "us-east-1")]).await;
    let nowhere = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    let unreachable = cli_with_aws(&[
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_ENDPOINT_URL_SECRETS_MANAGER", &nowhere),
    ])
    .await;

    for (output, names) in [
        (
            &no_region,
            ["AWS_REGION", "AWS_DEFAULT_REGION", "AWS_PROFILE"],
        ),
        (
            &no_credentials,
            ["AWS_ACCESS_KEY_ID", "AWS_PROFILE", "role"],
        ),
        (
            &unreachable,
            [
                "Connection refused",
                "network path to Secrets Manager",
                "DB_SECRET_ID",
            ],
        ),
    ] {
        assert_eq!(output.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with("error: secret cdc-test/database: "),
            "{stderr}"
        );
        for name in names {
            assert!(stderr.contains(name), "{name} missing: {stderr}");
        }
        assert!(stderr.len() < 400, "no debug dump: {stderr}");
    }
}

#[tokio::test]
async fn help_says_settings_come_from_the_environment() {
    let output = cli_alone(&["--help"], &[]).await;

    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for text in [
        "environment variables",
        "DATABASE_URL",
        "DB_SECRET_ID",
        "Settings",
    ] {
        assert!(help.contains(text), "{text} missing: {help}");
    }
}

#[tokio::test]
async fn backfill_prints_its_summary_and_a_window_the_demo_plan_refuses_is_an_error() {
    let app = spawn_app().await;
    common::market_chart::ChartBook::default()
        .serve_on(&app.coingecko)
        .await;

    let output = cli(
        &app,
        &["backfill", "--days", "30", "--coins", "bitcoin,ethereum"],
        &[("VS_CURRENCIES", "usd,eur")],
    )
    .await;

    assert!(output.status.success(), "{}", last_stderr_line(&output));
    let summary = stdout_json(&output);
    assert_eq!(summary["outcome"], "finished");
    // Daily asked, but 30 days on the Demo plan come hourly: the summary says what the rows carry.
    assert_eq!(summary["granularity"], "hourly");
    assert_eq!(
        summary["chunks_done"], 4,
        "2 coins x 2 currencies, 30 days in one call"
    );
    assert_eq!(summary["calls"], 4);

    let refused = cli(&app, &["backfill", "--days", "400"], &[]).await;
    assert_eq!(refused.status.code(), Some(1));
    let cause = last_stderr_line(&refused);
    assert!(cause.contains("365"), "{cause}");
    let usage = cli(&app, &["backfill"], &[]).await;
    assert_eq!(usage.status.code(), Some(2), "--days or --from is required");
}

#[path = "cli/settings.rs"]
mod settings;

/// The JSON lines a command printed.
fn json_lines(output: &Output) -> Vec<Value> {
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

#[tokio::test]
async fn changes_prints_the_feed_from_a_position_and_follow_prints_what_runs_commit_next() {
    let app = spawn_app().await;
    app.serve(&[common::page(&[
        common::coin(
            "bitcoin",
            "64000.123456789012345678",
            "2026-12-07T10:00:00.000Z",
        ),
        common::coin("ethereum", "3000", "2026-12-07T10:00:00.000Z"),
    ])])
    .await;
    app.run().await;

    let all = json_lines(&cli(&app, &["changes", "--since", "0"], &[]).await);
    let seqs: Vec<i64> = all.iter().map(|c| c["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [1, 2]);
    let bitcoin = all.iter().find(|c| c["coin_id"] == "bitcoin").unwrap();
    assert_eq!(bitcoin["price"], "64000.123456789012345678", "exact");
    assert_eq!(
        (
            &bitcoin["previous_price"],
            &bitcoin["pct_change"],
            &bitcoin["source"]
        ),
        (&Value::Null, &Value::Null, &Value::from("live"))
    );
    let after_one = json_lines(&cli(&app, &["changes", "--since", "1"], &[]).await);
    assert_eq!(after_one, all[1..]);
    let limited = json_lines(&cli(&app, &["changes", "--since", "0", "--limit", "1"], &[]).await);
    assert_eq!(limited, all[..1]);

    // A follower started now sees the next run's change as it commits, then stops at --limit.
    let follower = tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .args([
            "changes",
            "--since",
            "2",
            "--follow",
            "--interval",
            "100ms",
            "--limit",
            "1",
        ])
        .env_clear()
        .envs(app.env())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    app.serve(&[common::page(&[common::coin(
        "bitcoin",
        "65280.1259259259259259",
        "2026-12-07T10:05:00.000Z",
    )])])
    .await;
    app.run().await;
    let followed = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        follower.wait_with_output(),
    )
    .await
    .expect("the follower stops at --limit")
    .unwrap();
    let followed = json_lines(&followed);
    assert_eq!(followed.len(), 1);
    assert_eq!(followed[0]["seq"], 3);
    assert_eq!(followed[0]["previous_price"], "64000.123456789012345678");
    assert_eq!(followed[0]["pct_change"].as_f64(), Some(2.0));
}

#[tokio::test]
async fn changes_refuses_a_negative_position_and_names_an_unreachable_database() {
    let refused = cli_alone(&["changes", "--since", "-1"], &[]).await;
    assert_eq!(refused.status.code(), Some(2), "a usage error, as clap's");
    let unreachable = cli_alone(
        &["changes", "--since", "0"],
        &[("DATABASE_URL", "postgres://cdc@127.0.0.1:9/prices")],
    )
    .await;
    assert_eq!(unreachable.status.code(), Some(1));
    let said = last_stderr_line(&unreachable);
    assert!(said.contains("127.0.0.1") && said.contains('9'), "{said}");
}

#[tokio::test]
async fn changes_reads_the_largest_move_two_prices_can_make() {
    let app = spawn_app().await;
    for (price, at) in [
        ("0.0000000000000000000000000001", "2026-12-07T10:00:00.000Z"),
        ("79228162514264337593543950335", "2026-12-07T10:05:00.000Z"),
    ] {
        app.serve(&[common::page(&[common::coin("moon", price, at)])])
            .await;
        app.run().await;
    }

    let lines = json_lines(&cli(&app, &["changes", "--since", "1"], &[]).await);

    assert_eq!(lines[0]["price"], "79228162514264337593543950335");
    let pct = lines[0]["pct_change"].as_f64().unwrap();
    assert!((pct / 7.922_816_251_426_434e58 - 1.0).abs() < 1e-9, "{pct}");
}
