//! The schema: embedded migrations, applied under a lock so that processes starting together
//! migrate once.

use refinery::{SchemaVersion, Target};

use super::error::{sqlstate_in, During, StoreError, APPLYING_MIGRATIONS};
use super::Store;
use crate::error_chain::error_chain;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// The advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6367_6364_635f_6d67;

impl Store {
    /// Applies pending migrations; safe when several processes start at once. Returns the names
    /// of those applied (`V1__initial`, …), none when the schema was current.
    pub async fn migrate(&mut self) -> Result<Vec<String>, StoreError> {
        self.migrate_to(None).await
    }

    /// Applies migrations up to `version`, or all of them; returns the names of those applied.
    pub async fn migrate_to(
        &mut self,
        version: Option<SchemaVersion>,
    ) -> Result<Vec<String>, StoreError> {
        self.client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .during("waiting for the migration lock")?;
        let target = version.map_or(Target::Latest, Target::Version);
        let outcome = embedded::migrations::runner()
            .set_target(target)
            .run_async(&mut self.client)
            .await;
        self.client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .during("releasing the migration lock")?;
        let report = outcome.map_err(|e| {
            let code = sqlstate_in(&e);
            StoreError::new(APPLYING_MIGRATIONS, error_chain(&e), code.as_ref(), None)
        })?;
        let applied: Vec<String> = report
            .applied_migrations()
            .iter()
            .map(ToString::to_string)
            .collect();
        for migration in &applied {
            tracing::info!(%migration, "migration applied");
        }
        Ok(applied)
    }
}
