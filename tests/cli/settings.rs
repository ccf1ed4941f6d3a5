//! Every documented setting at any value: taken, or refused naming its variable; never a panic,
//! and never a password or key in what the process prints. The many random cases call the
//! configuration directly; a handful run the real binary.

use crate::common;

use std::collections::HashMap;

use crate::common::{cli, cli_alone, fixture, last_stderr_line, spawn_app, stdout_json};
use coingecko_cdc::config::Config;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// The whole-number settings and their bounds, as docs/settings.md's table documents them.
const DOCUMENTED_BOUNDS: [(&str, u64, u64); 9] = [
    ("TOP_N", 1, 100_000),
    ("COINGECKO_MAX_ATTEMPTS", 1, 100),
    ("COINGECKO_TIMEOUT_SECS", 1, 3_600),
    ("FETCH_BUDGET_SECS", 1, 604_800),
    ("COINGECKO_MAX_CALLS_PER_MIN", 1, 60_000),
    ("COINGECKO_MONTHLY_CALL_BUDGET", 1, 1_000_000_000),
    ("RAW_RETENTION_DAYS", 0, 36_500),
    ("DB_LOCK_TIMEOUT_SECS", 1, 86_400),
    ("DB_STATEMENT_TIMEOUT_SECS", 1, 86_400),
];

/// The other settings of docs/settings.md's table (`RUST_LOG` is the binary's: see below).
const OTHER_SETTINGS: [&str; 29] = [
    "DATABASE_URL",
    "DB_SECRET_ID",
    "DB_AUTH",
    "DB_HOST",
    "DB_PORT",
    "DB_NAME",
    "DB_USER",
    "DB_SSLMODE",
    "DB_SSL_ROOT_CERT",
    "PGHOST",
    "PGPORT",
    "PGUSER",
    "PGPASSWORD",
    "PGDATABASE",
    "PGAPPNAME",
    "PGSSLMODE",
    "PGSSLROOTCERT",
    "AUTO_MIGRATE",
    "COINGECKO_API_PLAN",
    "COINGECKO_API_KEY",
    "COINGECKO_API_KEY_SECRET_ID",
    "COINGECKO_BASE_URL",
    "VS_CURRENCIES",
    "VS_CURRENCY",
    "COIN_IDS",
    "CDC_THRESHOLD_PCT",
    "STORE_RAW",
    "EVENT_BUS_NAME",
    "EVENTS_INCLUDE_BACKFILL",
];

/// The variables `DB_AUTH=iam` needs, which its refusal names when one is missing.
const IAM_NEEDS: [&str; 3] = ["DB_HOST", "DB_USER", "AWS_REGION"];

fn all_settings() -> Vec<&'static str> {
    DOCUMENTED_BOUNDS
        .iter()
        .map(|(var, ..)| *var)
        .chain(OTHER_SETTINGS)
        .collect()
}

/// Values a person or a tool might put there: huge and negative numbers, fractions, exponents,
/// blanks, any text, any Unicode, and values that mean something to some setting.
fn any_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<u128>().prop_map(|n| n.to_string()),
        (0u64..200_000).prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| f.to_string()),
        (0u32..1000, 1u32..100).prop_map(|(a, b)| format!("{a}.{b}")),
        Just("1e3".to_string()),
        "[ \t]{0,3}",
        "\\PC{0,24}",
        ".{0,40}",
        prop::sample::select(vec![
            "true",
            "no",
            "YES",
            "iam",
            "secret",
            "pro",
            "demo",
            "verify-full",
            "require",
            "disable",
            "system",
            "usd,eur",
            "usd,,eur",
            "bitcoin,bitcoin",
            "http://[bad",
            "https://example.com",
            "postgres://u@h/db",
            "host=h port=x",
            "\u{0}",
            "-0",
            "+5",
            "0x10",
            " 7 ",
        ])
        .prop_map(String::from),
    ]
}

