//! The PostgreSQL edge: connections, migrations, the run ledger, the set-based apply and the
//! reports, one concern a file.
//!
//! Every statement is parameterised, and the number of statements per run does not
//! depend on the number of coins: each table is written by one statement over arrays.

mod apply;
mod backfill;
mod connector;
mod error;
mod feed;
mod migrations;
mod params;
mod reports;
mod retention;
mod runs;

use std::time::Duration;

use tokio_postgres::{CancelToken, Client};

pub use apply::{Apply, HeldCoin, Written, RUN_LOCK};
pub use backfill::{
    BackfillCoins, BackfillJob, BackfillWindow, Claim, NewBackfill, PendingChunk, SeriesAround,
};
pub use connector::Connector;
use connector::LazyTls;
pub use error::StoreError;
pub use runs::{AbandonedRun, RunKind, LEASE_MARGIN};

pub struct Store {
    client: Client,
    /// The TLS of this connection, for the cancel request's own connection.
    tls: LazyTls,
}

/// Cancels the statement running on a connection, from a connection of its own.
pub(crate) struct Canceller {
    token: CancelToken,
    tls: LazyTls,
}

impl Canceller {
    /// Best effort: the caller fails either way; a cancel that cannot be sent is logged.
    async fn cancel(&self) {
        if let Err(e) = self.token.cancel_query(self.tls.clone()).await {
            tracing::warn!(error = %crate::error_chain::error_chain(&e), "could not cancel the statement");
        }
    }
}

impl Store {
    fn canceller(&self) -> Canceller {
        Canceller {
            token: self.client.cancel_token(),
            tls: self.tls.clone(),
        }
    }

    /// Whether the server still answers on this connection. A warm connection can have been
    /// ended while the function slept (a restart, a failover, an idle timeout) without the
    /// client having noticed yet: one empty round trip tells before a run relies on it.
    pub async fn is_alive(&self) -> bool {
        const PATIENCE: Duration = Duration::from_secs(5);
        !self.client.is_closed()
            && matches!(
                tokio::time::timeout(PATIENCE, self.client.batch_execute("")).await,
                Ok(Ok(()))
            )
    }
}
