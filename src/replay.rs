//! Replaying recorded `/coins/markets` answers as runs. Pure: no I/O.
//!
//! A recorded answer carries its own time (the newest `last_updated` in it) and its own trigger
//! id (that time and a digest of the bytes), so a replay applies the answers in the order they
//! were recorded, and replaying the same answers again is a duplicate of every run: it adds nothing.

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::market::{parse_page, Market};
use crate::summary::{RunState, Summary};

/// Hex digits of the answer's SHA-256 kept in its trigger id: 64 bits tell answers apart.
const DIGEST_HEX_DIGITS: usize = 16;

/// A recorded answer that cannot be replayed, named by its file.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problem}")]
pub struct AnswerError {
    pub file: String,
    pub problem: String,
}

/// One recorded answer, ready to be applied as a run.
#[derive(Debug)]
pub struct RecordedAnswer {
    pub file: String,
    /// When CoinGecko produced the answer: its newest `last_updated`.
    pub recorded_at: DateTime<Utc>,
    pub trigger_id: String,
    pub market: Market,
}

/// Reads the answer stored in `file`: `body` is its text, decompressed.
pub fn recorded_answer(file: &str, body: &str) -> Result<RecordedAnswer, AnswerError> {
    let error = |problem: String| AnswerError {
        file: file.to_string(),
        problem,
    };
    let page = parse_page(body).map_err(|e| error(format!("not a /coins/markets answer: {e}")))?;
    let mut market = Market::new(None);
    market.add_page(page, Utc::now());
    market.complete();
    let recorded_at = market
        .quotes()
        .filter_map(|q| q.source_updated_at)
        .max()
        .ok_or_else(|| {
            error("no coin in it has a last_updated, so when it was recorded is unknown".into())
        })?;
    let digest = hex(&Sha256::digest(body.as_bytes()));
    let trigger_id = format!(
        "replay:{}:{}",
        recorded_at.to_rfc3339_opts(SecondsFormat::Secs, true),
        &digest[..DIGEST_HEX_DIGITS]
    );
    Ok(RecordedAnswer {
        file: file.to_string(),
        recorded_at,
        trigger_id,
        market,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a whole replay did: the runs' counts added up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    pub files: u64,
    /// Runs applied now.
    pub succeeded: u64,
    /// Answers that had been replayed before: nothing applied.
    pub duplicate: u64,
    pub first_recorded_at: Option<DateTime<Utc>>,
    pub last_recorded_at: Option<DateTime<Utc>>,
    /// Sums over the runs applied now, as in a run's summary.
    pub fetched: u64,
    pub rejected: u64,
    pub upserted: u64,
    pub history_inserted: u64,
    pub unchanged: u64,
    pub out_of_order: u64,
    pub outside_retention: u64,
    pub duration_ms: u64,
}

impl ReplaySummary {
    /// Adds the run that replayed the answer recorded at `recorded_at`.
    pub fn add(&mut self, recorded_at: DateTime<Utc>, run: &Summary) {
        self.files += 1;
        self.first_recorded_at = Some(
            self.first_recorded_at
                .map_or(recorded_at, |t| t.min(recorded_at)),
        );
        self.last_recorded_at = Some(
            self.last_recorded_at
                .map_or(recorded_at, |t| t.max(recorded_at)),
        );
        if run.status == RunState::Duplicate {
            self.duplicate += 1;
            return;
        }
        self.succeeded += 1;
        self.fetched += run.fetched;
        self.rejected += run.rejected;
        self.upserted += run.upserted;
        self.history_inserted += run.history_inserted;
        self.unchanged += run.unchanged;
        self.out_of_order += run.out_of_order;
        self.outside_retention += run.outside_retention;
        self.duration_ms += run.duration_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::{Counts, Requests, Timings};
    use uuid::Uuid;

    const ANSWER: &str = r#"[
        {"id":"bitcoin","symbol":"btc","name":"Bitcoin","current_price":42409,"last_updated":"2024-01-01T00:45:51.995Z"},
        {"id":"ethereum","symbol":"eth","name":"Ethereum","current_price":2292.69,"last_updated":"2024-01-01T00:46:02.101Z"},
        {"id":"stale","symbol":"st","name":"Stale","current_price":1,"last_updated":"2023-12-20T10:00:00.000Z"}
    ]"#;

    #[test]
    fn an_answer_is_as_recent_as_its_newest_last_updated() {
        let answer = recorded_answer("markets-2024-01-01.json", ANSWER).unwrap();
        assert_eq!(
            answer.recorded_at.to_rfc3339(),
            "2024-01-01T00:46:02.101+00:00"
        );
        assert_eq!(answer.market.len(), 3);
        assert!(
            answer
                .trigger_id
                .starts_with("replay:2024-01-01T00:46:02Z:"),
            "{}",
            answer.trigger_id
        );
    }

    #[test]
    fn the_trigger_id_follows_the_bytes_not_the_file_name() {
        let a = recorded_answer("a.json", ANSWER).unwrap();
        let renamed = recorded_answer("b.json", ANSWER).unwrap();
        let changed = recorded_answer("a.json", &ANSWER.replace("42409", "42410")).unwrap();
        assert_eq!(a.trigger_id, renamed.trigger_id);
        assert_ne!(a.trigger_id, changed.trigger_id);
        assert_eq!(a.recorded_at, changed.recorded_at);
    }

    #[test]
    fn an_answer_without_a_time_or_not_an_answer_names_the_file() {
        let timeless = r#"[{"id":"bitcoin","current_price":1}]"#;
        for (body, expected) in [
            (timeless, "no coin in it has a last_updated"),
            (
                r#"{"status":{"error_code":429}}"#,
                "not a /coins/markets answer",
            ),
            ("[", "not a /coins/markets answer"),
        ] {
            let error = recorded_answer("day.json.gz", body)
                .unwrap_err()
                .to_string();
            assert!(error.starts_with("day.json.gz: "), "{error}");
            assert!(error.contains(expected), "{error}");
        }
    }

    fn run(status: RunState, history_inserted: u64) -> Summary {
        let mut summary = Summary::succeeded(
            Uuid::nil(),
            None,
            vec![Counts {
                vs_currency: "usd".into(),
                fetched: 100,
                rejected: 1,
                upserted: 60,
                history_inserted,
                out_of_order: 0,
                unrequested: 0,
                outside_retention: 0,
            }],
            Requests { pages: 1, calls: 1 },
            Timings {
                duration: std::time::Duration::from_millis(20),
                ..Timings::default()
            },
        );
        summary.status = status;
        summary
    }

    #[test]
    fn the_replay_adds_up_the_runs_it_applied_and_counts_duplicates_apart() {
        let day = |d: u32| {
            "2024-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
                + chrono::Duration::days(d.into())
        };
        let mut replay = ReplaySummary::default();
        replay.add(day(1), &run(RunState::Succeeded, 100 - 1));
        replay.add(day(0), &run(RunState::Duplicate, 7));
        replay.add(day(2), &run(RunState::Succeeded, 9));
        assert_eq!(
            (replay.files, replay.succeeded, replay.duplicate),
            (3, 2, 1)
        );
        assert_eq!(
            (replay.first_recorded_at, replay.last_recorded_at),
            (Some(day(0)), Some(day(2)))
        );
        assert_eq!(replay.history_inserted, 99 + 9);
        assert_eq!(
            replay.fetched,
            replay.rejected + replay.history_inserted + replay.unchanged
        );
        assert_eq!(replay.duration_ms, 40);
    }
}