/// A value near a documented bound, where off-by-one mistakes live.
fn near_a_bound() -> impl Strategy<Value = (usize, String)> {
    (0..DOCUMENTED_BOUNDS.len(), 0u64..5, any::<bool>()).prop_map(|(i, offset, above_max)| {
        let (_, min, max) = DOCUMENTED_BOUNDS[i];
        let value = if above_max {
            (max - 2).saturating_add(offset)
        } else {
            (min + 2).saturating_sub(offset)
        };
        (i, value.to_string())
    })
}

/// The configuration from `vars` alone, with a login name as a shell has (libpq's default user).
fn config(vars: &[(&str, &str)]) -> Result<Config, coingecko_cdc::config::ConfigError> {
    let mut env: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.entry("USER".into()).or_insert_with(|| "tester".into());
    Config::from_lookup(move |name| env.get(name).cloned())
}

/// What a person expects of a whole-number setting: empty is unset, else a whole number within
/// the documented bounds (spaces around it allowed); nothing else.
fn whole_number_is_accepted(value: &str, min: u64, max: u64) -> bool {
    let value = value.trim();
    value.is_empty()
        || (value.bytes().all(|b| b.is_ascii_digit())
            && value.parse::<u64>().is_ok_and(|n| (min..=max).contains(&n)))
}

/// Either taken, or refused naming one of the variables given (or, for `DB_AUTH=iam`, what it
/// needs); the process's texts stay short whatever was given.
fn taken_or_refused_by_name(vars: &[(&str, &str)]) -> Result<bool, TestCaseError> {
    match config(vars) {
        Ok(_) => Ok(true),
        Err(error) => {
            let named: Vec<&str> = vars.iter().map(|(var, _)| *var).collect();
            let iam = vars
                .iter()
                .any(|(var, value)| *var == "DB_AUTH" && value.trim() == "iam");
            prop_assert!(
                named.contains(&error.var) || (iam && IAM_NEEDS.contains(&error.var)),
                "{vars:?}: refused naming {}: {error}",
                error.var
            );
            let text = error.to_string();
            prop_assert!(text.starts_with(&format!("{}: ", error.var)), "{}", text);
            Ok(false)
        }
    }
}

