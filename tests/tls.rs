//! TLS and libpq's connection settings against real PostgreSQL servers of the test's own: every
//! sslmode accepts and refuses what libpq does, checked against psql itself with the same URL and
//! the same variables.

mod common;

use std::process::Output;
use std::time::Duration;

use coingecko_cdc::config::Config;
use coingecko_cdc::database::Database;
use coingecko_cdc::secrets::SecretsManager;
use common::secure_postgres::{SecurePostgres, ServerTls, SUPERUSER_PASSWORD};

/// Environment variables, as name and value.
type Vars<'a> = Vec<(&'a str, &'a str)>;

/// Who connected, to what, under which name, and whether with TLS: `user|database|application|true`.
type Session = Result<String, String>;

/// What we make of `env` (`DATABASE_URL` and the rest), as the command line and the Lambda do.
async fn our_session(server: &SecurePostgres, env: &[(&str, &str)]) -> Session {
    let admin = server.admin().await;
    let others = "SELECT a.usename || '|' || a.datname || '|' || a.application_name || '|' || s.ssl
                  FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid)
                  WHERE a.backend_type = 'client backend' AND a.pid <> pg_backend_pid()";
    // The sessions of earlier cases may take a moment to end.
    for _ in 0..50 {
        if admin.query(others, &[]).await.unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let vars: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config =
        Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
            .map_err(|e| e.to_string())?;
    let database =
        Database::new(&config.database, SecretsManager::default()).map_err(|e| e.to_string())?;
    let store = database.connect().await.map_err(|e| e.to_string())?;
    let rows = admin.query(others, &[]).await.unwrap();
    drop(store);
    assert_eq!(rows.len(), 1, "only our session");
    Ok(rows[0].get(0))
}

/// What psql makes of the same `env`.
fn psql_session(server: &SecurePostgres, env: &[(&str, &str)]) -> Session {
    let mut psql = server.psql();
    for (var, value) in env {
        match *var {
            "DATABASE_URL" => psql.args(["--dbname", value]),
            _ => psql.env(var, value),
        };
    }
    let output = psql
        .args(["--command", "SELECT current_user || '|' || current_database() || '|' || current_setting('application_name') || '|' || ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"])
        .output()
        .expect("running psql");
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).trim().to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Connected without TLS.
    Plain,
    /// Connected with TLS.
    Tls,
    /// Not connected.
    Refused,
}

use Outcome::{Plain as P, Refused as R, Tls as T};

fn outcome(session: &Session) -> Outcome {
    match session {
        Ok(s) if s.ends_with("|true") => T,
        Ok(_) => P,
        Err(_) => R,
    }
}

const MODES: [&str; 6] = [
    "disable",
    "allow",
    "prefer",
    "require",
    "verify-ca",
    "verify-full",
];

/// Each sslmode, against `tls` reached as `host`, without and then with the test's CA as
/// `sslrootcert`: libpq's documented outcome, psql's and ours must be the same. Prints the rows
/// of the table in the documentation.
async fn same_as_libpq(tls: ServerTls, host: &str, libpq: [[Outcome; 6]; 2]) {
    let server = SecurePostgres::start_with(tls);
    let base = server
        .url("postgres", SUPERUSER_PASSWORD, "postgres")
        .replace("localhost", host);
    let ca = server.ca_file.display().to_string();
    let mut differences = Vec::new();
    for (expected, root) in libpq.iter().zip([None, Some(ca.as_str())]) {
        for (mode, expected) in MODES.iter().zip(expected) {
            let url = match root {
                None => format!("{base}?sslmode={mode}"),
                Some(ca) => format!("{base}?sslmode={mode}&sslrootcert={ca}"),
            };
            let env = [("DATABASE_URL", url.as_str()), ("PGAPPNAME", "tls-test")];
            let psql = psql_session(&server, &env);
            let ours = our_session(&server, &env).await;
            let row = format!(
                "| {tls:?} | {host} | {mode} | {} | {:?} | {:?} |",
                root.map_or("—", |_| "test CA"),
                outcome(&psql),
                outcome(&ours)
            );
            println!("{row}");
            if (outcome(&psql), outcome(&ours)) != (*expected, *expected) {
                differences.push(format!(
                    "{row} libpq: {expected:?}\n  psql: {psql:?}\n  ours: {ours:?}"
                ));
            }
        }
    }
    assert!(differences.is_empty(), "{}", differences.join("\n"));
}

