//! Which `market_chart/range` requests cover a backfill window. Pure: no I/O.
//!
//! `/range` has no granularity parameter we may use for hourly points: CoinGecko picks it from
//! the length of the range (web docs, not the OpenAPI files): a day ending now comes 5-minutely,
//! 2–90 days hourly, over 90 days daily at 00:00 UTC. `interval=hourly` is Enterprise-only, so
//! it is never sent; Pro may send `interval=daily`. The Demo plan serves only the past 365 days
//! and answers older requests with error 10012.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, TimeDelta, Utc};

use crate::config::ApiPlan;
use crate::market::earliest_plausible_time;

/// Shorter ranges may come 5-minutely.
const HOURLY_MIN: TimeDelta = TimeDelta::days(2);
/// Longer ranges come daily.
const HOURLY_MAX: TimeDelta = TimeDelta::days(90);
/// Over 90 days comes daily; a whole day over keeps a chunk we size clear of that edge.
const DAILY_MIN: TimeDelta = TimeDelta::days(91);
/// A year of daily points per request.
const DAILY_MAX: TimeDelta = TimeDelta::days(365);
const DEMO_HISTORY_DAYS: i64 = 365;
/// What the Demo plan serves, counted back from when a request arrives.
pub(crate) const DEMO_HISTORY: TimeDelta = TimeDelta::days(DEMO_HISTORY_DAYS);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    Hourly,
    Daily,
}

impl Granularity {
    pub fn as_str(self) -> &'static str {
        match self {
            Granularity::Hourly => "hourly",
            Granularity::Daily => "daily",
        }
    }

    /// The granularities whose backfilled rows serve this one: its own, and a finer one (hourly
    /// rows hold every day too).
    pub fn served_by(self) -> &'static [&'static str] {
        match self {
            Granularity::Hourly => &["hourly"],
            Granularity::Daily => &["daily", "hourly"],
        }
    }

    /// The time between two points.
    pub fn step(self) -> TimeDelta {
        match self {
            Granularity::Hourly => TimeDelta::hours(1),
            Granularity::Daily => TimeDelta::days(1),
        }
    }
}

impl fmt::Display for Granularity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown granularity {0:?}: use \"hourly\" or \"daily\"")]
pub struct UnknownGranularity(pub String);

impl FromStr for Granularity {
    type Err = UnknownGranularity;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "hourly" => Ok(Granularity::Hourly),
            "daily" => Ok(Granularity::Daily),
            other => Err(UnknownGranularity(other.to_string())),
        }
    }
}

/// The window a backfill asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N days, up to now.
    Days(u32),
    /// From `from` to `to`, or to now.
    Range {
        from: DateTime<Utc>,
        to: Option<DateTime<Utc>>,
    },
}

/// What `coingecko-cdc backfill` and `{"backfill": {…}}` ask for. Built only by
/// [`BackfillRequest::new`], so that every path checks its coins the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackfillRequest {
    window: Window,
    /// These coins, each once; `None`: the coins the live runs track.
    coins: Option<Vec<String>>,
    granularity: Granularity,
}

/// A backfill's coins that name no coin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoinsError {
    #[error("the backfill's coins are an empty list: name at least one (\"coins\": [\"bitcoin\"]), or leave \"coins\" out for COIN_IDS, else the coins the live runs track")]
    NoCoins,
    #[error("the backfill's coin id number {position} is empty: give CoinGecko ids such as bitcoin (--coins bitcoin,ethereum; in a payload, \"coins\": [\"bitcoin\", \"ethereum\"])")]
    Empty { position: usize },
    #[error("the backfill's coin id number {position} ({id:?}) holds a control character: give CoinGecko ids such as bitcoin")]
    ControlCharacter { position: usize, id: String },
    #[error("the backfill's coin id number {position} ({id:?}) has spaces around it or is only spaces: CoinGecko ids have none (--coins bitcoin,ethereum)")]
    Spaces { position: usize, id: String },
}

impl BackfillRequest {
    /// Checks the coins: an empty id, one with a control character or spaces around it, is
    /// refused, naming its position (1-based); a repeated id counts once, in the order first
    /// given. An empty list is refused: a template that lost its ids must not backfill every
    /// tracked coin. `None`: the default coins.
    pub fn new(
        window: Window,
        coins: Option<Vec<String>>,
        granularity: Granularity,
    ) -> Result<Self, CoinsError> {
        if coins.as_ref().is_some_and(Vec::is_empty) {
            return Err(CoinsError::NoCoins);
        }
        let coins = coins.map(unique_ids).transpose()?;
        Ok(Self {
            window,
            coins,
            granularity,
        })
    }

