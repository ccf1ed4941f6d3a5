//! After a live run commits: the feed's changes not yet on EventBridge, oldest first, put on the
//! bus a few calls at a time. The outbox cursor moves only past what EventBridge took, so a
//! process that dies, or a bus that cannot be reached, leaves the rest for the next run: at least
//! once, never lost. Publishing never fails the run; what it did goes in the summary.

use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::Instant;

use crate::eventbridge::{EventBus, PublishError};
use crate::feed::{put_events_calls, Event, Source};
use crate::store::{Store, StoreError};
use crate::summary::Summary;

/// The most events a run publishes: a backlog (an outage, a run that died before publishing)
/// drains over the next runs, 1,000 PutEvents calls a run at most.
pub const EVENTS_PER_RUN: u64 = 10_000;
/// Publishing starts no more calls after this long, whatever is left: a run must end well inside
/// the Lambda's timeout.
const PUBLISH_BUDGET: Duration = Duration::from_secs(10);
/// What a wave of calls in flight may take at worst (the client's timeout of a call, 6 s, and a
/// second): no wave starts with less than this left before the caller's deadline.
const WAVE_AT_WORST: Duration = Duration::from_secs(7);
/// PutEvents calls in flight together.
const CALLS_IN_FLIGHT: usize = 8;
/// Changes read from the feed at a time.
const READ: u32 = 1_000;

/// What to publish, from `EVENT_BUS_NAME` and `EVENTS_INCLUDE_BACKFILL`.
pub struct Events {
    pub bus: EventBus,
    pub include_backfill: bool,
}

#[derive(Debug, thiserror::Error)]
enum Failure {
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl Events {
    /// Publishes the backlog and notes in `summary` what it did (`events_published`,
    /// `events_backlog`, and `events_error` when a publish failed). `time_left`: before the
    /// caller's deadline (the Lambda's), when it has one.
    pub async fn publish(
        &self,
        store: &Store,
        summary: Summary,
        time_left: Option<Duration>,
    ) -> Summary {
        let budget = time_left.map_or(PUBLISH_BUDGET, |left| {
            PUBLISH_BUDGET.min(left.saturating_sub(WAVE_AT_WORST))
        });
        let mut published = 0;
        let mut error = self
            .publish_backlog(store, Instant::now() + budget, &mut published)
            .await
            .err()
            .map(|e| e.to_string());
        let backlog = match store.events_backlog(self.include_backfill).await {
            Ok(backlog) => backlog,
            Err(e) => {
                error.get_or_insert(e.to_string());
                0
            }
        };
        if let Some(error) = &error {
            tracing::warn!(%error, published, backlog, "events not all published: the backlog waits for the next run");
        }
        Summary {
            events_published: Some(published),
            events_backlog: Some(backlog),
            events_error: error,
            ..summary
        }
    }

    /// Publishes from the cursor on, starting no call after `stop`.
    async fn publish_backlog(
        &self,
        store: &Store,
        stop: Instant,
        published: &mut u64,
    ) -> Result<(), Failure> {
        let Some(mut cursor) = store.published_up_to().await? else {
            return Ok(());
        };
        while *published < EVENTS_PER_RUN && Instant::now() < stop {
            let changes = store.changes_after(cursor, READ).await?;
            let Some(last) = changes.last() else {
                return Ok(());
            };
            let room = (EVENTS_PER_RUN - *published) as usize;
            let wanted: Vec<Event> = changes
                .iter()
                .filter(|c| self.include_backfill || c.source == Source::Live)
                .take(room)
                .map(Event::of)
                .collect();
            // Read through the last change read, or through the last one taken when the run's
            // room ran out first.
            let read_through = match wanted.last() {
                Some(event) if wanted.len() == room => event.seq,
                _ => last.seq,
            };
            let calls = put_events_calls(wanted);
            let mut taken_through = cursor;
            let mut failure = None;
            let mut out_of_time = false;
            for wave in calls.chunks(CALLS_IN_FLIGHT) {
                if Instant::now() >= stop {
                    out_of_time = true;
                    break;
                }
                let results = join_all(wave.iter().map(|call| self.bus.put(call))).await;
                for (call, result) in wave.iter().zip(results) {
                    match result {
                        Ok(()) => {
                            *published += call.len() as u64;
                            if failure.is_none() {
                                taken_through = call.last().map_or(taken_through, |e| e.seq);
                            }
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
                if failure.is_some() {
                    break;
                }
            }
            if failure.is_none() && !out_of_time {
                taken_through = read_through;
            }
            if taken_through > cursor {
                store.published_through(taken_through).await?;
                cursor = taken_through;
            }
            if let Some(failure) = failure {
                return Err(failure.into());
            }
        }
        Ok(())
    }
}
