//! Live-commerce money types: wallets, gifts, coupons, flash sales and orders.
//!
//! Amounts are integers in minor units (cents, sen, halalas) with an ISO 4217 currency,
//! never floats. Every request that moves money carries an idempotency key: the same key
//! with the same request returns the first answer, with another request a conflict.

use serde::{Deserialize, Serialize};

/// The largest single amount accepted, in minor units (10 billion in major units), so
/// sums of many never overflow a 64-bit integer.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;
/// Most gifts of one kind sent at once.
pub const MAX_GIFT_COUNT: i64 = 999;
/// Longest idempotency key, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 128;

/// A gift in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gift {
    pub gift_id: String,
    pub name: String,
    pub price_minor: i64,
    pub currency: String,
}

/// A gift that was paid for: the sender's wallet was debited and the host's credited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiftSent {
    pub txn_id: String,
    pub room: String,
    pub sender: String,
    pub host: String,
    pub gift_id: String,
    pub gift_name: String,
    pub count: i64,
    pub amount_minor: i64,
    pub currency: String,
    /// The sender's balance after the gift.
    pub balance_minor: i64,
    pub created_at_ms: u64,
}

/// A top-up or refund of a wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalletTxn {
    pub txn_id: String,
    pub user: String,
    /// Positive for a top-up, negative for a refund.
    pub amount_minor: i64,
    pub currency: String,
    pub balance_minor: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Balance {
    pub user: String,
    pub currency: String,
    pub balance_minor: i64,
}

/// An issue of N coupons in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coupon {
    pub coupon_id: String,
    pub room: String,
    pub quantity: i64,
    pub claimed: i64,
    /// What the coupon is worth at checkout, shown to viewers.
    pub value_minor: i64,
    pub currency: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CouponClaimed {
    pub coupon_id: String,
    pub user: String,
    /// Coupons of this issue still unclaimed.
    pub remaining: i64,
}

/// A flash sale: limited stock at a price, between two instants.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sale {
    pub sale_id: String,
    pub room: String,
    pub product_id: String,
    pub title: String,
    pub price_minor: i64,
    pub currency: String,
    pub stock: i64,
    #[serde(default)]
    pub sold: i64,
    /// Most units one buyer may buy in this sale.
    pub per_buyer_limit: i64,
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
}

/// A purchase in a flash sale, paid from the buyer's wallet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    pub sale_id: String,
    pub room: String,
    pub buyer: String,
    pub product_id: String,
    /// The product's title in the sale.
    #[serde(default)]
    pub title: String,
    pub quantity: i64,
    pub amount_minor: i64,
    pub currency: String,
    pub created_at_ms: u64,
}

/// A host's gift total in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderboardEntry {
    pub host: String,
    pub total_minor: i64,
    pub currency: String,
}

/// Two hosts, scored by the gifts they receive within a window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Battle {
    pub battle_id: String,
    pub room: String,
    pub hosts: [String; 2],
    pub scores_minor: [i64; 2],
    pub starts_at_ms: u64,
    pub ends_at_ms: u64,
    /// Set once the window has closed: the host with more, or none on a tie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winner: Option<String>,
}