    pub fn window(&self) -> Window {
        self.window
    }

    pub fn coins(&self) -> Option<&[String]> {
        self.coins.as_deref()
    }

    pub fn granularity(&self) -> Granularity {
        self.granularity
    }
}

fn unique_ids(ids: Vec<String>) -> Result<Vec<String>, CoinsError> {
    let mut seen = std::collections::HashSet::new();
    let mut unique = Vec::with_capacity(ids.len());
    for (index, id) in ids.into_iter().enumerate() {
        let position = index + 1;
        if id.is_empty() {
            return Err(CoinsError::Empty { position });
        }
        if id.chars().any(char::is_control) {
            return Err(CoinsError::ControlCharacter { position, id });
        }
        if id.trim() != id {
            return Err(CoinsError::Spaces { position, id });
        }
        if seen.insert(id.clone()) {
            unique.push(id);
        }
    }
    Ok(unique)
}

/// A time as people write it: a date (`2026-11-01`, its midnight UTC) or an RFC 3339 time.
pub fn parse_instant(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .map(|day| day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        .map_err(|_| {
            format!(
                "{text:?} is not a date (2026-11-01) or an RFC 3339 time (2026-11-01T15:00:00Z)"
            )
        })
}

/// One request: `from` and `to` are sent as unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// What the answer will hold.
    pub granularity: Granularity,
    /// What to send as `interval`; `None`: leave it to CoinGecko's automatic granularity.
    pub interval: Option<&'static str>,
}

impl Chunk {
    /// Whether a point belongs to this chunk. CoinGecko's range includes both ends, so a point
    /// exactly at a boundary can come in two answers: it belongs to the later chunk.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from <= at && at < self.to
    }

    fn hourly((from, to): (DateTime<Utc>, DateTime<Utc>)) -> Self {
        Self {
            from,
            to,
            granularity: Granularity::Hourly,
            interval: None,
        }
    }

    fn daily((from, to): (DateTime<Utc>, DateTime<Utc>), interval: Option<&'static str>) -> Self {
        Self {
            from,
            to,
            granularity: Granularity::Daily,
            interval,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error(
        "nothing to backfill: {from} is not before {to} (a `to` later than now counts as now)"
    )]
    EmptyWindow {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    },
    #[error(
        "the Demo plan serves only the past {days} days (since {earliest}), and the window starts \
         at {from}: ask for fewer days (a shorter --days), or set COINGECKO_API_PLAN=pro with a \
         paid key",
        days = DEMO_HISTORY_DAYS
    )]
    BeyondDemoHistory {
        from: DateTime<Utc>,
        earliest: DateTime<Utc>,
    },
    #[error(
        "the window starts at {from}, before {earliest} (bitcoin's first block), when no coin had \
         a price: start it later (--from {earliest_date}, or --days of at most {days})",
        earliest_date = earliest.date_naive()
    )]
    BeforeAnyPrice {
        from: DateTime<Utc>,
        earliest: DateTime<Utc>,
        days: i64,
    },
}

/// The last `days` days up to `now`.
pub fn window_for_days(days: u32, now: DateTime<Utc>) -> (DateTime<Utc>, DateTime<Utc>) {
    let from = now
        .checked_sub_signed(TimeDelta::days(days.into()))
        .unwrap_or(DateTime::<Utc>::MIN_UTC);
    (from, now)
}

