//! Chat persistence: every statement the chat service runs, over [`souk_store::Db`].
//!
//! The one rule that makes ordering exact: an event's sequence number is taken by
//! incrementing `chat_conversations.last_seq` inside the same transaction that inserts
//! the event. On PostgreSQL the row lock serialises writers per conversation; on SQLite
//! the single writer connection does. Either way there are no gaps and no duplicates.

use souk_proto::chat::{
    ConversationKind, EventInfo, EventKind, MemberInfo, MemberRole, MessageState, ReceiptInfo,
};
use souk_store::{int, opt_int, opt_text, text, Db, Result};
use sqlx::any::AnyRow;

/// A conversation's header row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRow {
    pub id: String,
    pub kind: ConversationKind,
    pub title: Option<String>,
    pub last_seq: u64,
}

/// One member's row in one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Membership {
    /// Who is the member: the user, or a shop the user answers for.
    pub principal: String,
    pub role: MemberRole,
    pub read_seq: u64,
    pub delivered_seq: u64,
    pub muted_until_ms: u64,
}

/// An event about to be written; its sequence number is assigned on commit.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub conversation: String,
    pub kind: EventKind,
    pub sender: String,
    /// The person behind `sender` (a shop's staff member, or the sender itself).
    pub author: String,
    pub body: serde_json::Value,
    pub target_seq: Option<u64>,
    pub client_msg_id: Option<String>,
    /// Fingerprint of the request, to tell a retry from a reuse of its id.
    pub request_digest: Option<String>,
    pub created_at_ms: u64,
}

/// What else an event changes, in the same transaction.
#[derive(Debug, Clone)]
pub enum Change {
    None,
    /// An edit, recall or deletion rewrites its target message.
    Target {
        seq: u64,
        state: MessageState,
        body: serde_json::Value,
    },
    AddMembers(Vec<(String, MemberRole)>),
    RemoveMember {
        member: String,
        /// Also keep them out until then (ms since the epoch; `u64::MAX` for good).
        ban_until_ms: Option<u64>,
    },
    SetRole {
        member: String,
        role: MemberRole,
    },
}

/// The outbox topic of offline notifications.
pub const PUSH_TOPIC: &str = "chat.unread_message";

/// A previously sent message found by its client id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentBefore {
    pub seq: u64,
    pub created_at_ms: u64,
    pub request_digest: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ChatStore {
    db: Db,
}

fn kind_of(s: &str) -> ConversationKind {
    if s == "group" {
        ConversationKind::Group
    } else {
        ConversationKind::Direct
    }
}

fn kind_name(kind: &ConversationKind) -> &'static str {
    match kind {
        ConversationKind::Direct => "direct",
        ConversationKind::Group => "group",
    }
}

const EVENT_COLUMNS: &str =
    "conv_id, seq, kind, sender, author, body, target_seq, state, client_msg_id, created_at_ms";

fn event_from_row(row: &AnyRow) -> Result<EventInfo> {
    let kind = text(row, "kind")?;
    Ok(EventInfo {
        conversation: text(row, "conv_id")?,
        seq: int(row, "seq")? as u64,
        kind: EventKind::parse(&kind).unwrap_or(EventKind::System),
        sender: text(row, "sender")?,
        body: serde_json::from_str(&text(row, "body")?).unwrap_or(serde_json::Value::Null),
        target_seq: opt_int(row, "target_seq")?.map(|s| s as u64),
        state: MessageState::parse(&text(row, "state")?),
        client_msg_id: opt_text(row, "client_msg_id")?,
        created_at_ms: int(row, "created_at_ms")? as u64,
    })
}

fn membership_from_row(row: &AnyRow) -> Result<Membership> {
    Ok(Membership {
        principal: text(row, "member")?,
        role: MemberRole::parse(&text(row, "role")?),
        read_seq: int(row, "read_seq")? as u64,
        delivered_seq: int(row, "delivered_seq")? as u64,
        muted_until_ms: int(row, "muted_until_ms")? as u64,
    })
}

/// `?, ?, ?` for an IN list of `n` values.
fn placeholders(n: usize) -> String {
    vec!["?"; n].join(", ")
}

