//! What the command line and the Lambda both run: built once, then one run per trigger.
//!
//! Everything costly is built once and borrowed by every run: the HTTP client with the process's
//! verifying TLS setup (at the Lambda's cold start; verify-full connections share it), the
//! database's own TLS setup when its mode needs one (at its first handshake), the secret (cached
//! with a TTL) and the connection (opened again only when it has closed).

use std::time::Duration;

use serde::Serialize;
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::backfill::{Backfill, BackfillError, BackfillRequest};
use crate::config::Config;
use crate::database::{ConnectError, Database};
use crate::eventbridge::EventBus;
use crate::ingest::{Ingest, Outcome, RunError, Source};
use crate::publish::Events;
use crate::replay::RecordedAnswer;
use crate::secrets::{parse_api_key, SecretSource};
use crate::store::{Store, StoreError};
use crate::summary::{BackfillSummary, Summary};
use crate::trigger::Request;

/// What a request did: the run's summary, what a migrate request applied, or the backfill
/// invocation's summary. The Lambda function's result, and what `run --event` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Response {
    Run(Summary),
    Migrated(Migrated),
    Backfill(BackfillSummary),
}

/// `{"status": "migrated", "applied": ["V1__initial", …]}`; `applied` is empty when the schema
/// was already current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename = "migrated")]
pub struct Migrated {
    pub applied: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Migrate(#[from] StoreError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Backfill(#[from] BackfillError),
}

pub struct App<S> {
    ingest: Ingest,
    database: Database<S>,
    auto_migrate: bool,
    /// Where live runs publish their changes, when `EVENT_BUS_NAME` names a bus.
    events: Option<Events>,
    /// The warm connection, and whether this process has already migrated.
    store: Mutex<(Option<Store>, bool)>,
}

impl<S: SecretSource> App<S> {
    /// Builds the clients from the configuration; fetches the CoinGecko key if it is a secret.
    pub async fn new(config: Config, secrets: S) -> anyhow::Result<Self> {
        let mut coingecko = config.coingecko;
        if let Some(secret_id) = &config.api_key_secret_id {
            let text = secrets.secret_string(secret_id).await?;
            coingecko.api_key = Some(parse_api_key(secret_id, &text)?);
        }
        let events = match config.events {
            Some(events) => Some(Events {
                bus: EventBus::new(secrets.aws_config().get().await, &events.bus),
                include_backfill: events.include_backfill,
            }),
            None => None,
        };
        Ok(Self {
            ingest: Ingest::new(coingecko, config.ingest)?,
            database: Database::new(&config.database, secrets)?,
            auto_migrate: config.auto_migrate,
            events,
            store: Mutex::new((None, false)),
        })
    }

    /// The ingest, to adjust how it reports before the first run.
    pub fn ingest_mut(&mut self) -> &mut Ingest {
        &mut self.ingest
    }

    /// Does what an event asks for (see [`crate::trigger::request`]), within `time_left` when the
    /// caller has a deadline.
    pub async fn serve(
        &self,
        request: Request,
        time_left: Option<Duration>,
    ) -> Result<Response, AppError> {
        Ok(match request {
            Request::Migrate => Response::Migrated(Migrated {
                applied: self.migrate().await?,
            }),
            Request::Run { trigger_id } => Response::Run(self.run(trigger_id, time_left).await?),
            Request::Backfill(request) => {
                Response::Backfill(self.backfill(&request, time_left).await?)
            }
        })
    }

    /// One run on the warm connection, reconnecting first if it has died; `time_left` bounds
    /// it when the caller has a deadline (the Lambda's).
    pub async fn run(
        &self,
        trigger_id: Option<String>,
        time_left: Option<Duration>,
    ) -> Result<Summary, AppError> {
        self.run_from(trigger_id, Source::Live { time_left }).await
    }

