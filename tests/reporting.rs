//! What a person sees: `coingecko-cdc chart` and `status` on a database filled by real
//! ingests, and the fetch's progress on a terminal.

mod common;

use std::path::{Path, PathBuf};

use common::{cli, fixture, last_stderr_line, spawn_app, TestApp};

/// Two real recorded days, three days apart.
async fn two_days() -> TestApp {
    let app = spawn_app().await;
    for day in ["markets-2024-09-05.json", "markets-2024-09-08.json"] {
        app.serve(&[fixture(day)]).await;
        app.run().await;
    }
    app
}

fn out(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("cdc-{}-{name}", uuid::Uuid::now_v7()))
}

/// Width and height from a PNG's IHDR chunk, after checking the signature.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    let be = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    (be(16), be(20))
}

#[tokio::test]
async fn a_chart_of_one_coin_is_a_png_of_the_asked_size() {
    let app = two_days().await;
    let png = out("btc.png");

    let output = cli(
        &app,
        &[
            "chart",
            "--coin",
            "bitcoin",
            "--from",
            "2024-09-04",
            "--to",
            "2024-09-09",
            "--out",
            png.to_str().unwrap(),
            "--width",
            "900",
            "--height",
            "500",
        ],
        &[],
    )
    .await;

    assert!(output.status.success(), "{}", last_stderr_line(&output));
    assert_eq!(png_size(&png), (900, 500));
    assert!(
        std::fs::metadata(&png).unwrap().len() > 10_000,
        "a drawn picture, not an empty one"
    );
}

