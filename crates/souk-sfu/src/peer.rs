//! One str0m `Rtc`: a participant's publisher or subscriber connection.

use std::collections::VecDeque;
use std::time::Instant;

use str0m::{Event, Input, Output as RtcOutput, Rtc, RtcError};

use crate::config::SfuConfig;
use crate::{Output, Transmit};

/// Which of a participant's two connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The browser offers and sends media here.
    Publisher,
    /// The server offers and sends media here.
    Subscriber,
}

pub(crate) struct Peer {
    pub rtc: Rtc,
    /// When str0m next wants `handle_input(Timeout)`.
    pub timeout: Instant,
    /// Our ICE username fragment, which routes new addresses to this peer.
    pub ufrag: String,
    pub connected: bool,
}

impl Peer {
    pub fn new(now: Instant, config: &SfuConfig) -> Peer {
        let mut rtc = config.rtc_config().build(now);
        for candidate in &config.candidates {
            // A candidate str0m itself built cannot be refused; if it were, the peer would
            // simply not be reachable on that address, which ICE reports.
            let _ = rtc.add_local_candidate(candidate.clone());
        }
        let ufrag = rtc.direct_api().local_ice_credentials().ufrag;
        Peer {
            rtc,
            timeout: now,
            ufrag,
            connected: false,
        }
    }

    /// The local ufrag as it is now; it changes after an ICE restart.
    pub fn current_ufrag(&mut self) -> String {
        self.rtc.direct_api().local_ice_credentials().ufrag
    }

    pub fn handle_input(&mut self, input: Input) -> Result<(), RtcError> {
        self.rtc.handle_input(input)
    }

    /// Polls str0m until it has nothing more to say: datagrams go straight to `out`,
    /// events are returned for the caller to act on (they may touch other peers).
    pub fn drain(&mut self, out: &mut VecDeque<Output>) -> Result<Vec<Event>, RtcError> {
        let mut events = Vec::new();
        loop {
            match self.rtc.poll_output()? {
                RtcOutput::Timeout(t) => {
                    self.timeout = t;
                    return Ok(events);
                }
                RtcOutput::Transmit(t) => out.push_back(Output::Transmit(Transmit {
                    proto: t.proto,
                    source: t.source,
                    destination: t.destination,
                    contents: t.contents.into(),
                })),
                RtcOutput::Event(e) => events.push(e),
            }
        }
    }
}
