//! The schema: embedded migrations, each applied in a transaction that holds a transaction-level
//! lock, so that processes starting together migrate once and no session state is left behind (RDS
//! Proxy pins a session that takes a session-level advisory lock).

use refinery::{Migration, SchemaVersion, Target};
use refinery_core::traits::r#async::{AsyncQuery, AsyncTransaction};
use refinery_core::AsyncMigrate;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_postgres::{SimpleQueryMessage, Transaction};

use super::error::{sqlstate_in, During, StoreError, APPLYING_MIGRATIONS};
use super::params::typed;
use super::Store;
use crate::error_chain::error_chain;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// refinery's table of applied migrations.
const HISTORY: &str = "refinery_schema_history";
/// The advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6367_6364_635f_6d67;

impl Store {
    /// Applies pending migrations; safe when several processes start at once. Returns the names
    /// of those applied (`V1__initial`, …), none when the schema was current.
    pub async fn migrate(&mut self) -> Result<Vec<String>, StoreError> {
        self.migrate_to(None).await
    }

    /// Applies migrations up to `version`, or all of them; returns the names of those applied.
    /// Each migration lands whole or not at all, in a transaction of its own (the early ones
    /// reuse names of `ON COMMIT DROP` tables), which holds the migration lock.
    pub async fn migrate_to(
        &mut self,
        version: Option<SchemaVersion>,
    ) -> Result<Vec<String>, StoreError> {
        let mut applied = Vec::new();
        while let Some(migration) = self.apply_next_migration(version).await? {
            tracing::info!(%migration, "migration applied");
            applied.push(migration);
        }
        Ok(applied)
    }

    /// The first pending migration up to `version`, applied and committed; `None` when none is
    /// pending.
    async fn apply_next_migration(
        &mut self,
        version: Option<SchemaVersion>,
    ) -> Result<Option<String>, StoreError> {
        let failed = |e: &(dyn std::error::Error + 'static)| {
            StoreError::new(
                APPLYING_MIGRATIONS,
                error_chain(e),
                sqlstate_in(e).as_ref(),
                None,
            )
        };
        let tx = self
            .client
            .transaction()
            .await
            .during("starting a migration")?;
        tx.execute_typed(
            "SELECT pg_advisory_xact_lock($1)",
            &[typed(&MIGRATION_LOCK)],
        )
        .await
        .during("waiting for the migration lock")?;
        let mut locked = Locked(tx);
        locked
            .execute([Locked::assert_migrations_table_query(HISTORY).as_str()].into_iter())
            .await
            .map_err(|e| failed(&e))?;
        let done: Vec<SchemaVersion> = locked
            .get_applied_migrations(HISTORY)
            .await
            .map_err(|e| failed(&e))?
            .iter()
            .map(Migration::version)
            .collect();
        let next = embedded::migrations::runner()
            .get_migrations()
            .iter()
            .map(Migration::version)
            .filter(|v| !done.contains(v) && version.is_none_or(|last| *v <= last))
            .min();
        let Some(next) = next else {
            return Ok(None);
        };
        let report = embedded::migrations::runner()
            .set_target(Target::Version(next))
            .run_async(&mut locked)
            .await
            .map_err(|e| failed(&e))?;
        locked.0.commit().await.during("committing a migration")?;
        Ok(report.applied_migrations().first().map(ToString::to_string))
    }
}

/// refinery's runner on our transaction: its statements go as simple queries (no prepared
/// statement) and its commits are ours, once, at the end.
struct Locked<'a>(Transaction<'a>);

#[derive(Debug, thiserror::Error)]
enum MigrationError {
    /// Not transparent: the SQLSTATE is looked up on this error's source.
    #[error("the statement failed")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("refinery_schema_history holds {0}")]
    History(String),
}

impl AsyncTransaction for Locked<'_> {
    type Error = MigrationError;

    async fn execute<'a, T: Iterator<Item = &'a str> + Send + 'a>(
        &'a mut self,
        queries: T,
    ) -> Result<usize, Self::Error> {
        let mut count = 0;
        for query in queries {
            self.0.batch_execute(query).await?;
            count += 1;
        }
        Ok(count)
    }
}

impl AsyncQuery<Vec<Migration>> for Locked<'_> {
    async fn query<'a>(&'a mut self, query: &'a str) -> Result<Vec<Migration>, Self::Error> {
        let mut applied = Vec::new();
        for message in self.0.simple_query(query).await? {
            let SimpleQueryMessage::Row(row) = message else {
                continue;
            };
            let field = |i: usize| row.get(i).unwrap_or_default();
            let unreadable = || {
                MigrationError::History(format!(
                    "an unreadable row: {:?}",
                    (field(0), field(1), field(2), field(3))
                ))
            };
            applied.push(Migration::applied(
                field(0).parse().map_err(|_| unreadable())?,
                field(1).to_string(),
                OffsetDateTime::parse(field(2), &Rfc3339).map_err(|_| unreadable())?,
                field(3).parse().map_err(|_| unreadable())?,
            ));
        }
        Ok(applied)
    }
}

impl AsyncMigrate for Locked<'_> {}