/// A password as a person may write one, by hand or generated: two distinct halves around a
/// character that a URL must encode (or none), so that either half showing is seen.
fn secret() -> impl Strategy<Value = (String, String, String)> {
    (
        "[a-z0-9]{6}",
        prop::sample::select(vec![
            "", "@", ":", "/", "?", "#", "%", " ", "&", "=", "'", "\\",
        ]),
        "[a-z0-9]{6}",
    )
        .prop_map(|(a, sep, b)| {
            let (first, second) = (format!("Zq{a}"), format!("Wv{b}"));
            (format!("{first}{sep}{second}"), first, second)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn a_whole_number_setting_is_taken_exactly_within_its_documented_bounds(
        i in 0..DOCUMENTED_BOUNDS.len(),
        value in any_value(),
        (j, near) in near_a_bound(),
    ) {
        for (index, value) in [(i, value), (j, near)] {
            let (var, min, max) = DOCUMENTED_BOUNDS[index];
            let taken = taken_or_refused_by_name(&[(var, &value)])?;
            prop_assert_eq!(
                taken,
                whole_number_is_accepted(&value, min, max),
                "{}={:?}", var, value
            );
        }
    }

    #[test]
    fn any_setting_at_any_value_is_taken_or_refused_by_name(
        vars in prop::collection::vec((prop::sample::select(all_settings()), any_value()), 1..5),
    ) {
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (*k, v.as_str())).collect();
        taken_or_refused_by_name(&vars)?;
    }

    #[test]
    fn a_refused_setting_never_shows_a_password_or_key(
        (password, first, second) in secret(),
        host in prop::sample::select(vec!["db.example", "[bad", "", "h:notaport", "h:99999", "db.example:5432/prices?sslmode=verify"]),
        other in (prop::sample::select(all_settings()), any_value()),
    ) {
        let url = format!("postgres://ingest:{password}@{host}");
        let base = format!("http://user:{password}@{host}");
        for vars in [
            vec![("DATABASE_URL", url.as_str())],
            vec![("COINGECKO_BASE_URL", base.as_str())],
            vec![("PGPASSWORD", password.as_str()), ("PGHOST", host)],
            vec![("COINGECKO_API_KEY", password.as_str())],
        ] {
            let mut vars = vars;
            vars.push((other.0, other.1.as_str()));
            if let Err(error) = config(&vars) {
                let text = error.to_string();
                prop_assert!(
                    !text.contains(&first) && !text.contains(&second),
                    "{vars:?}: {text}"
                );
            }
        }
    }
}

/// Each whole-number setting at its bound, past it, at the largest number there is and at two
/// random values, through the binary: refused by name, or taken (and then it stops at "no database").
#[tokio::test]
async fn the_binary_refuses_or_takes_any_whole_number_without_a_panic() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    for (var, _, max) in DOCUMENTED_BOUNDS {
        let mut values = vec![(max, true), (max + 1, false), (u64::MAX, false)]
            .into_iter()
            .map(|(n, taken)| (n.to_string(), Some(taken)))
            .collect::<Vec<_>>();
        for _ in 0..2 {
            let value = any_value().new_tree(&mut runner).unwrap().current();
            // An environment variable cannot hold a NUL.
            if !value.contains('\u{0}') {
                values.push((value, None));
            }
        }
        for (value, taken) in values {
            let output = cli_alone(&["run"], &[(var, &value)]).await;
            let last = last_stderr_line(&output);
            assert_eq!(output.status.code(), Some(1), "{var}={value:?}: {last}");
            let refused = last.starts_with(&format!("error: {var}: "));
            assert!(
                refused || last.starts_with("error: no database given"),
                "{var}={value:?}: {last}"
            );
            if let Some(taken) = taken {
                assert_eq!(!refused, taken, "{var}={value:?}: {last}");
            }
        }
    }
}

#[tokio::test]
async fn huge_timeouts_are_refused_naming_them_before_any_io() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    for var in [
        "FETCH_BUDGET_SECS",
        "DB_LOCK_TIMEOUT_SECS",
        "DB_STATEMENT_TIMEOUT_SECS",
    ] {
        for value in ["18446744073709551615", "9223372036854775807"] {
            for args in [&["run"][..], &["backfill", "--days", "3"][..]] {
                let output = cli(&app, args, &[(var, value)]).await;
                let last = last_stderr_line(&output);
                assert_eq!(
                    output.status.code(),
                    Some(1),
                    "{args:?} {var}={value}: {last}"
                );
                assert!(
                    last.starts_with(&format!("error: {var}: expected a whole number from 1 to ")),
                    "{args:?} {var}={value}: {last}"
                );
                assert!(!last.contains("SQLSTATE"), "{last}");
            }
        }
    }
    assert!(app.coingecko.received_requests().await.unwrap().is_empty());
    assert_eq!(app.count("ingest_runs").await, 0, "nothing started");
    assert_eq!(app.count("backfill_jobs").await, 0, "no job leased");
}

#[tokio::test]
async fn every_timeout_at_its_maximum_runs_and_backfills() {
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    common::market_chart::ChartBook::default()
        .serve_on(&app.coingecko)
        .await;
    let longest: Vec<(&str, String)> = DOCUMENTED_BOUNDS
        .iter()
        .filter(|(var, ..)| var.ends_with("_SECS"))
        .map(|(var, _, max)| (*var, max.to_string()))
        .collect();
    let mut env: Vec<(&str, &str)> = longest.iter().map(|(k, v)| (*k, v.as_str())).collect();
    env.push(("COINGECKO_API_PLAN", "pro"));

    let run = cli(&app, &["run"], &env).await;
    assert!(run.status.success(), "{}", last_stderr_line(&run));
    assert_eq!(stdout_json(&run)["status"], "succeeded");

    let backfill = cli(
        &app,
        &[
            "backfill",
            "--from",
            "2024-03-01",
            "--to",
            "2024-03-04",
            "--coins",
            "bitcoin",
        ],
        &env,
    )
    .await;
    assert!(backfill.status.success(), "{}", last_stderr_line(&backfill));
    assert_eq!(stdout_json(&backfill)["outcome"], "finished");
}

