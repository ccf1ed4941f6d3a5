//! What a database failure says: what was being done, PostgreSQL's SQLSTATE, and what to do.

use tokio_postgres::error::SqlState;

use crate::error_chain::error_chain;

/// What a migration failure says it was doing; its advice depends on it.
pub(super) const APPLYING_MIGRATIONS: &str = "applying migrations";

/// A database failure, with what was being done and PostgreSQL's SQLSTATE when it sent one.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL, {action}: {detail}")]
pub struct StoreError {
    pub action: &'static str,
    pub detail: String,
    pub sqlstate: Option<String>,
}

pub(super) trait During<T> {
    fn during(self, action: &'static str) -> Result<T, StoreError>;
}

impl<T> During<T> for Result<T, tokio_postgres::Error> {
    fn during(self, action: &'static str) -> Result<T, StoreError> {
        self.map_err(|e| match e.as_db_error() {
            Some(db) => {
                StoreError::new(action, db.message().to_string(), Some(db.code()), db.hint())
            }
            None => StoreError::new(action, error_chain(&e), None, None),
        })
    }
}

impl StoreError {
    /// `detail`, then the SQLSTATE, PostgreSQL's hint and, where an operator can fix it, what to do.
    pub(super) fn new(
        action: &'static str,
        mut detail: String,
        code: Option<&SqlState>,
        hint: Option<&str>,
    ) -> Self {
        if let Some(code) = code {
            detail.push_str(&format!(" (SQLSTATE {})", code.code()));
        }
        if let Some(hint) = hint {
            detail.push_str(&format!("; hint: {hint}"));
        }
        if let Some(advice) = code.and_then(|code| advice(action, code)) {
            detail.push_str("; ");
            detail.push_str(advice);
        }
        StoreError {
            action,
            detail,
            sqlstate: code.map(|c| c.code().to_string()),
        }
    }
}

/// What to do about the failures an operator can fix, given what was being done: an SQLSTATE can
/// mean different things (42501 is also the append-only refusal of `price_history`).
fn advice(action: &str, code: &SqlState) -> Option<&'static str> {
    Some(match *code {
        SqlState::INSUFFICIENT_PRIVILEGE if action == APPLYING_MIGRATIONS => {
            "this role may not change the schema (the least-privilege ingest role may not): deploy with AUTO_MIGRATE=false (template parameter AutoMigrate=false) and run the migrations as the owner: `coingecko-cdc migrate` with the owner's DATABASE_URL, or invoke the function once with events/migrate.json using the owner's credentials (DbSecretArn naming the owner's secret)"
        }
        SqlState::UNDEFINED_TABLE => {
            "the schema is missing: run `coingecko-cdc migrate` or leave AUTO_MIGRATE on"
        }
        // Our statements call only built-ins and the schema's own functions.
        SqlState::UNDEFINED_FUNCTION => {
            "the schema is older than this release (a function it needs is missing): run `coingecko-cdc migrate` or leave AUTO_MIGRATE on"
        }
        SqlState::READ_ONLY_SQL_TRANSACTION => {
            "the database accepts no writes: point DB_HOST (or the secret's host) at the primary (writer) endpoint, not a replica, or wait for the failover to finish"
        }
        SqlState::DISK_FULL => {
            "the database server's disk is full: free space (old raw pages: RAW_RETENTION_DAYS) or grow the storage"
        }
        _ => return None,
    })
}

/// PostgreSQL's SQLSTATE, when a failure of another library came from one.
pub(super) fn sqlstate_in(error: &(dyn std::error::Error + 'static)) -> Option<SqlState> {
    let mut source = Some(error);
    while let Some(cause) = source {
        if let Some(code) = cause
            .downcast_ref::<tokio_postgres::Error>()
            .and_then(tokio_postgres::Error::code)
        {
            return Some(code.clone());
        }
        source = cause.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insufficient_privilege_is_put_down_to_the_role_only_during_migrations() {
        let denied = Some(&SqlState::INSUFFICIENT_PRIVILEGE);
        let migrating = StoreError::new(
            APPLYING_MIGRATIONS,
            "permission denied for schema public".into(),
            denied,
            None,
        );
        for advice in [
            "(SQLSTATE 42501)",
            "may not change the schema",
            "AUTO_MIGRATE=false",
            "AutoMigrate=false",
            "`coingecko-cdc migrate`",
            "events/migrate.json",
        ] {
            assert!(migrating.detail.contains(advice), "{advice}: {migrating}");
        }
        // The append-only trigger of price_history refuses with the same SQLSTATE.
        let appending = StoreError::new(
            "writing coins, quotes and price_points",
            "price_history is append-only: UPDATE is refused".into(),
            denied,
            Some("history rows are never changed or removed"),
        );
        assert_eq!(
            appending.detail,
            "price_history is append-only: UPDATE is refused (SQLSTATE 42501); hint: history rows are never changed or removed"
        );
    }
}