    /// One run that applies a recorded answer as of its time, under the answer's trigger id.
    pub async fn replay(&self, answer: &RecordedAnswer) -> Result<Summary, AppError> {
        self.run_from(Some(answer.trigger_id.clone()), Source::Recorded(answer))
            .await
    }

    /// One backfill invocation on the warm connection, within `time_left` (the Lambda's) or
    /// `FETCH_BUDGET_SECS`.
    pub async fn backfill(
        &self,
        request: &BackfillRequest,
        time_left: Option<Duration>,
    ) -> Result<BackfillSummary, AppError> {
        let mut guard = self.store.lock().await;
        let (slot, migrated) = &mut *guard;
        let store = self.ready(slot, migrated).await?;
        let backfill = Backfill {
            coingecko: self.ingest.coingecko(),
            settings: self.ingest.settings(),
        };
        Ok(backfill.run(store, request, time_left).await?)
    }

    async fn run_from(
        &self,
        trigger_id: Option<String>,
        source: Source<'_>,
    ) -> Result<Summary, AppError> {
        let mut guard = self.store.lock().await;
        let (slot, migrated) = &mut *guard;
        let store = self.ready(slot, migrated).await?;
        // Runs of one app take turns (the lock above): the calls sent meanwhile are this run's.
        let calls_before = self.ingest.coingecko().calls_sent();
        let started = tokio::time::Instant::now();
        let live = match source {
            Source::Live { time_left } => Some(time_left),
            Source::Recorded(_) => None,
        };
        match self.ingest.run(store, trigger_id, source).await? {
            // Live runs publish, after their commit (replays leave their changes to the next).
            Outcome::Finished(summary) => Ok(match (&self.events, live) {
                (Some(events), Some(time_left)) => {
                    let time_left = time_left.map(|left| left.saturating_sub(started.elapsed()));
                    events.publish(store, summary, time_left).await
                }
                _ => summary,
            }),
            Outcome::Failed { run_id, error } => {
                let calls = self
                    .ingest
                    .coingecko()
                    .calls_sent()
                    .saturating_sub(calls_before);
                self.record_failure(slot, run_id, &error, calls).await;
                Err(AppError::Run(error))
            }
        }
    }

    /// The warm connection, migrated once a process when `AUTO_MIGRATE` says so.
    async fn ready<'a>(
        &self,
        slot: &'a mut Option<Store>,
        migrated: &mut bool,
    ) -> Result<&'a mut Store, AppError> {
        let store = self.warm(slot).await?;
        if self.auto_migrate && !*migrated {
            store.migrate().await?;
            *migrated = true;
        }
        Ok(store)
    }

    /// The warm connection, or a new one in its place when it has died.
    async fn warm<'a>(&self, slot: &'a mut Option<Store>) -> Result<&'a mut Store, ConnectError> {
        Ok(match slot.take() {
            Some(store) if store.is_alive().await => slot.insert(store),
            _ => slot.insert(self.database.connect().await?),
        })
    }

    /// Marks a started run failed, with the calls it made, on a new connection when the run's
    /// died with it. The run's error is what the caller sees: a failure to record it is only logged.
    async fn record_failure(
        &self,
        slot: &mut Option<Store>,
        run_id: Uuid,
        error: &RunError,
        calls: u64,
    ) {
        match self.warm(slot).await {
            Ok(store) => {
                if let Err(e) = store.fail_run(run_id, &error.to_string(), calls).await {
                    tracing::warn!(%run_id, error = %e, "could not record the failure");
                }
            }
            Err(e) => {
                tracing::warn!(%run_id, error = %e, "could not reconnect to record the failure")
            }
        }
    }

    /// A connection of its own, for reading (status, charts).
    pub async fn connect(&self) -> Result<Store, ConnectError> {
        self.database.connect().await
    }

    /// Applies the migrations, whatever `AUTO_MIGRATE` says; returns the names of those applied.
    pub async fn migrate(&self) -> Result<Vec<String>, AppError> {
        Ok(self.database.connect().await?.migrate().await?)
    }
}
