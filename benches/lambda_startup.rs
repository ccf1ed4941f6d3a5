//! Cold start, cold and warm invocation times and peak memory of the release `bootstrap`.
//!
//! `cargo bench --bench lambda_startup` runs the real binary behind a local stand-in for the
//! Lambda Runtime API, as deployed: credentials from Secrets Manager (moto's server, as in the
//! tests), the local PostgreSQL (a fresh database per sample) and a local CoinGecko stub serving
//! a recorded answer (100 coins). The network to AWS and CoinGecko is excluded by design.
//! `SAMPLES` (default 5) processes are started; each serves one cold and `WARM` (default 5) warm
//! invocations. Medians are printed. `BOOTSTRAP` runs another build instead (one of main's, to
//! compare in one run); `DB_SSLMODE` (default `disable`) sets the database's TLS: `prefer` takes
//! the local server's own certificate, unverified.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wiremock::matchers::{method, path, path_regex};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// Hands out `events` invocations, then parks the runtime; records when things happened.
struct RuntimeApi {
    events: usize,
    next_calls: Mutex<Vec<Instant>>,
}

impl Respond for RuntimeApi {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut calls = self.next_calls.lock().unwrap();
        calls.push(Instant::now());
        if calls.len() > self.events {
            return ResponseTemplate::new(200).set_delay(Duration::from_secs(3600));
        }
        let deadline = chrono::Utc::now().timestamp_millis() + 60_000;
        ResponseTemplate::new(200)
            .insert_header(
                "lambda-runtime-aws-request-id",
                format!("request-{}", calls.len()),
            )
            .insert_header("lambda-runtime-deadline-ms", deadline.to_string())
            .insert_header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:eu-west-1:123456789012:function:coingecko-cdc",
            )
            .set_body_string("{}")
    }
}

struct Responses(Mutex<Vec<(Instant, String)>>);

impl Respond for Responses {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let body = String::from_utf8_lossy(&request.body).to_string();
        self.0.lock().unwrap().push((Instant::now(), body));
        ResponseTemplate::new(202)
    }
}

struct Sample {
    cold_start: Duration,
    cold_invocation: Duration,
    warm_invocations: Vec<Duration>,
    peak_rss_kib: u64,
}

async fn sample(binary: &str, warm: usize, sslmode: &str) -> Sample {
    let app = common::spawn_app().await;
    app.serve(&[common::fixture("markets-2024-09-05.json")])
        .await;
    let dbname = app.database_url.rsplit('/').next().unwrap().to_string();
    let secrets = common::moto::secrets_manager().await;
    let credentials = format!(
        r#"{{"username":"postgres","password":"trust-auth","host":"127.0.0.1","port":5432,"dbname":"{dbname}"}}"#
    );
    let secret_id = common::moto::create_secret(&secrets, &credentials).await;
    let runtime = MockServer::start().await;
    let api = Arc::new(RuntimeApi {
        events: warm + 1,
        next_calls: Mutex::new(Vec::new()),
    });
    let responses = Arc::new(Responses(Mutex::new(Vec::new())));
    Mock::given(method("GET"))
        .and(path("/2018-06-01/runtime/invocation/next"))
        .respond_with(ArcRespond(api.clone()))
        .mount(&runtime)
        .await;
    Mock::given(method("POST"))
        .and(path_regex(
            "^/2018-06-01/runtime/invocation/.+/(response|error)$",
        ))
        .respond_with(ArcRespond(responses.clone()))
        .mount(&runtime)
        .await;

    let started = Instant::now();
    let mut child = tokio::process::Command::new(binary)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", runtime.address().to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "coingecko-cdc")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_ENDPOINT_URL_SECRETS_MANAGER", common::moto::endpoint())
        .env("DB_SECRET_ID", &secret_id)
        .env("DB_SSLMODE", sslmode)
        .env("COINGECKO_BASE_URL", app.coingecko.uri())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting bootstrap");
    let pid = child.id().unwrap();

    let deadline = Instant::now() + Duration::from_secs(120);
    while responses.0.lock().unwrap().len() < warm + 1 {
        assert!(
            Instant::now() < deadline,
            "bootstrap did not answer in time"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("bootstrap exited: {status}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let peak_rss_kib = peak_rss_kib(pid);
    child.kill().await.unwrap();

    let next = api.next_calls.lock().unwrap().clone();
    let answered = responses.0.lock().unwrap().clone();
    for (_, body) in &answered {
        assert!(
            body.contains("\"status\":\"succeeded\""),
            "a run failed: {body}"
        );
    }
    let invocation = |i: usize| answered[i].0 - next[i];
    Sample {
        cold_start: next[0] - started,
        cold_invocation: invocation(0),
        warm_invocations: (1..=warm).map(invocation).collect(),
        peak_rss_kib,
    }
}

/// wiremock wants an owned responder; share one so the bench can read what it recorded.
struct ArcRespond<T>(Arc<T>);

impl<T: Respond> Respond for ArcRespond<T> {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        self.0.respond(request)
    }
}

fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/<pid>/status")
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let binary = std::env::var("BOOTSTRAP").unwrap_or(env!("CARGO_BIN_EXE_bootstrap").into());
    let sslmode = std::env::var("DB_SSLMODE").unwrap_or("disable".into());
    let samples_wanted = setting("SAMPLES", 5);
    let warm = setting("WARM", 5);
    let mut samples = Vec::new();
    for _ in 0..samples_wanted {
        samples.push(sample(&binary, warm, &sslmode).await);
    }
    let ms = |d: Duration| format!("{:.1} ms", d.as_secs_f64() * 1000.0);
    println!("bootstrap: {binary}, DB_SSLMODE={sslmode}");
    println!(
        "binary size: {:.1} MiB",
        std::fs::metadata(&binary).unwrap().len() as f64 / 1048576.0
    );
    println!("samples: {samples_wanted} processes x (1 cold + {warm} warm) invocations; medians:");
    println!(
        "cold start (process start -> ready for the first event): {}",
        ms(median(samples.iter().map(|s| s.cold_start).collect()))
    );
    println!(
        "cold invocation (read the secret, connect, check migrations, fetch, apply 100 new coins): {}",
        ms(median(samples.iter().map(|s| s.cold_invocation).collect()))
    );
    println!(
        "warm invocation (fetch, apply, 100 unchanged coins): {}",
        ms(median(
            samples
                .iter()
                .flat_map(|s| s.warm_invocations.clone())
                .collect()
        ))
    );
    let mut rss: Vec<u64> = samples.iter().map(|s| s.peak_rss_kib).collect();
    rss.sort();
    println!(
        "peak RSS: {:.1} MiB (median), {:.1} MiB (max)",
        rss[rss.len() / 2] as f64 / 1024.0,
        *rss.last().unwrap() as f64 / 1024.0
    );
}
