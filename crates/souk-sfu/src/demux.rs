//! Routing datagrams on the shared media port to the peer they belong to.
//!
//! A known remote address maps straight to its peer. A new address must open with a
//! STUN binding request, whose USERNAME names our ufrag and so the peer; the address is
//! learnt once that peer's `Rtc` accepts the request. This replaces a linear scan over
//! every peer's `Rtc::accepts`.

use std::collections::HashMap;
use std::net::SocketAddr;

use str0m::net::Protocol;

use crate::peer::Side;
use crate::stun;
use crate::ParticipantId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub participant: ParticipantId,
    pub side: Side,
}

#[derive(Debug, Default)]
pub(crate) struct Demux {
    by_ufrag: HashMap<String, PeerKey>,
    by_addr: HashMap<(Protocol, SocketAddr), PeerKey>,
}

/// Where a datagram goes, and whether its address is new to us.
pub(crate) struct Route {
    pub key: PeerKey,
    pub learn_address: bool,
}

impl Demux {
    pub fn route(&self, proto: Protocol, source: SocketAddr, datagram: &[u8]) -> Option<Route> {
        // STUN routes by ufrag even from a known address: after an ICE restart or a port
        // reuse, the same address may now belong to another peer.
        if let Some(ufrag) = stun::local_ufrag(datagram) {
            let key = *self.by_ufrag.get(ufrag)?;
            let known = self.by_addr.get(&(proto, source)) == Some(&key);
            return Some(Route {
                key,
                learn_address: !known,
            });
        }
        self.by_addr.get(&(proto, source)).map(|&key| Route {
            key,
            learn_address: false,
        })
    }

    pub fn knows(&self, proto: Protocol, source: SocketAddr) -> bool {
        self.by_addr.contains_key(&(proto, source))
    }

    pub fn learn_address(&mut self, proto: Protocol, source: SocketAddr, key: PeerKey) {
        self.by_addr.insert((proto, source), key);
    }

    pub fn set_ufrag(&mut self, key: PeerKey, old: Option<&str>, new: &str) {
        if let Some(old) = old {
            if self.by_ufrag.get(old) == Some(&key) {
                self.by_ufrag.remove(old);
            }
        }
        self.by_ufrag.insert(new.to_owned(), key);
    }

    /// Forgets every route to a participant's peers.
    pub fn forget(&mut self, participant: ParticipantId) {
        self.by_ufrag.retain(|_, k| k.participant != participant);
        self.by_addr.retain(|_, k| k.participant != participant);
    }

    #[cfg(test)]
    pub fn len(&self) -> (usize, usize) {
        (self.by_ufrag.len(), self.by_addr.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64, side: Side) -> PeerKey {
        PeerKey {
            participant: ParticipantId(n),
            side,
        }
    }

    #[test]
    fn routes_new_addresses_by_ufrag_then_by_address() {
        let mut demux = Demux::default();
        let a = key(1, Side::Publisher);
        demux.set_ufrag(a, None, "uA");
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();

        assert!(demux.route(Protocol::Udp, src, &[0x80, 0x60]).is_none());
        let route = demux
            .route(Protocol::Udp, src, &stun::binding_request("uA:x"))
            .unwrap();
        assert_eq!(route.key, a);
        assert!(route.learn_address);
        demux.learn_address(Protocol::Udp, src, a);

        let route = demux.route(Protocol::Udp, src, &[0x80, 0x60]).unwrap();
        assert_eq!(route.key, a);
        assert!(demux.route(Protocol::Tcp, src, &[0x80, 0x60]).is_none());
    }

    #[test]
    fn ice_restart_and_forget() {
        let mut demux = Demux::default();
        let a = key(1, Side::Subscriber);
        demux.set_ufrag(a, None, "old");
        demux.set_ufrag(a, Some("old"), "new");
        let src: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        assert!(demux
            .route(Protocol::Udp, src, &stun::binding_request("old:x"))
            .is_none());
        demux.learn_address(Protocol::Udp, src, a);
        demux.forget(ParticipantId(1));
        assert_eq!(demux.len(), (0, 0));
    }
}