#[tokio::test]
async fn a_certificate_from_the_test_ca_for_the_right_host() {
    same_as_libpq(
        ServerTls::TestCa,
        "localhost",
        [[P, P, T, T, R, R], [P, P, T, T, T, T]],
    )
    .await;
}

#[tokio::test]
async fn a_certificate_from_the_test_ca_for_another_host() {
    same_as_libpq(
        ServerTls::TestCa,
        "127.0.0.1",
        [[P, P, T, T, R, R], [P, P, T, T, T, R]],
    )
    .await;
}

/// With a root certificate given, libpq verifies the chain in every mode, and `prefer` then
/// falls back to a connection without TLS.
#[tokio::test]
async fn a_self_signed_certificate() {
    same_as_libpq(
        ServerTls::SelfSigned,
        "localhost",
        [[P, P, T, T, R, R], [P, P, P, R, R, R]],
    )
    .await;
}

#[tokio::test]
async fn a_server_that_admits_only_tls() {
    same_as_libpq(
        ServerTls::Required,
        "localhost",
        [[R, T, T, T, R, R], [R, T, T, T, T, T]],
    )
    .await;
}

#[tokio::test]
async fn a_server_that_admits_only_connections_without_tls() {
    same_as_libpq(
        ServerTls::Refused,
        "localhost",
        [[P, P, P, R, R, R], [P, P, P, R, R, R]],
    )
    .await;
}

#[tokio::test]
async fn a_server_without_tls() {
    same_as_libpq(
        ServerTls::Off,
        "localhost",
        [[P, P, P, R, R, R], [P, P, P, R, R, R]],
    )
    .await;
}

/// The RDS bundle with the test CA appended last: every certificate of a bundle must count.
fn bundle_with(server: &SecurePostgres) -> String {
    let rds = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/src/store/rds-global-bundle.pem"
    ))
    .unwrap();
    let ca = std::fs::read_to_string(&server.ca_file).unwrap();
    let path = server.ca_file.with_file_name("bundle.pem");
    std::fs::write(&path, format!("{rds}\n{ca}")).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn a_certificate_from_a_trusted_root_in_the_bundle_connects_with_verify_full() {
    let server = SecurePostgres::start();
    let bundle = bundle_with(&server);
    let url = server.url("postgres", SUPERUSER_PASSWORD, "postgres");

    let session = our_session(
        &server,
        &[
            ("DATABASE_URL", &url),
            ("DB_SSLMODE", "verify-full"),
            ("DB_SSL_ROOT_CERT", &bundle),
        ],
    )
    .await;

    assert_eq!(session.unwrap(), "postgres|postgres|coingecko-cdc|true");
}

#[tokio::test]
async fn a_wrong_host_name_or_an_unknown_ca_is_refused_with_a_clear_error() {
    let server = SecurePostgres::start();
    let url = server.url("postgres", SUPERUSER_PASSWORD, "postgres");
    let wrong_host = url.replace("localhost", "127.0.0.1");
    let ca = server.ca_file.display().to_string();

    for env in [
        vec![
            ("DATABASE_URL", wrong_host.as_str()),
            ("DB_SSLMODE", "verify-full"),
            ("DB_SSL_ROOT_CERT", &ca),
        ],
        vec![("DATABASE_URL", &url), ("PGSSLMODE", "verify-ca")],
    ] {
        let error = our_session(&server, &env).await.unwrap_err();
        assert!(
            error.contains("connecting") && error.contains("certificate"),
            "{error}"
        );
        assert!(
            error.contains("DB_SSL_ROOT_CERT") && error.contains("verify-full"),
            "says what to check: {error}"
        );
    }
}

