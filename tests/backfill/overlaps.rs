//! Backfills that meet, overlap, outlive the Demo plan's year or a retention horizon: what an
//! attack on the coverage found, each as the promise it broke (docs/command-line.md, backfill).

use super::*;

/// A window of bitcoin from `from` to `to` (`None`: now).
fn window(
    from: DateTime<Utc>,
    to: Option<DateTime<Utc>>,
    granularity: Granularity,
) -> BackfillRequest {
    request(Window::Range { from, to }, Some(&["bitcoin"]), granularity)
}

/// The start of the step (`seconds` long, from 1970) that `at` falls in.
fn step_start(at: DateTime<Utc>, seconds: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(seconds) * seconds, 0).unwrap()
}

/// Makes the backfill's jobs and chunks look `days` older, as a job resumed that much later sees
/// them.
async fn age_the_backfill(app: &TestApp, days: i32) {
    for (table, from, to) in [
        ("backfill_chunks", "chunk_from", "chunk_to"),
        ("backfill_jobs", "window_from", "window_to"),
    ] {
        let sql = format!(
            "UPDATE {table} SET {from} = {from} - make_interval(days => $1),
                                {to} = {to} - make_interval(days => $1)"
        );
        app.db.execute(&sql, &[&days]).await.unwrap();
    }
}

/// Starts `request` with too little time for its first answer: planned, nothing fetched.
async fn plan_only(app: &TestApp, book: &ChartBook, request: &BackfillRequest) -> BackfillSummary {
    book.delay(std::time::Duration::from_millis(1500));
    let planned = backfiller(app, &[("FETCH_BUDGET_SECS", "1")])
        .await
        .backfill(request, None)
        .await
        .unwrap();
    book.delay(std::time::Duration::ZERO);
    assert_eq!(planned.outcome, BackfillOutcome::OutOfTime);
    planned
}

/// Rows labelled daily at another hour than midnight UTC.
async fn daily_rows_off_midnight(app: &TestApp) -> i64 {
    let counts: Vec<i64> = common::column(
        &app.db,
        "SELECT count(*) FROM price_history
         WHERE granularity = 'daily' AND extract(hour FROM source_updated_at AT TIME ZONE 'UTC') <> 0",
    )
    .await;
    counts[0]
}

#[tokio::test]
async fn two_backfills_meet_without_an_unrecorded_move() {
    let mut app = spawn_app().await;
    // A month where bitcoin's prices make the meeting a move (the stub's are a fixed year's), on
    // the paid plan so that it stays within reach.
    app.set("COINGECKO_API_PLAN", "pro");
    app.set("CDC_THRESHOLD_PCT", "3");
    let book = stubbed(&mut app, "usd").await;
    let base = at("2026-02-19T00:00:00Z");
    let day = TimeDelta::days(1);
    // The later span is walked from the row before the gap; filling the gap gives its first
    // points another row before them.
    let early = window(base, Some(base + day * 10), Granularity::Hourly);
    let late = window(base + day * 20, Some(base + day * 30), Granularity::Hourly);
    let all = window(base, Some(base + day * 30), Granularity::Hourly);
    for asked in [&early, &late, &all] {
        assert_eq!(
            backfill(&app, asked).await.outcome,
            BackfillOutcome::Finished
        );
    }
    assert_eq!(
        backfill(&app, &all).await.outcome,
        BackfillOutcome::AlreadyDone
    );

    assert_no_unrecorded_move(&app, &book, (base, base + day * 30), None, "3").await;
}

/// A backfill that ended a minute before the last step began (a whole hour, a midnight UTC),
/// then the same window up to now: that step's point has come, and is backfilled.
async fn a_step_begun_since_the_last_backfill_is_backfilled(granularity: Granularity) {
    let mut app = spawn_app().await;
    app.set("COINGECKO_API_PLAN", "pro");
    app.set("CDC_THRESHOLD_PCT", "0");
    let book = stubbed(&mut app, "usd").await;
    let step = granularity.step().num_seconds();
    let begun = step_start(Utc::now(), step);
    let from = begun - TimeDelta::days(10);
    let earlier = window(from, Some(begun - TimeDelta::minutes(1)), granularity);
    assert_eq!(
        backfill(&app, &earlier).await.outcome,
        BackfillOutcome::Finished
    );

    let until_now = backfill(&app, &window(from, None, granularity)).await;

    assert_eq!(
        (until_now.outcome, until_now.calls),
        (BackfillOutcome::Finished, 1),
        "{until_now:?}"
    );
    let interval = (granularity == Granularity::Daily).then_some("daily");
    assert_every_move_is_recorded(&app, &book, &until_now, interval, "0").await;
    assert!(
        bitcoin_rows(&app).await.contains_key(&begun),
        "the point at {begun}"
    );
}

