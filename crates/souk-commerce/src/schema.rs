//! The ledger's tables. Portable between SQLite and PostgreSQL.

use souk_store::Migration;

pub const MIGRATIONS: &[Migration] = &[Migration {
    name: "commerce_0001_ledger",
    sql: "
CREATE TABLE commerce_wallets (
    account TEXT NOT NULL,
    currency TEXT NOT NULL,
    balance_minor BIGINT NOT NULL,
    PRIMARY KEY (account, currency)
);
CREATE TABLE commerce_entries (
    txn_id TEXT NOT NULL,
    account TEXT NOT NULL,
    currency TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    kind TEXT NOT NULL,
    room TEXT,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (txn_id, account, currency)
);
CREATE INDEX commerce_entries_by_account ON commerce_entries (account, currency);
CREATE TABLE commerce_requests (
    actor TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    digest TEXT NOT NULL,
    response TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (actor, idem_key)
);
CREATE TABLE commerce_catalogue (
    gift_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency TEXT NOT NULL
);
CREATE TABLE commerce_gifts_sent (
    txn_id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    sender TEXT NOT NULL,
    host TEXT NOT NULL,
    gift_id TEXT NOT NULL,
    gift_count BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE INDEX commerce_gifts_by_room ON commerce_gifts_sent (room, host, created_at_ms);
CREATE TABLE commerce_coupons (
    coupon_id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    claimed BIGINT NOT NULL,
    value_minor BIGINT NOT NULL,
    currency TEXT NOT NULL
);
CREATE TABLE commerce_coupon_claims (
    coupon_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL,
    PRIMARY KEY (coupon_id, user_id)
);
CREATE TABLE commerce_sales (
    sale_id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    product_id TEXT NOT NULL,
    title TEXT NOT NULL,
    price_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    stock BIGINT NOT NULL,
    sold BIGINT NOT NULL,
    per_buyer_limit BIGINT NOT NULL,
    starts_at_ms BIGINT NOT NULL,
    ends_at_ms BIGINT NOT NULL
);
CREATE TABLE commerce_sale_buyers (
    sale_id TEXT NOT NULL,
    buyer TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    PRIMARY KEY (sale_id, buyer)
);
CREATE TABLE commerce_orders (
    order_id TEXT PRIMARY KEY,
    sale_id TEXT NOT NULL,
    room TEXT NOT NULL,
    buyer TEXT NOT NULL,
    product_id TEXT NOT NULL,
    quantity BIGINT NOT NULL,
    amount_minor BIGINT NOT NULL,
    currency TEXT NOT NULL,
    created_at_ms BIGINT NOT NULL
);
CREATE TABLE commerce_battles (
    battle_id TEXT PRIMARY KEY,
    room TEXT NOT NULL,
    host_a TEXT NOT NULL,
    host_b TEXT NOT NULL,
    starts_at_ms BIGINT NOT NULL,
    ends_at_ms BIGINT NOT NULL
)
",
}];
