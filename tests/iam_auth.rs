//! `DB_AUTH=iam`: the token is botocore's to the byte, and it is the password of a real login over
//! verified TLS, signed again before it expires and when it is refused.

mod common;

use std::process::{Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::Credentials;
use coingecko_cdc::config::Config;
use coingecko_cdc::database::{ConnectError, Database};
use coingecko_cdc::rds_token::{auth_token, TokenFor};
use coingecko_cdc::secrets::{SecretsManager, SigningContext};
use common::secure_postgres::{SecurePostgres, ServerTls};
use secrecy::ExposeSecret;
use serde_json::{json, Value};

const ACCESS_KEY: &str = "AKIAIOSFODNN7EXAMPLE";
const SECRET_KEY: &str = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY";
const SESSION_TOKEN: &str = "IQoJb3JpZ2luX2VjEXAMPLE/session+token==";
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600;

fn at(seconds: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds)
}

fn credentials(session_token: Option<&str>) -> Credentials {
    Credentials::new(
        ACCESS_KEY,
        SECRET_KEY,
        session_token.map(str::to_string),
        None,
        "test",
    )
}

/// botocore's `generate_db_auth_token` for each case, its clock frozen at the case's time; its
/// pure-Python signer (the CRT one, when awscrt is installed, orders the parameters differently).
const BOTOCORE: &str = r#"
import os, sys, json, datetime
os.environ["BOTO_DISABLE_CRT"] = "true"
from unittest import mock
import botocore.auth, botocore.session
tokens = []
for case in json.load(sys.stdin):
    client = botocore.session.Session().create_client(
        "rds", region_name=case["region"], aws_access_key_id=case["access_key"],
        aws_secret_access_key=case["secret_key"], aws_session_token=case["session_token"])
    now = datetime.datetime.fromtimestamp(case["at"], datetime.timezone.utc).replace(tzinfo=None)
    with mock.patch("botocore.auth.get_current_datetime", return_value=now):
        tokens.append(client.generate_db_auth_token(
            case["host"], case["port"], case["user"], Region=case["region"]))
print(json.dumps({"botocore": botocore.__version__, "tokens": tokens}))
"#;