impl ChatStore {
    /// Brings the schema up to date and returns the store.
    pub async fn open(db: Db) -> Result<ChatStore> {
        db.migrate(crate::schema::MIGRATIONS).await?;
        Ok(ChatStore { db })
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub async fn conversation(&self, id: &str) -> Result<Option<ConversationRow>> {
        let row = sqlx::query(
            &self
                .db
                .sql("SELECT id, kind, title, last_seq FROM chat_conversations WHERE id = ?"),
        )
        .bind(id)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(|row| {
            Ok(ConversationRow {
                id: text(&row, "id")?,
                kind: kind_of(&text(&row, "kind")?),
                title: opt_text(&row, "title")?,
                last_seq: int(&row, "last_seq")? as u64,
            })
        })
        .transpose()
    }

    pub async fn members(&self, conversation: &str) -> Result<Vec<MemberInfo>> {
        let rows = sqlx::query(
            &self
                .db
                .sql("SELECT member, role FROM chat_members WHERE conv_id = ? ORDER BY member"),
        )
        .bind(conversation)
        .fetch_all(self.db.reader())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(MemberInfo {
                    member: text(row, "member")?,
                    role: MemberRole::parse(&text(row, "role")?),
                })
            })
            .collect()
    }

    /// The first of `principals` that is a member of the conversation.
    pub async fn membership(
        &self,
        conversation: &str,
        principals: &[String],
    ) -> Result<Option<Membership>> {
        let sql = self.db.sql(&format!(
            "SELECT member, role, read_seq, delivered_seq, muted_until_ms FROM chat_members WHERE conv_id = ? AND member IN ({}) ORDER BY member",
            placeholders(principals.len())
        )).into_owned();
        let mut query = sqlx::query(&sql).bind(conversation);
        for p in principals {
            query = query.bind(p.as_str());
        }
        // The user's own identity wins over a shop it answers for.
        let rows = query.fetch_all(self.db.reader()).await?;
        let mut found: Vec<Membership> = rows
            .iter()
            .map(membership_from_row)
            .collect::<Result<_>>()?;
        found.sort_by_key(|m| principals.iter().position(|p| *p == m.principal));
        Ok(found.into_iter().next())
    }

    /// Every conversation any of `principals` is in, with that membership.
    pub async fn conversations_of(
        &self,
        principals: &[String],
    ) -> Result<Vec<(ConversationRow, Membership)>> {
        let sql = self.db.sql(&format!(
            "SELECT c.id, c.kind, c.title, c.last_seq, m.member, m.role, m.read_seq, m.delivered_seq, m.muted_until_ms \
             FROM chat_members m JOIN chat_conversations c ON c.id = m.conv_id \
             WHERE m.member IN ({}) ORDER BY c.id",
            placeholders(principals.len())
        )).into_owned();
        let mut query = sqlx::query(&sql);
        for p in principals {
            query = query.bind(p.as_str());
        }
        let rows = query.fetch_all(self.db.reader()).await?;
        let mut out: Vec<(ConversationRow, Membership)> = Vec::new();
        for row in &rows {
            let conv = ConversationRow {
                id: text(row, "id")?,
                kind: kind_of(&text(row, "kind")?),
                title: opt_text(row, "title")?,
                last_seq: int(row, "last_seq")? as u64,
            };
            // A user in a conversation both as themself and as a shop sees it once.
            if out.last().is_some_and(|(c, _)| c.id == conv.id) {
                continue;
            }
            out.push((conv, membership_from_row(row)?));
        }
        Ok(out)
    }

    pub async fn sent_before(
        &self,
        conversation: &str,
        sender: &str,
        client_msg_id: &str,
    ) -> Result<Option<SentBefore>> {
        let row = sqlx::query(&self.db.sql(
            "SELECT seq, created_at_ms, request_digest FROM chat_events WHERE conv_id = ? AND sender = ? AND client_msg_id = ?",
        ))
        .bind(conversation)
        .bind(sender)
        .bind(client_msg_id)
        .fetch_optional(self.db.writer())
        .await?;
        row.map(|row| {
            Ok(SentBefore {
                seq: int(&row, "seq")? as u64,
                created_at_ms: int(&row, "created_at_ms")? as u64,
                request_digest: opt_text(&row, "request_digest")?,
            })
        })
        .transpose()
    }

    /// Writes an event, what it changes, and the push notifications it causes (`pushes`:
    /// payloads that get the event's `seq` and an `id`), in one transaction: all of it is
    /// durable on return, or none of it.
    pub async fn append(
        &self,
        event: NewEvent,
        change: Change,
        pushes: &[serde_json::Value],
    ) -> Result<EventInfo> {
        let db = &self.db;
        let mut tx = db.begin().await?;
        let row = sqlx::query(&db.sql(
            "UPDATE chat_conversations SET last_seq = last_seq + 1 WHERE id = ? RETURNING last_seq",
        ))
        .bind(event.conversation.as_str())
        .fetch_one(&mut *tx)
        .await?;
        let seq = int(&row, "last_seq")?;
        let body = event.body.to_string();
        sqlx::query(&db.sql(
            "INSERT INTO chat_events (conv_id, seq, kind, sender, author, body, target_seq, state, client_msg_id, created_at_ms, request_digest) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        ))
        .bind(event.conversation.as_str())
        .bind(seq)
        .bind(event.kind.as_str())
        .bind(event.sender.as_str())
        .bind(event.author.as_str())
        .bind(body.as_str())
        .bind(event.target_seq.map(|s| s as i64))
        .bind(MessageState::Normal.as_str())
        .bind(event.client_msg_id.as_deref())
        .bind(event.created_at_ms as i64)
        .bind(event.request_digest.as_deref())
        .execute(&mut *tx)
        .await?;
        match &change {
            Change::None => {}
            Change::Target { seq, state, body } => {
                sqlx::query(&db.sql(
                    "UPDATE chat_events SET state = ?, body = ? WHERE conv_id = ? AND seq = ?",
                ))
                .bind(state.as_str())
                .bind(body.to_string())
                .bind(event.conversation.as_str())
                .bind(*seq as i64)
                .execute(&mut *tx)
                .await?;
            }
            Change::AddMembers(members) => {
                for (member, role) in members {
                    sqlx::query(&db.sql(
                        "INSERT INTO chat_members (conv_id, member, role, read_seq, delivered_seq, muted_until_ms) VALUES (?, ?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
                    ))
                    .bind(event.conversation.as_str())
                    .bind(member.as_str())
                    .bind(role.as_str())
                    // A new member starts with nothing unread from before they came.
                    .bind(seq)
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Change::RemoveMember {
                member,
                ban_until_ms,
            } => {
                sqlx::query(&db.sql("DELETE FROM chat_members WHERE conv_id = ? AND member = ?"))
                    .bind(event.conversation.as_str())
                    .bind(member.as_str())
                    .execute(&mut *tx)
                    .await?;
                if let Some(until) = ban_until_ms {
                    sqlx::query(&db.sql(
                        "INSERT INTO chat_bans (conv_id, member, until_ms) VALUES (?, ?, ?) ON CONFLICT (conv_id, member) DO UPDATE SET until_ms = excluded.until_ms",
                    ))
                    .bind(event.conversation.as_str())
                    .bind(member.as_str())
                    .bind((*until).min(i64::MAX as u64) as i64)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            Change::SetRole { member, role } => {
                sqlx::query(
                    &db.sql("UPDATE chat_members SET role = ? WHERE conv_id = ? AND member = ?"),
                )
                .bind(role.as_str())
                .bind(event.conversation.as_str())
                .bind(member.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        for push in pushes {
            let id = format!("PN_{:032x}", rand::random::<u128>());
            let mut payload = push.clone();
            payload["id"] = id.clone().into();
            payload["type"] = PUSH_TOPIC.into();
            payload["seq"] = seq.into();
            db.enqueue(
                &mut tx,
                &id,
                PUSH_TOPIC,
                &payload.to_string(),
                event.created_at_ms,
            )
            .await?;
        }
        tx.commit().await?;
        Ok(EventInfo {
            conversation: event.conversation,
            seq: seq as u64,
            kind: event.kind,
            sender: event.sender,
            body: event.body,
            target_seq: event.target_seq,
            state: MessageState::Normal,
            client_msg_id: event.client_msg_id,
            created_at_ms: event.created_at_ms,
        })
    }

    /// Creates a conversation with its members (and, for groups, its first event).
    /// Returns false when it already existed (an idempotent direct open).
    pub async fn create_conversation(
        &self,
        conv: &ConversationRow,
        members: &[(String, MemberRole)],
        created_at_ms: u64,
    ) -> Result<bool> {
        let db = &self.db;
        let mut tx = db.begin().await?;
        let inserted = sqlx::query(&db.sql(
            "INSERT INTO chat_conversations (id, kind, title, created_at_ms, last_seq) VALUES (?, ?, ?, ?, 0) ON CONFLICT DO NOTHING",
        ))
        .bind(conv.id.as_str())
        .bind(kind_name(&conv.kind))
        .bind(conv.title.as_deref())
        .bind(created_at_ms as i64)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        if inserted {
            for (member, role) in members {
                sqlx::query(&db.sql(
                    "INSERT INTO chat_members (conv_id, member, role, read_seq, delivered_seq, muted_until_ms) VALUES (?, ?, ?, 0, 0, 0)",
                ))
                .bind(conv.id.as_str())
                .bind(member.as_str())
                .bind(role.as_str())
                .execute(&mut *tx)
                .await?;
            }
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// Events after `after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        conversation: &str,
        after: u64,
        limit: u32,
    ) -> Result<Vec<EventInfo>> {
        let rows = sqlx::query(&self.db.sql(&format!(
            "SELECT {EVENT_COLUMNS} FROM chat_events WHERE conv_id = ? AND seq > ? ORDER BY seq LIMIT ?"
        )))
        .bind(conversation)
        .bind(after as i64)
        .bind(limit as i64)
        .fetch_all(self.db.reader())
        .await?;
        rows.iter().map(event_from_row).collect()
    }

    /// Events before `before`, oldest first, the newest `limit` of them.
    pub async fn events_before(
        &self,
        conversation: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<EventInfo>> {
        let rows = sqlx::query(&self.db.sql(&format!(
            "SELECT {EVENT_COLUMNS} FROM chat_events WHERE conv_id = ? AND seq < ? ORDER BY seq DESC LIMIT ?"
        )))
        .bind(conversation)
        .bind(before.min(i64::MAX as u64) as i64)
        .bind(limit as i64)
        .fetch_all(self.db.reader())
        .await?;
        let mut events: Vec<EventInfo> = rows.iter().map(event_from_row).collect::<Result<_>>()?;
        events.reverse();
        Ok(events)
    }

    /// One event and the person who wrote it.
    pub async fn event(&self, conversation: &str, seq: u64) -> Result<Option<(EventInfo, String)>> {
        let row = sqlx::query(&self.db.sql(&format!(
            "SELECT {EVENT_COLUMNS}, author FROM chat_events WHERE conv_id = ? AND seq = ?"
        )))
        .bind(conversation)
        .bind(seq.min(i64::MAX as u64) as i64)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(|row| Ok((event_from_row(&row)?, text(&row, "author")?)))
            .transpose()
    }

    /// Messages from others after `read_seq`, still showing.
    pub async fn unread(&self, conversation: &str, member: &str, read_seq: u64) -> Result<u64> {
        let row = sqlx::query(&self.db.sql(
            "SELECT COUNT(*) AS n FROM chat_events WHERE conv_id = ? AND seq > ? AND sender <> ? \
             AND kind IN ('text', 'product', 'order', 'image', 'system') AND state IN ('normal', 'edited')",
        ))
        .bind(conversation)
        .bind(read_seq as i64)
        .bind(member)
        .fetch_one(self.db.reader())
        .await?;
        Ok(int(&row, "n")? as u64)
    }

    /// Moves a member's receipts forward (never back) and returns them.
    pub async fn advance_receipts(
        &self,
        conversation: &str,
        member: &str,
        delivered: u64,
        read: u64,
    ) -> Result<(u64, u64)> {
        let delivered = delivered.max(read) as i64;
        let row = sqlx::query(&self.db.sql(
            "UPDATE chat_members SET \
             delivered_seq = CASE WHEN delivered_seq < ? THEN ? ELSE delivered_seq END, \
             read_seq = CASE WHEN read_seq < ? THEN ? ELSE read_seq END \
             WHERE conv_id = ? AND member = ? RETURNING delivered_seq, read_seq",
        ))
        .bind(delivered)
        .bind(delivered)
        .bind(read as i64)
        .bind(read as i64)
        .bind(conversation)
        .bind(member)
        .fetch_one(self.db.writer())
        .await?;
        Ok((
            int(&row, "delivered_seq")? as u64,
            int(&row, "read_seq")? as u64,
        ))
    }

    pub async fn receipts(&self, conversation: &str) -> Result<Vec<ReceiptInfo>> {
        let rows = sqlx::query(&self.db.sql(
            "SELECT member, delivered_seq, read_seq FROM chat_members WHERE conv_id = ? ORDER BY member",
        ))
        .bind(conversation)
        .fetch_all(self.db.reader())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(ReceiptInfo {
                    conversation: conversation.to_owned(),
                    member: text(row, "member")?,
                    delivered_seq: int(row, "delivered_seq")? as u64,
                    read_seq: int(row, "read_seq")? as u64,
                })
            })
            .collect()
    }

    pub async fn member_count(&self, conversation: &str) -> Result<usize> {
        let row = sqlx::query(
            &self
                .db
                .sql("SELECT COUNT(*) AS n FROM chat_members WHERE conv_id = ?"),
        )
        .bind(conversation)
        .fetch_one(self.db.reader())
        .await?;
        Ok(int(&row, "n")? as usize)
    }

    pub async fn set_muted_until(
        &self,
        conversation: &str,
        member: &str,
        until_ms: u64,
    ) -> Result<bool> {
        let done =
            sqlx::query(&self.db.sql(
                "UPDATE chat_members SET muted_until_ms = ? WHERE conv_id = ? AND member = ?",
            ))
            .bind(until_ms.min(i64::MAX as u64) as i64)
            .bind(conversation)
            .bind(member)
            .execute(self.db.writer())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// When a ban on `member` ends, if one is in force at `now_ms`.
    pub async fn banned_until(
        &self,
        conversation: &str,
        member: &str,
        now_ms: u64,
    ) -> Result<Option<u64>> {
        let row = sqlx::query(&self.db.sql(
            "SELECT until_ms FROM chat_bans WHERE conv_id = ? AND member = ? AND until_ms > ?",
        ))
        .bind(conversation)
        .bind(member)
        .bind(now_ms as i64)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(|row| Ok(int(&row, "until_ms")? as u64)).transpose()
    }

    pub async fn unban(&self, conversation: &str, member: &str) -> Result<()> {
        sqlx::query(
            &self
                .db
                .sql("DELETE FROM chat_bans WHERE conv_id = ? AND member = ?"),
        )
        .bind(conversation)
        .bind(member)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    pub async fn set_blocked(&self, blocker: &str, blocked: &str, on: bool) -> Result<()> {
        let sql = if on {
            "INSERT INTO chat_blocks (blocker, blocked) VALUES (?, ?) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM chat_blocks WHERE blocker = ? AND blocked = ?"
        };
        sqlx::query(&self.db.sql(sql))
            .bind(blocker)
            .bind(blocked)
            .execute(self.db.writer())
            .await?;
        Ok(())
    }

    /// True when any of `blockers` has blocked `sender`.
    pub async fn is_blocked_by_any(&self, blockers: &[String], sender: &str) -> Result<bool> {
        if blockers.is_empty() {
            return Ok(false);
        }
        let sql = self
            .db
            .sql(&format!(
                "SELECT blocker FROM chat_blocks WHERE blocked = ? AND blocker IN ({})",
                placeholders(blockers.len())
            ))
            .into_owned();
        let mut query = sqlx::query(&sql).bind(sender);
        for b in blockers {
            query = query.bind(b.as_str());
        }
        Ok(query.fetch_optional(self.db.reader()).await?.is_some())
    }

    /// Everyone who shares a conversation with `user`: the people who may see their
    /// presence.
    pub async fn contacts(&self, user: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(&self.db.sql(
            "SELECT DISTINCT m2.member AS member FROM chat_members m1 \
             JOIN chat_members m2 ON m1.conv_id = m2.conv_id \
             WHERE m1.member = ? AND m2.member <> ?",
        ))
        .bind(user)
        .bind(user)
        .fetch_all(self.db.reader())
        .await?;
        rows.iter().map(|row| text(row, "member")).collect()
    }

    pub async fn translation(
        &self,
        conversation: &str,
        seq: u64,
        locale: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(&self.db.sql(
            "SELECT text FROM chat_translations WHERE conv_id = ? AND seq = ? AND locale = ?",
        ))
        .bind(conversation)
        .bind(seq as i64)
        .bind(locale)
        .fetch_optional(self.db.reader())
        .await?;
        row.map(|row| text(&row, "text")).transpose()
    }

    pub async fn save_translation(
        &self,
        conversation: &str,
        seq: u64,
        locale: &str,
        translated: &str,
    ) -> Result<()> {
        sqlx::query(&self.db.sql(
            "INSERT INTO chat_translations (conv_id, seq, locale, text) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING",
        ))
        .bind(conversation)
        .bind(seq as i64)
        .bind(locale)
        .bind(translated)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }

    /// Drops cached translations of a message whose text changed or went away.
    pub async fn forget_translations(&self, conversation: &str, seq: u64) -> Result<()> {
        sqlx::query(
            &self
                .db
                .sql("DELETE FROM chat_translations WHERE conv_id = ? AND seq = ?"),
        )
        .bind(conversation)
        .bind(seq as i64)
        .execute(self.db.writer())
        .await?;
        Ok(())
    }
}
