//! The change feed's contract as a property. Random steps go through the real ingest: runs one
//! after another, runs started at once (the first held back, so that the run that started first
//! commits last, which a `run_id` cursor skips), runs killed (`kill -9`) at a random moment, runs
//! retried with the same trigger, and backfill chunks landing in the past. A consumer reads the
//! feed between every step (and all along while runs overlap), from where it stopped, as a
//! poller does.
//!
//! What a user expects: every history row comes exactly once, at the position after the last
//! one read (strictly increasing, no gap); each says the price it moved from, the latest of its
//! series before it; and the consumer's picture equals `price_history`.
//!
//! `CDC_FEED_CASES` sets how many sequences are tried (default 16, about 70 steps).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use coingecko_cdc::feed::{Change, Source};
use coingecko_cdc::store::Store;
use common::market_chart::ChartBook;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

use super::*;

/// Changes a read asks for: small, so that catching up takes several reads.
const READ: u32 = 7;

#[derive(Debug, Clone)]
enum Step {
    Run(Vec<Entry>),
    /// Started at once, the first one's answer coming late.
    Overlapping(Vec<Vec<Entry>>),
    /// Killed this many milliseconds after it started: before, during or after its apply.
    Killed(Vec<Entry>, u64),
    /// Run twice with the same trigger id: the second adds nothing.
    Retried(Vec<Entry>),
    /// A backfill of days of 2024, long before the live rows.
    Backfill {
        coin: &'static str,
        from_day: u32,
        days: u32,
    },
}

fn step(k: u32) -> impl Strategy<Value = Step> {
    let answer = move || prop::collection::vec(entry(k), 0..6);
    prop_oneof![
        3 => answer().prop_map(Step::Run),
        2 => prop::collection::vec(prop::collection::vec(entry(k), 1..5), 2..4)
            .prop_map(Step::Overlapping),
        1 => (answer(), 0u64..600).prop_map(|(a, ms)| Step::Killed(a, ms)),
        1 => answer().prop_map(Step::Retried),
        2 => (prop::sample::select(vec!["bitcoin", "ethereum"]), 0u32..40, 1u32..20)
            .prop_map(|(coin, from_day, days)| Step::Backfill { coin, from_day, days }),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    (2u32..7).prop_flat_map(|count| (0..count).map(step).collect::<Vec<_>>())
}

/// A poller: the last position it processed and everything it read.
#[derive(Default)]
struct Consumer {
    last: i64,
    seen: Vec<Change>,
}

impl Consumer {
    /// Reads from where it stopped until it is caught up; each change must be the next position.
    async fn catch_up(&mut self, store: &Store) -> Result<(), TestCaseError> {
        loop {
            let batch = store.changes_after(self.last, READ).await.unwrap();
            for change in &batch {
                prop_assert_eq!(
                    change.seq,
                    self.last + 1,
                    "after {} came {}: a gap or a repeat",
                    self.last,
                    change.seq
                );
                self.last = change.seq;
            }
            let caught_up = batch.len() < READ as usize;
            self.seen.extend(batch);
            if caught_up {
                return Ok(());
            }
        }
    }
}

/// `coingecko-cdc run` as a process of its own, killed (`kill -9`) after `after`.
async fn run_killed(app: &TestApp, stub_uri: &str, after: Duration) {
    let mut process = tokio::process::Command::new(env!("CARGO_BIN_EXE_coingecko-cdc"))
        .arg("run")
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_clear()
        .envs(app.env())
        .env("COINGECKO_BASE_URL", stub_uri)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting coingecko-cdc run");
    tokio::time::sleep(after).await;
    process.start_kill().ok();
    process.wait().await.unwrap();
}

async fn stub_answering(answer: &[Entry], delay: Duration) -> MockServer {
    let stub = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/coins/markets"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(answer_page(answer))
                .set_delay(delay),
        )
        .mount(&stub)
        .await;
    stub
}