/// The requests that cover `[from, to)`, oldest first, each chunk's `to` the next one's `from`.
///
/// - Hourly: chunks of 2 to 90 days, whole 90-day chunks laid backward from `to`, so that the
///   newest data comes in full chunks. An oldest remainder under 2 days takes what it lacks from
///   its neighbour (which keeps at least 88 days), rather than widening the window: the chunks
///   still tile `[from, to)` exactly and no request reaches past the Demo plan's 365 days.
///   Only a window under 2 days in all is widened, to the 2 days ending at `to` (on Demo, starting
///   no earlier than 365 days ago, so it may end after `to`).
/// - Daily: chunks of at most 365 days, laid the same way; an oldest remainder of 90 days or
///   less takes from its neighbour to make 91. Pro sends `interval=daily`, whatever the length.
///   Demo cannot: a Demo window of 90 days or less comes hourly, and is planned as Hourly.
///
/// `to` later than `now` is taken as `now`. On Demo, `from` older than 365 days before `now` is an
/// error: CoinGecko would refuse it.
pub fn plan_chunks(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    plan: ApiPlan,
    wanted: Granularity,
    now: DateTime<Utc>,
) -> Result<Vec<Chunk>, PlanError> {
    let to = to.min(now);
    if from >= to {
        return Err(PlanError::EmptyWindow { from, to });
    }
    // Else a huge --days plans thousands of chunks, or a time PostgreSQL cannot hold.
    let first_price = earliest_plausible_time();
    if from < first_price {
        return Err(PlanError::BeforeAnyPrice {
            from,
            earliest: first_price,
            days: (now - first_price).num_days(),
        });
    }
    let earliest = match plan {
        ApiPlan::Demo => Some(now - DEMO_HISTORY),
        ApiPlan::Pro => None,
    };
    if let Some(earliest) = earliest.filter(|&earliest| from < earliest) {
        return Err(PlanError::BeyondDemoHistory { from, earliest });
    }
    let chunks = match (wanted, plan) {
        (Granularity::Daily, ApiPlan::Pro) => tile_backward(from, to, DAILY_MAX, DAILY_MIN)
            .into_iter()
            .map(|span| Chunk::daily(span, Some("daily")))
            .collect(),
        (Granularity::Daily, ApiPlan::Demo) if to - from > HOURLY_MAX => {
            tile_backward(from, to, DAILY_MAX, DAILY_MIN)
                .into_iter()
                .map(|span| Chunk::daily(span, None))
                .collect()
        }
        (Granularity::Hourly, _) | (Granularity::Daily, ApiPlan::Demo) => {
            plan_hourly(from, to, earliest)
        }
    };
    Ok(chunks)
}

fn plan_hourly(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    earliest: Option<DateTime<Utc>>,
) -> Vec<Chunk> {
    if to - from < HOURLY_MIN {
        let start = earliest.map_or(to - HOURLY_MIN, |earliest| (to - HOURLY_MIN).max(earliest));
        return vec![Chunk::hourly((start, start + HOURLY_MIN))];
    }
    tile_backward(from, to, HOURLY_MAX, HOURLY_MIN)
        .into_iter()
        .map(Chunk::hourly)
        .collect()
}

