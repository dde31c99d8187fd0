//! Least privilege (issue 16, finding 6a): the migrations run as the
//! tables' owner, the service as a role that can read and write the data
//! but cannot alter a table, switch off the audit log's triggers, or
//! update or delete an audit event. [`PgStore::grant_service_role`] gives
//! such a role exactly that; [`PgStore::runs_as_owner`] tells a service
//! that it holds more (the server warns at start).
//!
//! A database owner can still do anything: that is what the audit tags
//! are for (`echorelay_core::audit::AuditKeys`), which need `SECRET_KEY`,
//! not database rights.

use crate::{PgError, PgStore};

/// A role name this module will put into SQL: 1 to 63 characters of
/// lowercase ASCII letters, digits and `_`, not starting with a digit.
fn checked_role(role: &str) -> Result<&str, PgError> {
    let ok = (1..=63).contains(&role.len())
        && role
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !role.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(role)
    } else {
        Err(PgError::InvalidRole)
    }
}

/// `ident` as a quoted SQL identifier.
fn quoted(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The statements [`PgStore::grant_service_role`] runs, for `role` on the
/// tables of `schema`.
pub fn service_role_sql(schema: &str, role: &str) -> Result<Vec<String>, PgError> {
    let (s, r) = (quoted(schema), quoted(checked_role(role)?));
    Ok(vec![
        format!("GRANT USAGE ON SCHEMA {s} TO {r}"),
        // Every table, the queue's jobs included (enqueue inserts;
        // reserve, nack, extend and redrive update; ack and purge delete).
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}"),
        // The key cache's invalidation counter (nextval).
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA {s} TO {r}"),
        // The service checks the migrations, never runs them.
        format!("REVOKE INSERT, UPDATE, DELETE ON {s}._sqlx_migrations FROM {r}"),
        // Append-only for the service by permission too, not only by trigger.
        format!("REVOKE UPDATE, DELETE ON {s}.audit_events FROM {r}"),
        // Appends move a chain's head; nothing deletes one.
        format!("REVOKE DELETE ON {s}.audit_heads FROM {r}"),
    ])
}

impl PgStore {
    /// Run as the tables' owner, after the migrations: lets the existing
    /// login role `role` use this store's schema as the service does and
    /// nothing more ([`service_role_sql`]): no DDL (so no `ALTER TABLE …
    /// DISABLE TRIGGER`), no `UPDATE`/`DELETE`/`TRUNCATE` on
    /// `audit_events`, no `DELETE`/`TRUNCATE` on `audit_heads`. Idempotent.
    ///
    /// # Errors
    /// [`PgError::InvalidRole`] for a name outside `[a-z_][a-z0-9_]{0,62}`;
    /// [`PgError::Query`] if the grants fail (not the owner, no such role).
    pub async fn grant_service_role(&self, role: &str) -> Result<(), PgError> {
        let schema: String = sqlx::query_scalar("SELECT current_schema()")
            .fetch_one(self.pool())
            .await
            .map_err(PgError::Query)?;
        let mut tx = self.pool().begin().await.map_err(PgError::Query)?;
        for statement in service_role_sql(&schema, role)? {
            sqlx::query(&statement)
                .execute(&mut *tx)
                .await
                .map_err(PgError::Query)?;
        }
        tx.commit().await.map_err(PgError::Query)
    }

    /// Whether this store's role can rewrite the audit log with SQL: it is
    /// a superuser, or a member of the role that owns `audit_events`
    /// (owners can switch triggers off). A service should not: see
    /// [`PgStore::grant_service_role`].
    ///
    /// # Errors
    /// [`PgError::Query`] if the catalog cannot be read.
    pub async fn runs_as_owner(&self) -> Result<bool, PgError> {
        sqlx::query_scalar(
            "SELECT COALESCE((SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = current_user), false) \
                 OR COALESCE((SELECT pg_has_role(current_user, tableowner, 'MEMBER') \
                    FROM pg_catalog.pg_tables \
                    WHERE schemaname = current_schema() AND tablename = 'audit_events'), false)",
        )
        .fetch_one(self.pool())
        .await
        .map_err(PgError::Query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_checked_before_they_reach_sql() {
        for bad in [
            "",
            "1svc",
            "Svc",
            "svc; DROP TABLE x",
            "s\"vc",
            &"a".repeat(64),
        ] {
            assert!(
                matches!(service_role_sql("public", bad), Err(PgError::InvalidRole)),
                "{bad}"
            );
        }
        let sql = service_role_sql("we\"ird", "echorelay_svc").unwrap();
        assert!(
            sql[0].contains("SCHEMA \"we\"\"ird\" TO \"echorelay_svc\""),
            "{sql:?}"
        );
        assert!(
            sql.iter()
                .any(|s| s.contains("REVOKE UPDATE, DELETE ON \"we\"\"ird\".audit_events"))
        );
    }
}
