//! A durable outbox: messages for other systems (webhooks, push notifications), written in
//! the same transaction as the change they announce, and delivered by a worker until the
//! receiver accepts them. A crash can delay a message but never lose it; delivery is at
//! least once, so each message carries an `id` to deduplicate by.

use sqlx::{Any, Transaction};

use crate::{int, text, Db, Migration, Result};

pub(crate) const MIGRATIONS: &[Migration] = &[Migration {
    name: "store_0001_outbox",
    sql: "
CREATE TABLE souk_outbox (
    id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_ms BIGINT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX souk_outbox_due ON souk_outbox (next_attempt_ms)
",
}];

/// A message waiting for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: String,
    /// What it is, e.g. `chat.unread_message`; the worker routes by it.
    pub topic: String,
    /// The body to deliver (JSON text).
    pub payload: String,
    pub attempts: u32,
}

impl Db {
    /// Queues a message inside the caller's transaction.
    pub async fn enqueue(
        &self,
        tx: &mut Transaction<'static, Any>,
        id: &str,
        topic: &str,
        payload: &str,
        now_ms: u64,
    ) -> Result<()> {
        sqlx::query(&self.sql(
            "INSERT INTO souk_outbox (id, topic, payload, attempts, next_attempt_ms, created_at_ms) VALUES (?, ?, ?, 0, ?, ?)",
        ))
        .bind(id)
        .bind(topic)
        .bind(payload)
        .bind(now_ms as i64)
        .bind(now_ms as i64)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// Messages due at `now_ms`, oldest first.
    pub async fn outbox_due(&self, now_ms: u64, limit: u32) -> Result<Vec<Message>> {
        let rows = sqlx::query(&self.sql(
            "SELECT id, topic, payload, attempts FROM souk_outbox \
             WHERE next_attempt_ms <= ? ORDER BY next_attempt_ms, created_at_ms LIMIT ?",
        ))
        .bind(now_ms as i64)
        .bind(limit as i64)
        .fetch_all(self.reader())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(Message {
                    id: text(row, "id")?,
                    topic: text(row, "topic")?,
                    payload: text(row, "payload")?,
                    attempts: int(row, "attempts")? as u32,
                })
            })
            .collect()
    }

    pub async fn outbox_delivered(&self, id: &str) -> Result<()> {
        sqlx::query(&self.sql("DELETE FROM souk_outbox WHERE id = ?"))
            .bind(id)
            .execute(self.writer())
            .await?;
        Ok(())
    }

    pub async fn outbox_retry_at(&self, id: &str, attempts: u32, at_ms: u64) -> Result<()> {
        sqlx::query(
            &self.sql("UPDATE souk_outbox SET attempts = ?, next_attempt_ms = ? WHERE id = ?"),
        )
        .bind(attempts as i64)
        .bind(at_ms as i64)
        .bind(id)
        .execute(self.writer())
        .await?;
        Ok(())
    }

    /// Messages waiting, per topic.
    pub async fn outbox_len(&self, topic: &str) -> Result<u64> {
        let row = sqlx::query(&self.sql("SELECT COUNT(*) AS n FROM souk_outbox WHERE topic = ?"))
            .bind(topic)
            .fetch_one(self.reader())
            .await?;
        Ok(int(&row, "n")? as u64)
    }
}
