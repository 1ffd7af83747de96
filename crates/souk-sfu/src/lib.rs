//! Souk's media core, sans IO.
//!
//! [`Sfu`] owns every room, participant and str0m `Rtc`, and never touches a socket or a
//! clock. A driver feeds it datagrams, signalling messages and the time, and carries out
//! what [`Sfu::poll_output`] returns: datagrams to send, messages to deliver, webhooks to
//! post. The same core therefore runs under tokio in `souk serve` and under simulated
//! time in tests, where a whole room can be driven deterministically.
//!
//! Module map, outermost first:
//! - [`sfu`]: the state machine and its inputs and outputs;
//! - `participant`, `track`, `room`, `peer`: the state it keeps;
//! - `forward`, `rewrite`, `vp8`, `layer`, `keyframe`: what one subscriber gets of one
//!   track;
//! - `downlink`, `allocate`: estimating a subscriber's downlink, and sharing it among
//!   its videos;
//! - `red`: redundant audio per subscriber; `dtx`: asking publishers to pause audio in
//!   silence;
//! - `quality`: the E-model MOS of the path to a client;
//! - `demux`, `stun`: which connection a datagram belongs to;
//! - `connections`: who has a WebRTC connection, and when each next needs str0m's clock;
//! - `speaker`: audio levels and active speakers.

mod allocate;
mod config;
mod connections;
mod demux;
mod downlink;
mod dtx;
mod forward;
mod keyframe;
mod layer;
mod live;
mod participant;
mod peer;
mod quality;
mod red;
mod redundancy;
mod rewrite;
mod room;
mod sdp_parse;
pub mod sfu;
mod speaker;
mod stun;
mod track;
mod vp8;

pub use config::{BandwidthEstimation, SfuConfig};
pub use peer::Side;
pub use quality::{PathQuality, SubscriptionLayer};
pub use sfu::{JoinRequest, Output, ResumeRequest, Sfu, Transmit};

/// Internal handle of a participant session (the wire id is its `sid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParticipantId(pub u64);