fn botocore_tokens(cases: &[Value]) -> (String, Vec<String>) {
    use std::io::Write;
    let mut python = std::process::Command::new("python3")
        .args(["-c", BOTOCORE])
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is not on PATH: the reference is botocore's; `. .venv/bin/activate` (.ci/run installs it) or install python3 with botocore");
    python
        .stdin
        .take()
        .unwrap()
        .write_all(Value::from(cases.to_vec()).to_string().as_bytes())
        .unwrap();
    let output = python.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "botocore could not sign (is it installed? `. .venv/bin/activate`, or pip install botocore): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Value = serde_json::from_slice(&output.stdout).unwrap();
    let tokens = answer["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    (answer["botocore"].as_str().unwrap().to_string(), tokens)
}

#[test]
fn the_token_is_botocores_byte_for_byte() {
    let cases = [
        (
            "db.abc123.eu-west-1.rds.amazonaws.com",
            5432,
            "ingest",
            "eu-west-1",
            None,
            T0,
        ),
        (
            "db.abc123.eu-west-1.rds.amazonaws.com",
            5432,
            "ingest",
            "eu-west-1",
            Some(SESSION_TOKEN),
            T0,
        ),
        (
            "proxy.proxy-abc123.us-east-1.rds.amazonaws.com",
            6432,
            "lambda_ingest",
            "us-east-1",
            Some(SESSION_TOKEN),
            T0 + 86_399,
        ),
        (
            "cluster.cluster-abc.ap-southeast-2.rds.amazonaws.com",
            15432,
            "Data.Team-1~x",
            "ap-southeast-2",
            None,
            1_700_000_000,
        ),
        (
            "localhost",
            5432,
            "odd user+/=@é",
            "us-gov-west-1",
            Some("a/b+c=d"),
            T0 + 59,
        ),
        ("db.example", 443, "ingest", "eu-west-1", None, T0),
    ];
    let requests: Vec<Value> = cases
        .iter()
        .map(|(host, port, user, region, session_token, at)| {
            json!({"host": host, "port": port, "user": user, "region": region, "at": at,
                   "access_key": ACCESS_KEY, "secret_key": SECRET_KEY, "session_token": session_token})
        })
        .collect();
    let ours: Vec<String> = cases
        .iter()
        .map(|(host, port, user, region, session_token, seconds)| {
            let to = TokenFor {
                host,
                port: *port,
                user,
                region,
            };
            auth_token(to, &credentials(*session_token), at(*seconds))
                .unwrap()
                .expose_secret()
                .to_string()
        })
        .collect();

    let (version, reference) = botocore_tokens(&requests);

    println!("botocore {version}");
    assert_eq!(reference.len(), cases.len());
    for (ours, reference) in ours.iter().zip(&reference) {
        assert_eq!(ours, reference);
    }
    assert!(reference[1].contains("&X-Amz-Security-Token="));
    assert!(reference[0].contains("&X-Amz-Expires=900&"));
}

/// Static credentials and a clock the test turns; counts the tokens signed.
struct TestSigning {
    credentials: Credentials,
    now: Mutex<SystemTime>,
    signed: AtomicUsize,
}

impl TestSigning {
    fn new() -> Self {
        Self {
            credentials: credentials(Some(SESSION_TOKEN)),
            now: Mutex::new(at(T0)),
            signed: AtomicUsize::new(0),
        }
    }

    fn set_clock(&self, seconds_after_t0: u64) {
        *self.now.lock().unwrap() = at(T0 + seconds_after_t0);
    }

    fn signed(&self) -> usize {
        self.signed.load(Ordering::SeqCst)
    }

    /// The token the function should sign now for `user` on `server`.
    fn token_for(&self, server: &SecurePostgres, user: &str) -> String {
        let to = TokenFor {
            host: "localhost",
            port: server.port,
            user,
            region: "eu-west-1",
        };
        auth_token(to, &self.credentials, *self.now.lock().unwrap())
            .unwrap()
            .expose_secret()
            .to_string()
    }
}

impl SigningContext for &TestSigning {
    async fn credentials(&self) -> Result<Credentials, CredentialsError> {
        self.signed.fetch_add(1, Ordering::SeqCst);
        Ok(self.credentials.clone())
    }

    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap()
    }
}

const USER: &str = "iam_ingest";

