//! Schema migrations: named SQL scripts applied once each, in order, recorded in
//! `souk_migrations`, so a server upgraded in place brings its database along.

use crate::{Db, Result, StoreError};

/// One schema change. Statements are separated by `;` and must be portable SQL.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Unique and stable forever, e.g. `chat_0001_init`.
    pub name: &'static str,
    pub sql: &'static str,
}

pub(crate) async fn apply(db: &Db, migrations: &[Migration]) -> Result<()> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS souk_migrations (name TEXT PRIMARY KEY, applied_at_ms BIGINT NOT NULL)",
    )
    .execute(db.writer())
    .await?;
    for migration in migrations {
        let failed = |source| StoreError::Migration {
            name: migration.name.to_owned(),
            source,
        };
        let mut tx = db.begin().await?;
        let done = sqlx::query(&db.sql("SELECT name FROM souk_migrations WHERE name = ?"))
            .bind(migration.name)
            .fetch_optional(&mut *tx)
            .await?;
        if done.is_some() {
            continue;
        }
        for statement in migration.sql.split(';').map(str::trim) {
            if !statement.is_empty() {
                sqlx::query(statement)
                    .execute(&mut *tx)
                    .await
                    .map_err(failed)?;
            }
        }
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        sqlx::query(&db.sql("INSERT INTO souk_migrations (name, applied_at_ms) VALUES (?, ?)"))
            .bind(migration.name)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        tracing::info!(migration = migration.name, "applied migration");
    }
    Ok(())
}