#[tokio::test]
async fn an_hour_begun_since_the_last_backfill_is_backfilled() {
    a_step_begun_since_the_last_backfill_is_backfilled(Granularity::Hourly).await;
}

#[tokio::test]
async fn a_midnight_passed_since_the_last_backfill_is_backfilled() {
    a_step_begun_since_the_last_backfill_is_backfilled(Granularity::Daily).await;
}

#[tokio::test]
async fn a_demo_chunk_resumed_past_the_plans_year_covers_only_what_it_asked() {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", "0");
    let book = stubbed(&mut app, "usd").await;
    let hour = step_start(Utc::now(), 3600);
    let request = window(
        hour - TimeDelta::days(300),
        Some(hour - TimeDelta::days(250)),
        Granularity::Hourly,
    );
    plan_only(&app, &book, &request).await;
    // Resumed 70 days later, as far as the job can tell: its first 5 days are past the Demo year.
    age_the_backfill(&app, 70).await;
    let asked = book.requests().len();
    let resumed = backfill(&app, &request).await;
    assert_eq!(resumed.outcome, BackfillOutcome::Finished, "{resumed:?}");
    let sent = &book.requests()[asked];
    assert_eq!(
        sent.to - sent.from,
        50 * 86_400,
        "asked over the same length"
    );

    // On a paid plan, the days the Demo plan no longer served are asked for, and only they.
    app.set("COINGECKO_API_PLAN", "pro");
    let (from, to) = (hour - TimeDelta::days(370), hour - TimeDelta::days(320));
    let asked = book.requests().len();
    let pro = backfill(&app, &window(from, Some(to), Granularity::Hourly)).await;
    assert_eq!(
        (pro.outcome, pro.calls),
        (BackfillOutcome::Finished, 1),
        "{pro:?}"
    );
    assert!(book.requests()[asked].from < sent.from);
    assert_no_unrecorded_move(&app, &book, (from, to), None, "0").await;
}

#[tokio::test]
async fn a_demo_daily_chunk_asked_at_the_plans_limit_says_the_granularity_it_comes_in() {
    let mut app = spawn_app().await;
    let book = stubbed(&mut app, "usd").await;
    // Just over 90 days from just inside the Demo year: the window starts 5 minutes inside it,
    // under 90 days, so it comes hourly, and says so.
    let from = Utc::now() - TimeDelta::days(365) + TimeDelta::seconds(10);
    let to = from + TimeDelta::days(90) + TimeDelta::minutes(3);
    let at_limit = backfill(&app, &window(from, Some(to), Granularity::Daily)).await;
    assert_eq!(at_limit.granularity.as_deref(), Some("hourly"));
    assert!(at_limit.window_from.unwrap() >= from + TimeDelta::minutes(4));
    assert_eq!(daily_rows_off_midnight(&app).await, 0);

    // Resumed 170 days later: a 95-day chunk of which 75 days are past the Demo year.
    let hour = step_start(Utc::now(), 3600);
    let request = window(
        hour - TimeDelta::days(200),
        Some(hour - TimeDelta::days(105)),
        Granularity::Daily,
    );
    assert_eq!(
        plan_only(&app, &book, &request)
            .await
            .granularity
            .as_deref(),
        Some("daily")
    );
    age_the_backfill(&app, 170).await;
    let asked = book.requests().len();
    backfill(&app, &request).await;
    let sent = &book.requests()[asked];
    assert!(sent.to - sent.from > 90 * 86_400, "{sent:?}");
    assert_eq!(
        daily_rows_off_midnight(&app).await,
        0,
        "hourly points stored as daily"
    );
}