/// A password in the database URL and in `PGPASSWORD`, a CoinGecko key, and a user name and
/// password in the CoinGecko URL: none is printed by a run, at any log level, whether it
/// succeeds or fails.
#[tokio::test]
async fn no_password_or_key_is_printed_at_any_log_level() {
    const PASSWORD: &str = "Zq7xPassw0rd";
    const KEY: &str = "CG-Wv9mKeyK3y";
    const PROXY_PASSWORD: &str = "Px4kProxyPw";
    let app = spawn_app().await;
    app.serve(&[fixture("markets-2024-09-05.json")]).await;
    // The test server trusts every login: any password is taken, and never needed.
    let with_password =
        app.database_url
            .replacen("://postgres@", &format!("://postgres:{PASSWORD}@"), 1);
    assert_ne!(with_password, app.database_url, "{}", app.database_url);
    let base = app
        .coingecko
        .uri()
        .replacen("://", &format!("://user:{PROXY_PASSWORD}@"), 1);
    let refused_port = format!("http://user:{PROXY_PASSWORD}@127.0.0.1:9");
    for level in ["error", "warn", "info", "debug", "trace"] {
        for (coingecko, succeeds) in [(base.as_str(), true), (refused_port.as_str(), false)] {
            let output = cli(
                &app,
                &["run"],
                &[
                    ("RUST_LOG", level),
                    ("DATABASE_URL", &with_password),
                    ("PGPASSWORD", PASSWORD),
                    ("COINGECKO_API_KEY", KEY),
                    ("COINGECKO_BASE_URL", coingecko),
                    ("COINGECKO_MAX_ATTEMPTS", "1"),
                ],
            )
            .await;
            assert_eq!(
                output.status.success(),
                succeeds,
                "{level}: {}",
                last_stderr_line(&output)
            );
            for stream in [&output.stdout, &output.stderr] {
                let text = String::from_utf8_lossy(stream);
                for secret in [PASSWORD, KEY, PROXY_PASSWORD] {
                    assert!(
                        !text.contains(secret),
                        "{secret} printed at {level}:\n{text}"
                    );
                }
            }
        }
    }
}

/// A password with an `@` written as it is: the URL is cut at that `@`, and the rest would have
/// been shown as the host. It is refused before any connection, saying how to encode it.
#[tokio::test]
async fn a_mis_encoded_database_url_shows_no_part_of_the_password() {
    let output = cli_alone(
        &["status"],
        &[(
            "DATABASE_URL",
            "postgres://ingest:Zq7x@Wv9m@127.0.0.1:5432/postgres",
        )],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = last_stderr_line(&output);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        last.starts_with("error: DATABASE_URL: ")
            && last.contains("mis-encoded")
            && last.contains("%40"),
        "{last}"
    );
    assert!(
        !stderr.contains("Zq7x") && !stderr.contains("Wv9m"),
        "{stderr}"
    );
}

#[tokio::test]
async fn a_base_url_that_is_not_one_is_shown_without_its_password() {
    let output = cli_alone(
        &["run"],
        &[("COINGECKO_BASE_URL", "http://user:secretpw@[bad")],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        last_stderr_line(&output)
            .starts_with("error: COINGECKO_BASE_URL: \"http://***@[bad\" is not a URL"),
        "{stderr}"
    );
    assert!(!stderr.contains("secretpw"), "{stderr}");
}
