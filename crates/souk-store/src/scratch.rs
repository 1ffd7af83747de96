//! Throw-away PostgreSQL databases for tests and benchmarks: created fresh, dropped after.
//!
//! They are made with `psql`, so dropping one needs no async runtime.

use std::process::Command;

/// The server to make scratch databases on: `SOUK_TEST_POSTGRES`, else the local one.
pub fn postgres_base() -> String {
    std::env::var("SOUK_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn psql(base: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args([
            &format!("{base}/postgres"),
            "-v",
            "ON_ERROR_STOP=1",
            "-qc",
            sql,
        ])
        .output()
        .map_err(|e| format!("running psql: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A database that exists for as long as this value.
pub struct PgScratch {
    base: String,
    name: String,
}

impl PgScratch {
    /// Creates `<prefix>_<pid>_<n>` on `base` (e.g. `postgres://postgres@127.0.0.1:5432`).
    pub fn create(base: &str, prefix: &str) -> Result<PgScratch, String> {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("{prefix}_{}_{n}", std::process::id());
        psql(base, &format!("CREATE DATABASE {name}")).map_err(|e| {
            format!("creating a scratch database on {base} (is PostgreSQL running?): {e}")
        })?;
        Ok(PgScratch {
            base: base.to_owned(),
            name,
        })
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.base, self.name)
    }
}

impl Drop for PgScratch {
    fn drop(&mut self) {
        let _ = psql(
            &self.base,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        );
    }
}