/// Until a release note says otherwise, an existing `DB_SSLMODE=require` keeps verifying the
/// chain and the host name as it always did here; libpq's `require` is there through the URL or
/// `PGSSLMODE`.
#[tokio::test]
async fn db_sslmode_require_keeps_verifying_where_libpqs_require_does_not() {
    let server = SecurePostgres::start_with(ServerTls::SelfSigned);
    let url = server.url("postgres", SUPERUSER_PASSWORD, "postgres");

    let ours = our_session(
        &server,
        &[("DATABASE_URL", &url), ("DB_SSLMODE", "require")],
    )
    .await;
    let libpq_env = [("DATABASE_URL", url.as_str()), ("PGSSLMODE", "require")];
    let libpq = our_session(&server, &libpq_env).await;

    assert!(ours.unwrap_err().contains("certificate"));
    assert_eq!(outcome(&libpq), T);
    assert_eq!(outcome(&psql_session(&server, &libpq_env)), T);
}

#[tokio::test]
async fn pg_variables_fill_what_the_url_leaves_unset_as_in_psql() {
    let server = SecurePostgres::start();
    server.create_owner("ingest", "ingest-Pa55word").await;
    let port = server.port.to_string();
    let ca = server.ca_file.display().to_string();
    let pg = [
        ("PGHOST", "localhost"),
        ("PGPORT", port.as_str()),
        ("PGUSER", "ingest"),
        ("PGPASSWORD", "ingest-Pa55word"),
        ("PGDATABASE", "ingest"),
        ("PGAPPNAME", "from-pgappname"),
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca.as_str()),
    ];
    let superuser = server.url("postgres", SUPERUSER_PASSWORD, "postgres");
    let bare_url = format!("postgres://localhost:{port}");
    let wrong_host = format!("postgres://127.0.0.1:{port}");
    let plain = format!("{superuser}?sslmode=disable&application_name=from-url");
    let own_root = format!("{superuser}?sslrootcert={ca}");
    let key_values = format!(
        "host=localhost port={port} user=ingest password='ingest-Pa55word' dbname=ingest sslmode=verify-full sslrootcert='{ca}' application_name=from-key-values"
    );
    let cases: Vec<(Vars, Option<&str>)> = vec![
        // The variables alone.
        (pg.to_vec(), Some("ingest|ingest|from-pgappname|true")),
        // A URL with only the endpoint: the rest from the variables.
        (
            [&pg[2..], &[("DATABASE_URL", bare_url.as_str())]].concat(),
            Some("ingest|ingest|from-pgappname|true"),
        ),
        // The URL's host wins over PGHOST: 127.0.0.1 is not the certificate's name.
        (
            [&pg[..], &[("DATABASE_URL", wrong_host.as_str())]].concat(),
            None,
        ),
        // The URL's user, password, database, sslmode and application_name win.
        (
            [&pg[..], &[("DATABASE_URL", plain.as_str())]].concat(),
            Some("postgres|postgres|from-url|false"),
        ),
        // The URL's sslrootcert wins over a PGSSLROOTCERT that does not exist.
        (
            [
                &pg[..6],
                &[
                    ("PGSSLMODE", "verify-full"),
                    ("PGSSLROOTCERT", "/nonexistent/root.crt"),
                    ("DATABASE_URL", own_root.as_str()),
                ],
            ]
            .concat(),
            Some("postgres|postgres|from-pgappname|true"),
        ),
        // A key=value list, with every parameter.
        (
            vec![("DATABASE_URL", key_values.as_str())],
            Some("ingest|ingest|from-key-values|true"),
        ),
    ];
    for (env, expected) in cases {
        let psql = psql_session(&server, &env);
        let ours = our_session(&server, &env).await;
        match expected {
            Some(session) => {
                assert_eq!(psql.as_deref(), Ok(session), "psql, {env:?}");
                assert_eq!(ours.as_deref(), Ok(session), "ours, {env:?}");
            }
            None => {
                assert!(psql.is_err(), "psql, {env:?}: {psql:?}");
                assert!(ours.is_err(), "ours, {env:?}: {ours:?}");
            }
        }
    }
}

#[tokio::test]
async fn the_application_is_named_coingecko_cdc_unless_told_otherwise() {
    let server = SecurePostgres::start();
    let url = server.url("postgres", SUPERUSER_PASSWORD, "postgres");
    let session = our_session(&server, &[("DATABASE_URL", &url)]).await;
    assert_eq!(session.unwrap(), "postgres|postgres|coingecko-cdc|true");
}

