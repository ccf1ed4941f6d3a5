//! The README's quickstart, run as written: its commands are read from the README itself, so
//! the two cannot drift apart. The first command is `.ci/run`, which is what runs this test; the
//! second runs here, and must reuse the build the tests made rather than compile again.

mod common;

use std::process::Command;

use common::{column, connect, server_url};

/// The commands of the first ```sh block under "## Quickstart", without their comments.
fn quickstart_commands() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("reading README.md");
    let section = readme
        .split("\n## Quickstart\n")
        .nth(1)
        .expect("README.md has a Quickstart section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the Quickstart has a ```sh block");
    block
        .lines()
        .map(|line| {
            line.split(" #")
                .next()
                .unwrap_or_default()
                .trim()
                .to_string()
        })
        .filter(|command| !command.is_empty())
        .collect()
}

/// Every table, view and function in the `postgres` maintenance database.
async fn maintenance_objects() -> Vec<String> {
    let mut url = url::Url::parse(&server_url()).unwrap();
    url.set_path("/postgres");
    column(
        &connect(url.as_str()).await,
        "SELECT c.relkind::text || ' ' || c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public'
         UNION ALL
         SELECT 'f ' || p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = 'public'
         ORDER BY 1",
    )
    .await
}

#[tokio::test]
async fn the_readme_quickstart_runs_as_written() {
    let commands = quickstart_commands();
    assert_eq!(
        commands,
        [".ci/run", "scripts/demo"],
        "the quickstart is two commands: the tests, then the demo"
    );
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.ci/run")).unwrap();
    assert!(ci.contains("cargo test --locked"), ".ci/run runs the tests");

    // The demo's database is its own here, and goes when the test does.
    let database = common::fresh_database().await;
    let name = database.url.rsplit('/').next().unwrap().to_string();
    let chart = tempfile::Builder::new().suffix(".png").tempfile().unwrap();
    let before = maintenance_objects().await;

    let output = Command::new("bash")
        .args(["-c", &commands[1]])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("DEMO_DATABASE", &name)
        .env("DEMO_CHART", chart.path())
        .output()
        .expect("running the demo");

    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        !stderr.contains("Compiling"),
        "the demo compiled again instead of reusing the tests' build:\n{stderr}"
    );
    let summary: serde_json::Value = stdout
        .lines()
        .find_map(|line| serde_json::from_str(line).ok())
        .unwrap_or_else(|| panic!("no replay summary in\n{stdout}"));
    assert_eq!(summary["files"], 366);
    assert_eq!(summary["succeeded"], 366);
    for coin in ["bitcoin", "ethereum", "solana", "dogecoin"] {
        assert!(stdout.contains(coin), "{coin} missing from\n{stdout}");
    }
    let png = std::fs::read(chart.path()).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 50_000);
    let runs = column::<i64>(
        &connect(&database.url).await,
        "SELECT count(*) FROM ingest_runs WHERE status = 'succeeded'",
    )
    .await;
    assert_eq!(runs, [366]);
    assert_eq!(
        maintenance_objects().await,
        before,
        "the demo wrote into the postgres maintenance database"
    );
}