fn iam_env(server: &SecurePostgres) -> Vec<(String, String)> {
    [
        ("DB_AUTH", "iam"),
        ("DB_HOST", "localhost"),
        ("DB_PORT", &server.port.to_string()),
        ("DB_USER", USER),
        ("DB_NAME", USER),
        ("AWS_REGION", "eu-west-1"),
        ("DB_SSL_ROOT_CERT", &server.ca_file.display().to_string()),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn config(vars: &[(String, String)]) -> Result<Config, String> {
    Config::from_lookup(|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        .map_err(|e| e.to_string())
}

/// Whether `USER` has a session, and whether it is encrypted.
async fn session_tls(server: &SecurePostgres) -> Vec<bool> {
    server
        .admin()
        .await
        .query(
            "SELECT s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.usename = $1",
            &[&USER],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// `USER`, whose password is the token `signing` gives now, and the connection path with
/// `DB_AUTH=iam` to `server`.
async fn iam_database<'a>(
    server: &SecurePostgres,
    signing: &'a TestSigning,
) -> Database<SecretsManager, &'a TestSigning> {
    server
        .create_owner(USER, &signing.token_for(server, USER))
        .await;
    let config = config(&iam_env(server)).unwrap();
    Database::with_signing(&config.database, SecretsManager::default(), signing).unwrap()
}

#[tokio::test]
async fn the_token_is_the_password_over_verified_tls_and_is_signed_again_after_ten_minutes() {
    let server = SecurePostgres::start_with(ServerTls::Required);
    let signing = TestSigning::new();
    let database = iam_database(&server, &signing).await;

    let mut first = database.connect().await.unwrap();
    assert_eq!(
        session_tls(&server).await,
        [true],
        "TLS, verify-full by default"
    );
    first.migrate().await.expect("a working session");
    drop(first);

    signing.set_clock(9 * 60 + 59);
    database
        .connect()
        .await
        .expect("the same token, still young");
    assert_eq!(signing.signed(), 1);

    signing.set_clock(10 * 60);
    server
        .set_password(USER, &signing.token_for(&server, USER))
        .await;
    database.connect().await.expect("a new token");
    assert_eq!(signing.signed(), 2);
}

#[tokio::test]
async fn a_refused_token_is_signed_again_and_retried_once() {
    let server = SecurePostgres::start_with(ServerTls::Required);
    let signing = TestSigning::new();
    let database = iam_database(&server, &signing).await;
    database.connect().await.unwrap();

    // The cached token is refused: a new one, signed now, is let in.
    signing.set_clock(5 * 60);
    server
        .set_password(USER, &signing.token_for(&server, USER))
        .await;
    database
        .connect()
        .await
        .expect("the retry with a new token");
    assert_eq!(signing.signed(), 2);

    // Refused again: one retry, then an error that says what to check and shows no token.
    signing.set_clock(6 * 60);
    server.set_password(USER, "not-a-token").await;
    let refused = signing.token_for(&server, USER);
    let error = match database.connect().await {
        Err(error @ ConnectError::TokenRefused(_)) => error.to_string(),
        Err(other) => panic!("not a refused token: {other}"),
        Ok(_) => panic!("connected with a wrong password"),
    };
    assert_eq!(signing.signed(), 3, "the cached token, then one new one");
    assert!(
        error.contains("28P01") && error.contains("rds_iam") && error.contains(USER),
        "{error}"
    );
    for secret in [
        refused.as_str(),
        "X-Amz-Signature",
        SECRET_KEY,
        SESSION_TOKEN,
    ] {
        assert!(!error.contains(secret), "{error}");
    }
}

#[tokio::test]
async fn iam_never_sends_the_token_without_tls() {
    let server = SecurePostgres::start_with(ServerTls::Off);
    let signing = TestSigning::new();
    let token = signing.token_for(&server, USER);
    server.create_owner(USER, &token).await;
    let env = iam_env(&server);

    for mode in ["disable", "allow", "prefer"] {
        let mut env = env.clone();
        env.push(("DB_SSLMODE".into(), mode.into()));
        let error = config(&env).unwrap_err();
        assert!(
            error.starts_with("DB_SSLMODE:") && error.contains("DB_AUTH=iam"),
            "{error}"
        );
    }
    let config = config(&env).unwrap();
    let database =
        Database::with_signing(&config.database, SecretsManager::default(), &signing).unwrap();
    let error = match database.connect().await {
        Ok(_) => panic!("connected without TLS"),
        Err(error) => error.to_string(),
    };
    assert!(error.contains("TLS"), "{error}");
    assert!(session_tls(&server).await.is_empty());

    // The server itself would have taken the token in the clear.
    let psql = server
        .psql()
        .env("PGPASSWORD", &token)
        .args([
            "--dbname",
            &format!(
                "host=localhost port={} user={USER} dbname={USER} sslmode=disable",
                server.port
            ),
            "--command",
            "SELECT 1",
        ])
        .output()
        .unwrap();
    assert!(psql.status.success(), "{}", printed(&psql));
}

fn printed(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The command line, with only `env`, nothing of the machine's AWS setup, and everything logged.
async fn coingecko_cdc(env: &[(String, String)]) -> Output {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .arg("migrate")
        .env_clear()
        .env("RUST_LOG", "trace")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .await
        .expect("starting coingecko-cdc")
}

/// The command line signs with the process's own credentials (here `AWS_*`): the token it signs
/// now is not the role's password, so it is refused twice, and neither the keys nor a token is
/// ever printed, even at `RUST_LOG=trace`.
#[tokio::test]
async fn the_command_line_signs_with_its_aws_credentials_and_prints_no_secret() {
    let server = SecurePostgres::start_with(ServerTls::Required);
    server.create_owner(USER, "not-a-token").await;
    let mut env = iam_env(&server);

    let without = coingecko_cdc(&env).await;
    let text = printed(&without);
    assert!(!without.status.success(), "{text}");
    let last = text.lines().last().unwrap_or_default();
    assert!(
        last.contains("signing the IAM token for user iam_ingest")
            && last.contains("no AWS credentials: set AWS_ACCESS_KEY_ID"),
        "{text}"
    );

    env.extend([
        ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
        ("AWS_SESSION_TOKEN".to_string(), SESSION_TOKEN.to_string()),
    ]);
    let refused = coingecko_cdc(&env).await;
    let text = printed(&refused);
    assert!(!refused.status.success(), "{text}");
    assert_eq!(
        text.matches("the database refused the IAM token: signing a new one")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.lines().last().unwrap_or_default().contains("rds_iam"),
        "{text}"
    );
    for secret in [
        SECRET_KEY,
        SESSION_TOKEN,
        "X-Amz-Signature",
        "X-Amz-Security-Token",
    ] {
        assert!(!text.contains(secret), "printed {secret}: {text}");
    }
}

/// template.yaml as CloudFormation reads it (cfn-lint's loader knows its short tags), as JSON.
fn template() -> Value {
    let output = std::process::Command::new("python3")
        .args([
            "-c",
            "import json, sys; from cfnlint.decode import decode; t, m = decode(sys.argv[1]); assert not m, m; print(json.dumps(t))",
            concat!(env!("CARGO_MANIFEST_DIR"), "/template.yaml"),
        ])
        .output()
        .expect("python3 is not on PATH: `. .venv/bin/activate` (.ci/run installs cfn-lint there)");
    assert!(
        output.status.success(),
        "cfn-lint could not read template.yaml (is it installed? `. .venv/bin/activate`): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A stack's parameters (and pseudo parameters) and the template's conditions.
struct Stack {
    params: std::collections::HashMap<String, String>,
    conditions: Value,
}

impl Stack {
    /// `value` as CloudFormation deploys it, for the intrinsic functions the template's policy and
    /// environment use; `None` for `AWS::NoValue`.
    fn deployed(&self, value: &Value) -> Option<Value> {
        let truth = |v: &Value| self.deployed(v) == Some(Value::Bool(true));
        let fields = |fields: &serde_json::Map<String, Value>| {
            Value::Object(
                fields
                    .iter()
                    .filter_map(|(k, v)| self.deployed(v).map(|v| (k.clone(), v)))
                    .collect(),
            )
        };
        Some(match value {
            Value::Array(items) => {
                Value::Array(items.iter().filter_map(|v| self.deployed(v)).collect())
            }
            Value::Object(map) if map.len() == 1 => {
                let (function, argument) = map.iter().next().unwrap();
                let args = || argument.as_array().unwrap();
                match function.as_str() {
                    "Ref" if argument == "AWS::NoValue" => return None,
                    "Ref" => Value::String(self.params[argument.as_str().unwrap()].clone()),
                    "Fn::If" => {
                        let condition = &self.conditions[args()[0].as_str().unwrap()];
                        return self.deployed(&args()[if truth(condition) { 1 } else { 2 }]);
                    }
                    "Fn::Equals" => {
                        Value::Bool(self.deployed(&args()[0]) == self.deployed(&args()[1]))
                    }
                    "Fn::Not" => Value::Bool(!truth(&args()[0])),
                    "Fn::Or" => Value::Bool(args().iter().any(truth)),
                    "Fn::Sub" => {
                        let mut text = argument.as_str().unwrap().to_string();
                        for (name, value) in &self.params {
                            text = text.replace(&format!("${{{name}}}"), value);
                        }
                        Value::String(text)
                    }
                    _ => fields(map),
                }
            }
            Value::Object(map) => fields(map),
            Value::Number(n) => Value::String(n.to_string()),
            other => other.clone(),
        })
    }
}

/// With `DbAuth=iam` the function may log in as exactly `DbUser` on `DbResourceId` and read no
/// database secret; with `secret`, it reads the secret and may not log in with IAM. Either way,
/// the environment the template gives the function is one it accepts.
#[test]
fn the_template_grants_rds_db_connect_or_the_secret_by_db_auth() {
    let template = template();
    let secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:db-AbCdEf";
    let deployments = [
        ("secret", vec![("DbSecretArn", secret_arn)]),
        (
            "iam",
            vec![
                ("DbSecretArn", secret_arn),
                ("DbHost", "db.abc123.eu-west-1.rds.amazonaws.com"),
                ("DbUser", "lambda_ingest"),
                ("DbResourceId", "db-ABCDEFGHIJKL0123456789"),
            ],
        ),
    ];
    for (auth, given) in deployments {
        let mut params: std::collections::HashMap<String, String> = template["Parameters"]
            .as_object()
            .unwrap()
            .iter()
            .filter_map(|(name, p)| {
                let default = match &p["Default"] {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                Some((name.clone(), default))
            })
            .collect();
        for (name, value) in given.iter().chain(&[
            ("DbAuth", auth),
            ("AWS::Partition", "aws"),
            ("AWS::Region", "eu-west-1"),
            ("AWS::AccountId", "123456789012"),
        ]) {
            params.insert(name.to_string(), value.to_string());
        }
        let stack = Stack {
            params,
            conditions: template["Conditions"].clone(),
        };
        let function = &template["Resources"]["IngestFunction"]["Properties"];
        let policies = stack.deployed(&function["Policies"]).unwrap();
        let environment = stack.deployed(&function["Environment"]).unwrap();
        let granted: Vec<(String, String)> = policies[0]["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["Action"].as_str().unwrap().to_string(),
                    s["Resource"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        let env: Vec<(String, String)> = environment["Variables"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .chain([("AWS_REGION".to_string(), "eu-west-1".to_string())]) // Lambda sets it
            .collect();
        let source = config(&env).unwrap().database.source.unwrap();
        match auth {
            "iam" => {
                assert_eq!(
                    granted,
                    [(
                        "rds-db:connect".to_string(),
                        "arn:aws:rds-db:eu-west-1:123456789012:dbuser:db-ABCDEFGHIJKL0123456789/lambda_ingest".to_string()
                    )]
                );
                let endpoint = match source {
                    coingecko_cdc::config::DatabaseSource::Iam(endpoint) => endpoint,
                    other => panic!("not IAM: {other:?}"),
                };
                assert_eq!(
                    (
                        endpoint.host.as_str(),
                        endpoint.user.as_str(),
                        endpoint.region.as_str()
                    ),
                    (
                        "db.abc123.eu-west-1.rds.amazonaws.com",
                        "lambda_ingest",
                        "eu-west-1"
                    )
                );
            }
            _ => {
                assert_eq!(
                    granted,
                    [(
                        "secretsmanager:GetSecretValue".to_string(),
                        secret_arn.to_string()
                    )]
                );
                assert!(matches!(
                    source,
                    coingecko_cdc::config::DatabaseSource::Secret { ref secret_id, .. } if secret_id == secret_arn
                ));
            }
        }
    }
}