#[tokio::test]
async fn weeks_left_out_for_a_horizon_are_backfilled_once_it_is_lifted_as_documented() {
    let mut app = spawn_app().await;
    app.set("CDC_THRESHOLD_PCT", "0");
    let book = stubbed(&mut app, "usd").await;
    app.db
        .batch_execute("UPDATE price_points_partitioning SET retention = interval '60 days'")
        .await
        .unwrap();
    let day = step_start(Utc::now(), 86_400);
    let (from, to) = (day - TimeDelta::days(120), day - TimeDelta::days(90));
    let request = window(from, Some(to), Granularity::Hourly);
    let first = backfill(&app, &request).await;
    assert_eq!((first.history_inserted, first.outside_retention), (0, 720));

    app.db
        .batch_execute("UPDATE price_points_partitioning SET retention = NULL")
        .await
        .unwrap();
    assert_eq!(
        backfill(&app, &request).await.outcome,
        BackfillOutcome::AlreadyDone
    );
    // docs/command-line.md: the chunks that left points out, asked again.
    let marked = app
        .db
        .execute(
            "UPDATE backfill_chunks SET state = 'refused' WHERE detail LIKE '%outside retention%'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(marked, 1);
    let again = backfill(&app, &request).await;
    assert_eq!(again.outcome, BackfillOutcome::Finished, "{again:?}");
    assert_no_unrecorded_move(&app, &book, (from, to), None, "0").await;
}

#[tokio::test]
async fn status_names_a_coin_ids_coin_never_seen_as_not_covered() {
    let mut app = spawn_app().await;
    app.set("COIN_IDS", "bitcoin,ethereum");
    stubbed(&mut app, "usd").await;
    let days = |coins| request(Window::Days(10), coins, Granularity::Hourly);
    assert_eq!(
        backfill(&app, &days(Some(&["bitcoin"]))).await.outcome,
        BackfillOutcome::Finished
    );

    let output = common::cli(&app, &["status", "--json"], &[]).await;
    let pairs = common::stdout_json(&output)["backfill"]["coverage"]["pairs"].clone();
    let states: Vec<(String, String)> = pairs
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["coin_id"].as_str().unwrap().into(),
                p["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        states,
        [
            ("bitcoin".into(), "covered".into()),
            ("ethereum".into(), "not_covered".into())
        ]
    );
    let default = backfill(&app, &days(None)).await;
    assert_eq!(default.chunks_done, 1, "ethereum, as status said");
}

type Span = (DateTime<Utc>, DateTime<Utc>);

/// A small deterministic generator, so that a failing sequence can be run again by its seed.
struct Seeded(u64);

impl Seeded {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Random sequences of windows, hourly and daily, on both plans, threshold 0 (every move
/// recorded): after each, the same request is `already_done` without a call, and every point
/// served over every window asked so far is a row or equal to the row before it.
#[tokio::test]
async fn random_sequences_of_windows_keep_every_window_covered() {
    let base = step_start(Utc::now(), 86_400) - TimeDelta::days(340);
    let latest = step_start(Utc::now(), 86_400) - TimeDelta::days(2);
    for seed in 1..=12u64 {
        let mut random = Seeded(0x9E37_79B9_7F4A_7C15 ^ (seed * 0x1234_5678_9ABC));
        let mut app = spawn_app().await;
        app.set("CDC_THRESHOLD_PCT", "0");
        let book = stubbed(&mut app, "usd").await;
        // Each window asked so far: its span, how it is served, and what asked for it.
        let mut asked: Vec<(Span, Option<&str>, String)> = Vec::new();
        for _ in 0..3 + random.below(4) {
            let pro = random.below(2) == 0;
            app.set("COINGECKO_API_PLAN", if pro { "pro" } else { "demo" });
            let granularity = if random.below(2) == 0 {
                Granularity::Hourly
            } else {
                Granularity::Daily
            };
            let from = base
                + TimeDelta::days(random.below(300) as i64)
                + TimeDelta::hours(random.below(24) as i64);
            let length = match random.below(4) {
                0 => TimeDelta::hours(1 + random.below(47) as i64),
                1 => TimeDelta::days(2 + random.below(20) as i64),
                2 => TimeDelta::days(20 + random.below(100) as i64),
                _ => TimeDelta::days(100 + random.below(60) as i64),
            };
            let to = (from + length).min(latest);
            let what = format!(
                "seed {seed}: {} {from} to {to} {granularity}",
                if pro { "pro" } else { "demo" }
            );
            let summary = backfill(&app, &window(from, Some(to), granularity)).await;
            assert!(
                matches!(
                    summary.outcome,
                    BackfillOutcome::Finished | BackfillOutcome::AlreadyDone
                ),
                "{what}: {summary:?}"
            );
            let calls = book.requests().len();
            let again = backfill(&app, &window(from, Some(to), granularity)).await;
            assert_eq!(
                (again.outcome, book.requests().len()),
                (BackfillOutcome::AlreadyDone, calls),
                "{what}: asked again"
            );
            let daily = summary.granularity.as_deref() == Some("daily");
            let span = (summary.window_from.unwrap(), summary.window_to.unwrap());
            asked.push((span, daily.then_some("daily"), what.clone()));
            let rows = bitcoin_rows(&app).await;
            for (span, interval, was) in &asked {
                let unrecorded =
                    unrecorded_moves(&bitcoin_served(&book, *span, *interval), &rows, "0");
                assert!(
                    unrecorded.is_empty(),
                    "after [{what}], the window [{was}]: {:?}",
                    unrecorded.first()
                );
            }
        }
    }
}
