//! Souk's wire types.
//!
//! Everything that crosses a process boundary is defined here and nowhere else: the
//! signalling messages spoken over the WebSocket ([`signal`]), the access-token claims
//! ([`token`]), the REST bodies ([`rest`]), the stable error codes ([`error`]) and the
//! parts of RTP payload formats both ends read ([`payload`]).
//! The server, the Rust client and (by hand, see `docs/PROTOCOL.md`) the browser SDK
//! all speak these types, so a change here is a protocol change.

pub mod chat;
pub mod commerce;
pub mod error;
pub mod live;
pub mod model;
pub mod payload;
pub mod rest;
pub mod signal;
pub mod token;

pub use error::{ErrorCode, ProtoError};

/// The signalling protocol version this build speaks. A client sends it in `join`;
/// the server refuses versions it does not know instead of guessing.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest signalling message the server reads, in bytes. SDP for a few dozen
/// tracks fits comfortably; anything larger is a bug or an attack.
pub const MAX_SIGNAL_MESSAGE_BYTES: usize = 64 * 1024;
