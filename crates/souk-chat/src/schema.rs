//! The chat tables. Every statement is portable between SQLite and PostgreSQL.

use souk_store::Migration;

pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "chat_0001_init",
    sql: "
CREATE TABLE chat_conversations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    title TEXT,
    created_at_ms BIGINT NOT NULL,
    last_seq BIGINT NOT NULL
);
CREATE TABLE chat_members (
    conv_id TEXT NOT NULL,
    member TEXT NOT NULL,
    role TEXT NOT NULL,
    read_seq BIGINT NOT NULL,
    delivered_seq BIGINT NOT NULL,
    muted_until_ms BIGINT NOT NULL,
    PRIMARY KEY (conv_id, member)
);
CREATE INDEX chat_members_by_member ON chat_members (member);
CREATE TABLE chat_bans (
    conv_id TEXT NOT NULL,
    member TEXT NOT NULL,
    until_ms BIGINT NOT NULL,
    PRIMARY KEY (conv_id, member)
);
CREATE TABLE chat_blocks (
    blocker TEXT NOT NULL,
    blocked TEXT NOT NULL,
    PRIMARY KEY (blocker, blocked)
);
CREATE TABLE chat_events (
    conv_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    sender TEXT NOT NULL,
    author TEXT NOT NULL,
    body TEXT NOT NULL,
    target_seq BIGINT,
    state TEXT NOT NULL,
    client_msg_id TEXT,
    request_digest TEXT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (conv_id, seq)
);
CREATE UNIQUE INDEX chat_events_idempotency ON chat_events (conv_id, sender, client_msg_id);
CREATE TABLE chat_translations (
    conv_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    locale TEXT NOT NULL,
    text TEXT NOT NULL,
    PRIMARY KEY (conv_id, seq, locale)
)
",
}];
