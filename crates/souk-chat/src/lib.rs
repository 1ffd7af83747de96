//! Buyer-seller and group messaging.
//!
//! - [`store`]: every SQL statement, over SQLite or PostgreSQL;
//! - [`hub`]: live sockets and presence, in memory;
//! - [`service`]: the rules (membership, moderation, edit windows, idempotency);
//! - [`moderation`]: keyword blocklists;
//! - [`translate`]: translation on request behind a trait.
//!
//! The wire messages are in `souk_proto::chat`; the WebSocket and REST glue lives in
//! the server.

pub mod hub;
pub mod moderation;
mod schema;
pub mod service;
pub mod store;
pub mod translate;

pub use service::{Caller, Chat, ChatSettings};
pub use store::ChatStore;