/// The runs of `answers` started at once, the first held back, while a consumer of its own reads
/// all along.
async fn overlapping(
    app: &TestApp,
    consumer: &mut Consumer,
    answers: &[Vec<Entry>],
) -> Result<(), TestCaseError> {
    let mut stubs = Vec::new();
    for (i, answer) in answers.iter().enumerate() {
        let delay = if i == 0 { 300 } else { 0 };
        stubs.push(stub_answering(answer, Duration::from_millis(delay)).await);
    }
    let done = AtomicBool::new(false);
    let uris: Vec<String> = stubs.iter().map(MockServer::uri).collect();
    let runs = async {
        let runs = join_all(uris.iter().map(|uri| app.try_run_from(uri, None))).await;
        done.store(true, Ordering::SeqCst);
        runs
    };
    let store = app.store().await;
    let reading = async {
        while !done.load(Ordering::SeqCst) {
            consumer.catch_up(&store).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        Ok::<_, TestCaseError>(())
    };
    let (runs, read) = futures::join!(runs, reading);
    read?;
    for run in runs {
        run.expect("an overlapping run failed");
    }
    Ok(())
}

async fn backfill(app: &TestApp, coin: &str, from_day: u32, days: u32) {
    let from = chrono::DateTime::parse_from_rfc3339("2024-08-01T00:00:00Z")
        .unwrap()
        .to_utc()
        + chrono::Days::new(from_day.into());
    let request = coingecko_cdc::backfill::BackfillRequest::new(
        coingecko_cdc::backfill::Window::Range {
            from,
            to: Some(from + chrono::Days::new(days.into())),
        },
        Some(vec![coin.to_string()]),
        coingecko_cdc::backfill::Granularity::Daily,
    )
    .unwrap();
    app.app_with(&[], coingecko_cdc::secrets::SecretsManager::default())
        .await
        .backfill(&request, None)
        .await
        .expect("a backfill");
}

/// The consumer's picture of the history, as `price_history` shows it.
fn picture(seen: &[Change]) -> Vec<String> {
    let mut rows: Vec<String> = seen
        .iter()
        .map(|c| {
            let source = match c.source {
                Source::Live => "live",
                Source::Backfill => "backfill",
            };
            format!(
                "{} {} {} {} {} {:?} {}",
                c.coin_id,
                c.vs_currency,
                c.source_updated_at.to_rfc3339(),
                c.price,
                source,
                c.granularity,
                c.run_id
            )
        })
        .collect();
    rows.sort();
    rows
}

async fn table_picture(app: &TestApp) -> Vec<String> {
    let rows = app
        .db
        .query(
            "SELECT coin_id, vs_currency, source_updated_at, price, source, granularity, run_id
             FROM price_history",
            &[],
        )
        .await
        .unwrap();
    let mut rows: Vec<String> = rows
        .iter()
        .map(|r| {
            let at: chrono::DateTime<chrono::Utc> = r.get(2);
            let price: Decimal = r.get(3);
            let granularity: Option<String> = r.get(5);
            let run_id: Uuid = r.get(6);
            format!(
                "{} {} {} {} {} {:?} {}",
                r.get::<_, String>(0),
                r.get::<_, String>(1),
                at.to_rfc3339(),
                price,
                r.get::<_, String>(4),
                granularity,
                run_id
            )
        })
        .collect();
    rows.sort();
    rows
}

/// Each change's previous price is the price of the latest row of its series before it (in
/// CoinGecko's time) among the rows at earlier positions; none for a series' first.
fn assert_previous_prices(seen: &[Change]) -> Result<(), TestCaseError> {
    for (i, change) in seen.iter().enumerate() {
        let before = seen[..i]
            .iter()
            .filter(|c| {
                c.coin_id == change.coin_id
                    && c.vs_currency == change.vs_currency
                    && c.source_updated_at < change.source_updated_at
            })
            .max_by_key(|c| c.source_updated_at)
            .map(|c| c.price);
        prop_assert_eq!(
            change.previous_price,
            before,
            "position {} ({} at {}): the price it moved from",
            change.seq,
            &change.coin_id,
            change.source_updated_at
        );
    }
    Ok(())
}

async fn check_feed(threshold: &'static str, steps: Vec<Step>) -> Result<(), TestCaseError> {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", threshold);
    app.set("COINGECKO_API_PLAN", "pro");
    ChartBook::default().serve_on(&app.coingecko).await;
    let store = app.store().await;
    let mut consumer = Consumer::default();
    for (number, step) in steps.iter().enumerate() {
        match step {
            Step::Run(answer) => {
                let stub = stub_answering(answer, Duration::ZERO).await;
                app.try_run_from(&stub.uri(), None).await.expect("a run");
            }
            Step::Overlapping(answers) => overlapping(&app, &mut consumer, answers).await?,
            Step::Killed(answer, after) => {
                let stub = stub_answering(answer, Duration::ZERO).await;
                run_killed(&app, &stub.uri(), Duration::from_millis(*after)).await;
            }
            Step::Retried(answer) => {
                let stub = stub_answering(answer, Duration::ZERO).await;
                let trigger = format!("step-{number}");
                for _ in 0..2 {
                    app.try_run_from(&stub.uri(), Some(&trigger))
                        .await
                        .expect("a retried run");
                }
            }
            Step::Backfill {
                coin,
                from_day,
                days,
            } => backfill(&app, coin, *from_day, *days).await,
        }
        consumer.catch_up(&store).await?;
    }
    let held = app.count("price_points").await;
    prop_assert_eq!(
        consumer.last,
        held,
        "positions 1 to {} for {} rows",
        consumer.last,
        held
    );
    prop_assert_eq!(picture(&consumer.seen), table_picture(&app).await);
    assert_previous_prices(&consumer.seen)?;
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases("CDC_FEED_CASES", 16), ..ProptestConfig::default() })]

    #[test]
    fn a_consumer_of_the_feed_sees_every_history_row_once_in_commit_order(
        threshold in prop::sample::select(THRESHOLDS.to_vec()),
        steps in steps(),
    ) {
        block_on(check_feed(threshold, steps))?;
    }
}

#[tokio::test]
async fn a_run_that_started_first_but_committed_last_is_read_after_the_others() {
    let app = spawn_app().await;
    let store = app.store().await;
    let answer = |coin| {
        vec![Entry {
            coin,
            price: Some("100"),
            minute: 0,
        }]
    };
    let slow = stub_answering(&answer(0), Duration::from_millis(800)).await;
    let fast = stub_answering(&answer(1), Duration::ZERO).await;
    let mut consumer = Consumer::default();
    let slow_uri = slow.uri();
    let started_first = app.try_run_from(&slow_uri, None);
    let started_second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let summary = app.try_run_from(&fast.uri(), None).await.unwrap();
        consumer.catch_up(&store).await.unwrap();
        summary
    };
    let (first, second) = futures::join!(started_first, started_second);
    let first = first.unwrap();
    // What a run_id cursor would have stored after that read, and what it would ask for next.
    let run_id_cursor = consumer.seen.iter().map(|c| c.run_id).max().unwrap();
    consumer.catch_up(&store).await.unwrap();

    assert!(
        first.run_id < second.run_id,
        "the first run took the smaller id"
    );
    let late: Vec<&Change> = consumer
        .seen
        .iter()
        .filter(|c| c.run_id == first.run_id)
        .collect();
    assert_eq!(late.len(), 1, "the late run's row is read");
    assert!(
        late[0].run_id < run_id_cursor && late[0].seq > consumer.seen[0].seq,
        "a run_id cursor would skip it; the position comes after what was read"
    );
}