/// The command line, with only `env` and everything logged.
async fn coingecko_cdc(args: &[&str], env: &[(&str, &str)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .args(args)
        .env_clear()
        .env("RUST_LOG", "trace")
        .envs(env.iter().copied())
        .output()
        .await
        .expect("starting coingecko-cdc")
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// libpq 16's `sslrootcert=system` (psql 15 here cannot check it): the system's roots, which
/// OpenSSL takes from `SSL_CERT_FILE` when it is set, and `verify-full`.
#[tokio::test]
async fn sslrootcert_system_trusts_the_systems_roots_and_verifies_the_host_name() {
    let server = SecurePostgres::start();
    let url = format!(
        "{}?sslrootcert=system",
        server.url("postgres", SUPERUSER_PASSWORD, "postgres")
    );
    let ca = server.ca_file.display().to_string();

    let trusted = coingecko_cdc(
        &["migrate"],
        &[("DATABASE_URL", &url), ("SSL_CERT_FILE", &ca)],
    )
    .await;
    let untrusted = coingecko_cdc(&["migrate"], &[("DATABASE_URL", &url)]).await;
    let wrong_host = coingecko_cdc(
        &["migrate"],
        &[
            ("DATABASE_URL", &url.replace("localhost", "127.0.0.1")),
            ("SSL_CERT_FILE", &ca),
        ],
    )
    .await;

    assert!(trusted.status.success(), "{}", printed(&trusted));
    assert!(!untrusted.status.success());
    assert!(printed(&untrusted).contains("certificate"));
    assert!(!wrong_host.status.success(), "verify-full checks the name");
}

#[tokio::test]
async fn no_password_is_ever_printed_in_errors_or_logs() {
    let server = SecurePostgres::start();
    let secret = "Very-Secret-Pa55word";
    let ca = server.ca_file.display().to_string();
    let url = |password: &str, rest: &str| {
        format!(
            "{}{rest}",
            server
                .url("postgres", password, "postgres")
                .replace("localhost", "127.0.0.1")
        )
    };
    let encoded_secret = "Very%2DSecret%2DPa55word";
    let wrong_password = url(secret, "?sslmode=verify-ca");
    let bare = url("", "").replace(":@", "@");
    let wrong_host = format!("{bare}?sslmode=verify-full");
    let encoded = url(encoded_secret, "?sslmode=verify_ca");
    let unknown_option = url(secret, "?sslcert=/client.pem");
    let bad_port = url(secret, "").replace(&server.port.to_string(), "port");
    let cases: Vec<Vars> = vec![
        vec![("DATABASE_URL", &wrong_password), ("DB_SSL_ROOT_CERT", &ca)],
        vec![
            ("DATABASE_URL", &wrong_host),
            ("PGPASSWORD", secret),
            ("DB_SSL_ROOT_CERT", &ca),
        ],
        vec![("DATABASE_URL", &encoded)],
        vec![("DATABASE_URL", &unknown_option)],
        vec![("DATABASE_URL", &bad_port)],
        vec![("DATABASE_URL", &bare), ("PGPASSWORD", secret)],
        vec![
            ("DATABASE_URL", &bare),
            ("PGPASSWORD", secret),
            ("DB_SSLMODE", "require"),
        ],
    ];
    for env in cases {
        let output = coingecko_cdc(&["migrate"], &env).await;
        let text = printed(&output);
        assert!(!output.status.success(), "{env:?} must fail: {text}");
        assert!(
            !text.contains(secret) && !text.contains(encoded_secret),
            "{env:?} printed the password: {text}"
        );
        assert!(
            text.lines()
                .last()
                .unwrap_or_default()
                .starts_with("error: "),
            "{text}"
        );
    }
}

#[tokio::test]
async fn db_sslmode_require_warns_once_that_it_still_verifies() {
    let server = SecurePostgres::start();
    let url = server.url("postgres", SUPERUSER_PASSWORD, "postgres");
    let ca = server.ca_file.display().to_string();

    let output = coingecko_cdc(
        &["status"],
        &[
            ("DATABASE_URL", &url),
            ("DB_SSLMODE", "require"),
            ("DB_SSL_ROOT_CERT", &ca),
            ("RUST_LOG", "warn"),
        ],
    )
    .await;

    let text = printed(&output);
    assert_eq!(
        text.matches("DB_SSLMODE=require verifies").count(),
        1,
        "{text}"
    );
}
