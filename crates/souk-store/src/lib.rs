//! Durable storage: one connection handle over SQLite (the embedded default) or
//! PostgreSQL (when a deployment outgrows one machine).
//!
//! Callers write portable SQL once, with `?` placeholders, and [`Db::sql`] renders it for
//! the backend in use. Keeping to the common subset (TEXT, BIGINT, `ON CONFLICT`,
//! `RETURNING`) is cheaper than a query builder and lets the same tests run on both.
//!
//! SQLite allows one writer at a time. Rather than let writers collide and retry on
//! `SQLITE_BUSY`, writes go through a one-connection pool (a queue), and reads use a
//! separate pool that WAL mode lets run beside the writer.

mod migrate;
pub mod outbox;
pub mod scratch;

use std::borrow::Cow;
use std::path::Path;
use std::time::Duration;

use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor};

pub use migrate::Migration;
pub use sqlx::{Any, Row, Transaction};

/// Which SQL engine a [`Db`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// How hard SQLite works to keep a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SqliteSync {
    /// A commit survives the process being killed, not the machine losing power (WAL
    /// with `synchronous=NORMAL`).
    #[default]
    Normal,
    /// A commit also survives power loss: the WAL is fsynced at every commit.
    Full,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("unsupported database URL '{0}': use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("migration '{name}' failed: {source}")]
    Migration { name: String, source: sqlx::Error },
}

impl StoreError {
    /// True when a unique constraint refused a row (a concurrent duplicate).
    pub fn is_unique_violation(&self) -> bool {
        match self {
            StoreError::Sql(sqlx::Error::Database(e)) => e.is_unique_violation(),
            _ => false,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    backend: Backend,
    write: AnyPool,
    read: AnyPool,
}

impl Db {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub async fn open_sqlite(path: &Path, sync: SqliteSync) -> Result<Db> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Sql(sqlx::Error::Configuration(
                    format!("creating {}: {e}", dir.display()).into(),
                ))
            })?;
        }
        let url = format!("sqlite://{}?mode=rwc", path.display());
        Self::open(&url, sync).await
    }

    /// Opens a database by URL: `sqlite://PATH` or `postgres://USER@HOST/DB`, with the
    /// store's own tables (the outbox) in place.
    pub async fn open(url: &str, sync: SqliteSync) -> Result<Db> {
        let db = Self::connect(url, sync).await?;
        db.migrate(outbox::MIGRATIONS).await?;
        Ok(db)
    }

    async fn connect(url: &str, sync: SqliteSync) -> Result<Db> {
        sqlx::any::install_default_drivers();
        if url.starts_with("sqlite:") {
            let synchronous = match sync {
                SqliteSync::Normal => "NORMAL",
                SqliteSync::Full => "FULL",
            };
            let pragmas = format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;"
            );
            let options = |max: u32| {
                let pragmas = pragmas.clone();
                AnyPoolOptions::new()
                    .max_connections(max)
                    .acquire_timeout(Duration::from_secs(30))
                    .after_connect(move |conn, _| {
                        let pragmas = pragmas.clone();
                        Box::pin(async move {
                            conn.execute(pragmas.as_str()).await?;
                            Ok(())
                        })
                    })
            };
            let write = options(1).connect(url).await?;
            let read = options(4).connect(url).await?;
            Ok(Db {
                backend: Backend::Sqlite,
                write,
                read,
            })
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let pool = AnyPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(30))
                .connect(url)
                .await?;
            Ok(Db {
                backend: Backend::Postgres,
                write: pool.clone(),
                read: pool,
            })
        } else {
            Err(StoreError::UnsupportedUrl(url.to_owned()))
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Renders portable SQL (with `?` placeholders) for this backend.
    pub fn sql<'a>(&self, portable: &'a str) -> Cow<'a, str> {
        match self.backend {
            Backend::Sqlite => Cow::Borrowed(portable),
            Backend::Postgres => Cow::Owned(numbered_placeholders(portable)),
        }
    }

    /// The pool for statements that write.
    pub fn writer(&self) -> &AnyPool {
        &self.write
    }

    /// The pool for reads; on SQLite these run beside the writer.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// Starts a write transaction.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>> {
        Ok(self.write.begin().await?)
    }

    /// Applies the migrations not applied yet, each in its own transaction, in order.
    pub async fn migrate(&self, migrations: &[Migration]) -> Result<()> {
        migrate::apply(self, migrations).await
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// `a = ? AND b = ?` becomes `a = $1 AND b = $2`. Portable SQL never has `?` inside a
/// string literal, so a plain scan is enough.
fn numbered_placeholders(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for ch in sql.chars() {
        if ch == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(ch);
        }
    }
    out
}

/// Reads a column that the schema declares NOT NULL BIGINT.
pub fn int(row: &AnyRow, column: &str) -> Result<i64> {
    Ok(row.try_get::<i64, _>(column)?)
}

/// Reads a column that the schema declares NOT NULL TEXT.
pub fn text(row: &AnyRow, column: &str) -> Result<String> {
    Ok(row.try_get::<String, _>(column)?)
}

/// Reads a nullable TEXT column.
pub fn opt_text(row: &AnyRow, column: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<String>, _>(column)?)
}

/// Reads a nullable BIGINT column.
pub fn opt_int(row: &AnyRow, column: &str) -> Result<Option<i64>> {
    Ok(row.try_get::<Option<i64>, _>(column)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(
            numbered_placeholders("SELECT * FROM t WHERE a = ? AND b IN (?, ?)"),
            "SELECT * FROM t WHERE a = $1 AND b IN ($2, $3)"
        );
        assert_eq!(numbered_placeholders("SELECT 1"), "SELECT 1");
    }

    #[tokio::test]
    async fn sqlite_round_trip_and_migrations_apply_once() {
        let dir = std::env::temp_dir().join(format!("souk-store-test-{}", std::process::id()));
        let db = Db::open_sqlite(&dir.join("t.db"), SqliteSync::Normal)
            .await
            .unwrap();
        let migrations = [Migration {
            name: "test_0001",
            sql: "CREATE TABLE kv (k TEXT PRIMARY KEY, v BIGINT NOT NULL)",
        }];
        db.migrate(&migrations).await.unwrap();
        db.migrate(&migrations).await.unwrap();
        sqlx::query(&db.sql("INSERT INTO kv (k, v) VALUES (?, ?)"))
            .bind("a")
            .bind(7i64)
            .execute(db.writer())
            .await
            .unwrap();
        let err = sqlx::query(&db.sql("INSERT INTO kv (k, v) VALUES (?, ?)"))
            .bind("a")
            .bind(8i64)
            .execute(db.writer())
            .await
            .map_err(StoreError::from)
            .unwrap_err();
        assert!(err.is_unique_violation());
        let row = sqlx::query(&db.sql("SELECT v FROM kv WHERE k = ?"))
            .bind("a")
            .fetch_one(db.reader())
            .await
            .unwrap();
        assert_eq!(int(&row, "v").unwrap(), 7);
        db.close().await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