/// Splits `[from, to)` into the fewest spans of at most `max`, laid from `to` backward; an oldest
/// span shorter than `min` takes the rest from its neighbour. Needs `max >= 2 * min`, so that
/// the neighbour keeps at least `min`.
fn tile_backward(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    max: TimeDelta,
    min: TimeDelta,
) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    let mut bounds = vec![to];
    let mut start = to;
    while start - from > max {
        start -= max;
        bounds.push(start);
    }
    bounds.push(from);
    bounds.reverse();
    if bounds.len() > 2 && bounds[1] - bounds[0] < min {
        bounds[1] = bounds[0] + min;
    }
    bounds.windows(2).map(|pair| (pair[0], pair[1])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn now() -> DateTime<Utc> {
        at("2026-05-18T12:00:00Z")
    }

    fn days_ago(days: i64) -> DateTime<Utc> {
        now() - TimeDelta::days(days)
    }

    fn last_days(days: u32, plan: ApiPlan, wanted: Granularity) -> Result<Vec<Chunk>, PlanError> {
        let (from, to) = window_for_days(days, now());
        plan_chunks(from, to, plan, wanted, now())
    }

    fn spans(chunks: &[Chunk]) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
        chunks.iter().map(|c| (c.from, c.to)).collect()
    }

    fn hourly(from: &str, to: &str) -> Chunk {
        Chunk::hourly((at(from), at(to)))
    }

    #[test]
    fn an_hourly_year_on_demo_is_four_whole_chunks_and_the_remainder() {
        let chunks = last_days(365, ApiPlan::Demo, Granularity::Hourly).unwrap();
        assert_eq!(
            chunks,
            [
                hourly("2025-05-18T12:00:00Z", "2025-05-23T12:00:00Z"),
                hourly("2025-05-23T12:00:00Z", "2025-08-21T12:00:00Z"),
                hourly("2025-08-21T12:00:00Z", "2025-11-19T12:00:00Z"),
                hourly("2025-11-19T12:00:00Z", "2026-02-17T12:00:00Z"),
                hourly("2026-02-17T12:00:00Z", "2026-05-18T12:00:00Z"),
            ]
        );
    }

    #[test]
    fn a_daily_year_is_one_request_with_interval_only_on_pro() {
        let demo = last_days(365, ApiPlan::Demo, Granularity::Daily).unwrap();
        let pro = last_days(365, ApiPlan::Pro, Granularity::Daily).unwrap();
        let year = (at("2025-05-18T12:00:00Z"), now());
        assert_eq!(demo, [Chunk::daily(year, None)]);
        assert_eq!(pro, [Chunk::daily(year, Some("daily"))]);
    }

    #[test]
    fn more_than_a_year_on_demo_is_refused_with_what_to_do() {
        for wanted in [Granularity::Hourly, Granularity::Daily] {
            let err = last_days(400, ApiPlan::Demo, wanted).unwrap_err();
            assert_eq!(
                err,
                PlanError::BeyondDemoHistory {
                    from: days_ago(400),
                    earliest: days_ago(365)
                }
            );
            let text = err.to_string();
            for needed in ["365 days", "--days", "COINGECKO_API_PLAN=pro"] {
                assert!(text.contains(needed), "{text}");
            }
        }
    }

    #[test]
    fn a_window_before_any_price_is_refused_before_it_is_planned() {
        // 2009-01-03 to 2026-05-18T12:00Z: 6344 whole days.
        assert_eq!(
            last_days(6344, ApiPlan::Pro, Granularity::Daily)
                .unwrap()
                .len(),
            18
        );
        for days in [6345, u32::MAX] {
            let err = last_days(days, ApiPlan::Pro, Granularity::Daily).unwrap_err();
            assert!(
                matches!(err, PlanError::BeforeAnyPrice { days: 6344, .. }),
                "{err:?}"
            );
            let text = err.to_string();
            for needed in ["2009-01-03", "--from 2009-01-03", "--days of at most 6344"] {
                assert!(text.contains(needed), "{text}");
            }
        }
        let ancient = at("0001-01-01T00:00:00Z");
        assert!(matches!(
            plan_chunks(ancient, now(), ApiPlan::Pro, Granularity::Hourly, now()),
            Err(PlanError::BeforeAnyPrice { .. })
        ));
    }

    #[test]
    fn the_demo_limit_is_exactly_365_days_before_now() {
        let limit = days_ago(365);
        let plan = |from| plan_chunks(from, now(), ApiPlan::Demo, Granularity::Daily, now());
        assert!(plan(limit).is_ok());
        assert!(matches!(
            plan(limit - TimeDelta::seconds(1)),
            Err(PlanError::BeyondDemoHistory { .. })
        ));
        let long_ago = plan_chunks(
            days_ago(3000),
            now(),
            ApiPlan::Pro,
            Granularity::Daily,
            now(),
        );
        assert_eq!(long_ago.unwrap().len(), 9, "Pro has no such limit");
    }

    #[test]
    fn four_hundred_daily_days_on_pro_are_two_requests_of_over_90_days() {
        let chunks = last_days(400, ApiPlan::Pro, Granularity::Daily).unwrap();
        assert_eq!(
            spans(&chunks),
            [
                (at("2025-04-13T12:00:00Z"), at("2025-07-13T12:00:00Z")),
                (at("2025-07-13T12:00:00Z"), now()),
            ]
        );
        assert!(chunks
            .iter()
            .all(|c| c.granularity == Granularity::Daily && c.interval == Some("daily")));
    }

    #[test]
    fn a_one_day_hourly_window_is_widened_to_two_days() {
        for plan in [ApiPlan::Demo, ApiPlan::Pro] {
            let chunks = last_days(1, plan, Granularity::Hourly).unwrap();
            assert_eq!(
                chunks,
                [hourly("2026-05-16T12:00:00Z", "2026-05-18T12:00:00Z")]
            );
        }
    }

    #[test]
    fn a_short_window_at_the_demo_limit_is_widened_forward_instead() {
        let chunks = plan_chunks(
            days_ago(365),
            days_ago(364),
            ApiPlan::Demo,
            Granularity::Hourly,
            now(),
        )
        .unwrap();
        assert_eq!(
            chunks,
            [hourly("2025-05-18T12:00:00Z", "2025-05-20T12:00:00Z")]
        );
        let pro = plan_chunks(
            days_ago(365),
            days_ago(364),
            ApiPlan::Pro,
            Granularity::Hourly,
            now(),
        )
        .unwrap();
        assert_eq!(
            pro,
            [hourly("2025-05-17T12:00:00Z", "2025-05-19T12:00:00Z")]
        );
    }

    #[test]
    fn a_91_day_hourly_window_borrows_from_its_neighbour() {
        let chunks = last_days(91, ApiPlan::Demo, Granularity::Hourly).unwrap();
        assert_eq!(
            chunks,
            [
                hourly("2026-02-16T12:00:00Z", "2026-02-18T12:00:00Z"),
                hourly("2026-02-18T12:00:00Z", "2026-05-18T12:00:00Z"),
            ]
        );
        assert_eq!(
            last_days(90, ApiPlan::Demo, Granularity::Hourly)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            last_days(2, ApiPlan::Demo, Granularity::Hourly).unwrap(),
            [hourly("2026-05-16T12:00:00Z", "2026-05-18T12:00:00Z")]
        );
    }

    #[test]
    fn thirty_daily_days_are_daily_on_pro_and_hourly_on_demo() {
        let month = (at("2026-04-18T12:00:00Z"), now());
        assert_eq!(
            last_days(30, ApiPlan::Pro, Granularity::Daily).unwrap(),
            [Chunk::daily(month, Some("daily"))]
        );
        assert_eq!(
            last_days(30, ApiPlan::Demo, Granularity::Daily).unwrap(),
            [Chunk::hourly(month)]
        );
        // Just over 90 days, Demo's automatic granularity turns daily.
        assert_eq!(
            last_days(91, ApiPlan::Demo, Granularity::Daily).unwrap(),
            [Chunk::daily((days_ago(91), now()), None)]
        );
    }

    #[test]
    fn a_future_to_is_now_and_an_empty_window_is_an_error() {
        let chunks = plan_chunks(
            days_ago(10),
            now() + TimeDelta::days(5),
            ApiPlan::Demo,
            Granularity::Hourly,
            now(),
        )
        .unwrap();
        assert_eq!(spans(&chunks), [(days_ago(10), now())]);

        for (from, to) in [
            (days_ago(3), days_ago(3)),
            (days_ago(3), days_ago(4)),
            (now() + TimeDelta::hours(1), now() + TimeDelta::hours(2)),
        ] {
            let err = plan_chunks(from, to, ApiPlan::Pro, Granularity::Hourly, now()).unwrap_err();
            assert_eq!(
                err,
                PlanError::EmptyWindow {
                    from,
                    to: to.min(now())
                }
            );
        }
        assert!(last_days(0, ApiPlan::Pro, Granularity::Daily).is_err());
    }

    /// Every window from an hour to ten years, on both plans, at both granularities.
    #[test]
    fn chunks_tile_the_window_within_what_coingecko_answers() {
        let hour = TimeDelta::hours(1);
        let day = TimeDelta::days(1);
        let lengths = [
            hour,
            day,
            day * 2 - hour,
            day * 2,
            day * 2 + hour,
            day * 90,
            day * 90 + hour,
            day * 91,
            day * 92 - hour,
            day * 92,
            day * 181,
            day * 182,
            day * 365,
            day * 365 + hour,
            day * 455,
            day * 456,
            day * 730,
            day * 3650,
        ];
        for length in lengths {
            for to in [now(), now() - hour * 17] {
                let from = to - length;
                for plan in [ApiPlan::Demo, ApiPlan::Pro] {
                    for wanted in [Granularity::Hourly, Granularity::Daily] {
                        let case = format!("{length} ending {to}, {plan:?}, {wanted}");
                        let planned = plan_chunks(from, to, plan, wanted, now());
                        if plan == ApiPlan::Demo && from < days_ago(365) {
                            assert!(planned.is_err(), "{case}");
                            continue;
                        }
                        check_tiling(&planned.unwrap(), from, to, plan, &case);
                    }
                }
            }
        }
    }

    fn check_tiling(
        chunks: &[Chunk],
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        plan: ApiPlan,
        case: &str,
    ) {
        assert!(!chunks.is_empty(), "{case}");
        for pair in chunks.windows(2) {
            assert_eq!(pair[0].to, pair[1].from, "{case}: gap or overlap");
        }
        let (first, last) = (chunks[0].from, chunks[chunks.len() - 1].to);
        if to - from >= HOURLY_MIN {
            assert_eq!((first, last), (from, to), "{case}");
        } else {
            assert!(first <= from && last >= to, "{case}: {chunks:?}");
        }
        for chunk in chunks {
            let length = chunk.to - chunk.from;
            match chunk.granularity {
                Granularity::Hourly => {
                    assert!(
                        (HOURLY_MIN..=HOURLY_MAX).contains(&length),
                        "{case}: {chunk:?}"
                    );
                    assert_eq!(chunk.interval, None, "{case}");
                }
                Granularity::Daily => {
                    assert!(length <= DAILY_MAX, "{case}: {chunk:?}");
                    match plan {
                        ApiPlan::Pro => assert_eq!(chunk.interval, Some("daily"), "{case}"),
                        ApiPlan::Demo => {
                            assert!(length > HOURLY_MAX, "{case}: {chunk:?}");
                            assert_eq!(chunk.interval, None, "{case}");
                        }
                    }
                    if chunks.len() > 1 {
                        assert!(length >= DAILY_MIN, "{case}: {chunk:?}");
                    }
                }
            }
        }
        let max = match chunks[0].granularity {
            Granularity::Hourly => HOURLY_MAX,
            Granularity::Daily => DAILY_MAX,
        };
        let seconds = |span: TimeDelta| span.num_seconds().unsigned_abs();
        let fewest = seconds(to - from).div_ceil(seconds(max));
        assert_eq!(
            chunks.len() as u64,
            fewest,
            "{case}: more requests than needed"
        );
    }

    #[test]
    fn a_point_on_a_boundary_belongs_to_the_later_chunk() {
        let chunks = last_days(200, ApiPlan::Pro, Granularity::Hourly).unwrap();
        let boundary = chunks[1].from;
        assert!(!chunks[0].contains(boundary));
        assert!(chunks[1].contains(boundary));
        assert!(chunks[0].contains(boundary - TimeDelta::milliseconds(1)));
    }

    #[test]
    fn granularities_read_back_what_they_write() {
        for granularity in [Granularity::Hourly, Granularity::Daily] {
            assert_eq!(granularity.as_str().parse::<Granularity>(), Ok(granularity));
        }
        let err = "5m".parse::<Granularity>().unwrap_err().to_string();
        assert_eq!(
            err,
            "unknown granularity \"5m\": use \"hourly\" or \"daily\""
        );
        assert!("Hourly".parse::<Granularity>().is_err());
    }

    #[test]
    fn a_requests_coins_are_each_taken_once_and_empty_ids_are_refused() {
        let ids = |list: &[&str]| Some(list.iter().map(|c| c.to_string()).collect());
        let asked = |list: &[&str]| {
            BackfillRequest::new(Window::Days(3), ids(list), Granularity::Daily)
                .map(|r| r.coins().map(<[String]>::to_vec))
        };
        assert_eq!(
            asked(&["newcoin", "alpha", "newcoin", "alpha"]),
            Ok(ids(&["newcoin", "alpha"]))
        );
        assert_eq!(asked(&[]), Err(CoinsError::NoCoins), "not the default ones");
        assert_eq!(
            BackfillRequest::new(Window::Days(3), None, Granularity::Daily)
                .map(|r| r.coins().is_none()),
            Ok(true),
            "no list: the default ones"
        );
        assert_eq!(asked(&["", ""]), Err(CoinsError::Empty { position: 1 }));
        assert_eq!(
            asked(&["alpha", ""]),
            Err(CoinsError::Empty { position: 2 })
        );
        let err = asked(&["alpha", "be\0ta"]).unwrap_err();
        assert!(err.to_string().contains("number 2"), "{err}");
        for spaced in [" ", "bitcoin ", " ethereum"] {
            assert_eq!(
                asked(&["alpha", spaced]),
                Err(CoinsError::Spaces {
                    position: 2,
                    id: spaced.to_string()
                }),
                "{spaced:?}"
            );
        }
        assert!(
            asked(&[""]).unwrap_err().to_string().contains("empty"),
            "names the problem"
        );
    }

    #[test]
    fn window_for_days_ends_now_and_never_overflows() {
        assert_eq!(window_for_days(7, now()), (days_ago(7), now()));
        assert_eq!(window_for_days(u32::MAX, now()).0, DateTime::<Utc>::MIN_UTC);
    }
}