#[tokio::test]
async fn a_normalised_chart_of_several_coins_is_an_svg_with_a_legend() {
    let app = two_days().await;
    let svg = out("majors.svg");

    let output = cli(
        &app,
        &[
            "chart",
            "--coin",
            "bitcoin,ethereum,solana",
            "--normalise",
            "--from",
            "2024-09-04",
            "--to",
            "2024-09-09",
            "--out",
            svg.to_str().unwrap(),
        ],
        &[],
    )
    .await;

    assert!(output.status.success(), "{}", last_stderr_line(&output));
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<svg")
            && text.contains(r#"width="1200""#)
            && text.contains(r#"height="600""#)
    );
    for label in [
        "bitcoin",
        "ethereum",
        "solana",
        "time (UTC)",
        "index (start of the window = 100)",
        "09-05 ",
    ] {
        assert!(text.contains(label), "{label} missing from the SVG");
    }
    assert!(text.matches("<polyline").count() >= 3, "one line per coin");
}

#[tokio::test]
async fn a_window_of_any_length_and_a_coin_asked_twice_draw_as_expected() {
    let app = two_days().await;
    let draw = |coins: &'static str, since: &'static str| {
        let app = &app;
        async move {
            let svg = out("any.svg");
            let output = cli(
                app,
                &[
                    "chart",
                    "--coin",
                    coins,
                    "--since",
                    since,
                    "--out",
                    svg.to_str().unwrap(),
                ],
                &[],
            )
            .await;
            assert!(
                output.status.success(),
                "--coin {coins} --since {since}: {}",
                last_stderr_line(&output)
            );
            let text = std::fs::read_to_string(&svg).unwrap();
            std::fs::remove_file(&svg).unwrap();
            text
        }
    };
    let lines = |svg: &str| svg.matches("<polyline").count();
    let once = draw("bitcoin", "3650d").await;
    for since in ["1000000000d", "100000years"] {
        assert_eq!(
            lines(&draw("bitcoin", since).await),
            lines(&once),
            "--since {since}"
        );
    }
    let twice = draw("bitcoin,bitcoin", "3650d").await;
    assert_eq!(lines(&twice), lines(&once));
    assert!(twice.contains("bitcoin in usd") && !twice.contains("bitcoin, bitcoin"));
    assert_eq!(
        lines(&draw("bitcoin,ethereum,bitcoin", "3650d").await),
        lines(&draw("bitcoin,ethereum", "3650d").await)
    );
}

#[tokio::test]
async fn chart_errors_name_the_problem() {
    let app = two_days().await;
    let png = out("x.png");
    let png = png.to_str().unwrap();

    let unknown = cli(
        &app,
        &["chart", "--coin", "bitcoin,notacoin", "--out", png],
        &[],
    )
    .await;
    let empty = cli(
        &app,
        &[
            "chart",
            "--coin",
            "bitcoin",
            "--from",
            "2020-01-01",
            "--to",
            "2020-02-01",
            "--out",
            png,
        ],
        &[],
    )
    .await;
    let bad_date = cli(
        &app,
        &[
            "chart",
            "--coin",
            "bitcoin",
            "--from",
            "yesterday",
            "--out",
            png,
        ],
        &[],
    )
    .await;
    let bad_format = cli(
        &app,
        &["chart", "--coin", "bitcoin", "--out", "chart.gif"],
        &[],
    )
    .await;
    let no_width = cli(
        &app,
        &["chart", "--coin", "bitcoin", "--out", png, "--width", "0"],
        &[],
    )
    .await;
    let too_tall = cli(
        &app,
        &[
            "chart", "--coin", "bitcoin", "--out", png, "--height", "20000",
        ],
        &[],
    )
    .await;

    assert!(
        last_stderr_line(&unknown).contains(r#"unknown coin "notacoin" in usd"#),
        "{}",
        last_stderr_line(&unknown)
    );
    assert!(
        last_stderr_line(&empty).contains("no price of bitcoin between 2020-01-01"),
        "{}",
        last_stderr_line(&empty)
    );
    let bad_date_text = String::from_utf8_lossy(&bad_date.stderr);
    assert!(
        bad_date_text.contains("\"yesterday\" is not a date"),
        "{bad_date_text}"
    );
    assert!(
        last_stderr_line(&bad_format).contains(".png or .svg"),
        "{}",
        last_stderr_line(&bad_format)
    );
    for (output, flag) in [(&no_width, "--width"), (&too_tall, "--height")] {
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(
            text.contains(flag) && text.contains("100..=10000"),
            "{text}"
        );
    }
    for output in [
        &unknown,
        &empty,
        &bad_date,
        &bad_format,
        &no_width,
        &too_tall,
    ] {
        assert!(!output.status.success());
    }
    assert!(!Path::new(png).exists(), "no picture on error");
}

#[tokio::test]
async fn status_exit_codes_follow_the_last_runs() {
    let mut app = two_days().await;

    let healthy = cli(&app, &["status"], &[]).await;
    assert_eq!(
        healthy.status.code(),
        Some(0),
        "{}",
        last_stderr_line(&healthy)
    );
    let table = String::from_utf8_lossy(&healthy.stdout);
    assert!(
        table.contains("succeeded") && table.contains("health: healthy"),
        "{table}"
    );

    let stale = cli(&app, &["status", "--max-age", "15m"], &[]).await;
    assert_eq!(stale.status.code(), Some(0), "the runs just finished");
    app.db
        .execute(
            "UPDATE ingest_runs SET finished_at = finished_at - interval '1 hour'",
            &[],
        )
        .await
        .unwrap();
    let stale = cli(&app, &["status", "--max-age", "15m"], &[]).await;
    assert_eq!(stale.status.code(), Some(4));
    assert!(String::from_utf8_lossy(&stale.stdout).contains("health: stale"));

    app.set("COINGECKO_MAX_ATTEMPTS", "1");
    app.serve(&["<html>Bad Gateway</html>".into()]).await;
    assert!(app.try_run(None).await.is_err());
    let failed = cli(&app, &["status", "--json", "--limit", "2"], &[]).await;
    assert_eq!(failed.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&failed.stdout).unwrap();
    assert_eq!(report["health"], "last_run_failed");
    assert_eq!(report["runs"].as_array().unwrap().len(), 2);
    assert_eq!(report["runs"][0]["status"], "failed");
    assert!(report["runs"][0]["error"]
        .as_str()
        .unwrap()
        .contains("CoinGecko page 1"));

    // Health does not depend on how many runs are shown.
    let none_shown = cli(&app, &["status", "--json", "--limit", "0"], &[]).await;
    assert_eq!(none_shown.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&none_shown.stdout).unwrap();
    assert_eq!(report["health"], "last_run_failed");
    assert_eq!(report["runs"], serde_json::json!([]));
    // A run still in progress does not hide the failure before it.
    app.db
        .execute(
            "INSERT INTO ingest_runs (run_id, status) VALUES (gen_random_uuid(), 'running')",
            &[],
        )
        .await
        .unwrap();
    let running = cli(&app, &["status", "--limit", "1"], &[]).await;
    assert_eq!(running.status.code(), Some(3));
}

#[tokio::test]
async fn a_database_without_runs_is_not_healthy() {
    let app = spawn_app().await;

    let empty = cli(&app, &["status"], &[]).await;
    let empty_with_max_age = cli(&app, &["status", "--json", "--max-age", "1d"], &[]).await;

    assert_eq!(empty.status.code(), Some(5), "{}", last_stderr_line(&empty));
    assert!(String::from_utf8_lossy(&empty.stdout).contains("health: no_runs"));
    assert_eq!(empty_with_max_age.status.code(), Some(5));
    let report: serde_json::Value = serde_json::from_slice(&empty_with_max_age.stdout).unwrap();
    assert_eq!(report["health"], "no_runs");
    assert_eq!(report["last_success_at"], serde_json::Value::Null);
}

#[tokio::test]
async fn a_run_state_this_binary_does_not_know_fails_the_status_naming_it() {
    let app = spawn_app().await;
    // As a newer schema with another state could have written.
    app.db
        .batch_execute(
            "ALTER TABLE ingest_runs DROP CONSTRAINT ingest_runs_status_check;
             INSERT INTO ingest_runs (run_id, status) VALUES (gen_random_uuid(), 'paused')",
        )
        .await
        .unwrap();

    let status = cli(&app, &["status"], &[]).await;

    let complaint = last_stderr_line(&status);
    assert_eq!(status.status.code(), Some(1), "not a panic: {complaint}");
    assert!(
        complaint.contains("ingest_runs.status holds \"paused\""),
        "{complaint}"
    );
}

#[tokio::test]
async fn a_usage_mistake_exits_2_which_no_health_shares_and_help_lists_the_codes() {
    let app = spawn_app().await;

    let mistake = cli(&app, &["status", "--max-age", "15", "minutes"], &[]).await;
    let help = cli(&app, &["status", "--help"], &[]).await;

    assert_eq!(mistake.status.code(), Some(2));
    assert!(mistake.stdout.is_empty(), "no verdict on stdout");
    let complaint = String::from_utf8_lossy(&mistake.stderr);
    assert!(
        complaint.contains("error:") && complaint.contains("Usage:"),
        "{complaint}"
    );
    assert!(help.status.success());
    let help = String::from_utf8_lossy(&help.stdout);
    for line in [
        "Exit codes:",
        "  0  healthy",
        "  1  the status could not be read",
        "  2  usage error",
        "  3  last_run_failed",
        "  4  stale",
        "  5  no_runs",
    ] {
        assert!(help.contains(line), "{line:?} missing from\n{help}");
    }
}

#[tokio::test]
async fn a_terminal_gets_a_progress_bar_and_a_pipe_gets_log_lines() {
    let mut app = spawn_app().await;
    app.set("TOP_N", "500");
    app.serve(&[
        common::page(&common::numbered_coins(0..250, "1")),
        common::page(&common::numbered_coins(250..500, "1")),
    ])
    .await;

    let piped = cli(&app, &["run"], &[]).await;
    let piped_log = String::from_utf8_lossy(&piped.stderr);
    assert!(piped.status.success(), "{piped_log}");
    assert_eq!(piped_log.matches("page fetched").count(), 2, "{piped_log}");
    assert!(!piped_log.contains("fetching CoinGecko"));

    // `script` gives the command a pseudo-terminal, as an interactive shell would.
    let command = format!("{} run", env!("CARGO_BIN_EXE_coingecko-cdc"));
    let on_terminal = tokio::process::Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_clear()
        .envs(app.env())
        .env("TERM", "xterm")
        .output()
        .await
        .expect("running script (util-linux)");
    let screen = String::from_utf8_lossy(&on_terminal.stdout);
    assert!(on_terminal.status.success(), "{screen}");
    assert!(screen.contains("fetching CoinGecko"), "{screen}");
    assert!(!screen.contains("page fetched"), "{screen}");
}
