//! Live connections: who is connected, and handing them events.
//!
//! The hub is memory only. Anything it loses (a slow socket it cut, a server restart)
//! the client recovers with `chat_sync`, because every event is durable before the hub
//! sees it. So a socket that cannot keep up is disconnected rather than buffered
//! without bound.

use std::collections::HashMap;
use std::sync::Mutex;

use souk_proto::chat::PresenceStatus;
use tokio::sync::mpsc;

/// A message serialised once, shared by every socket it goes to: JSON text whose bytes
/// are reference-counted, so that a socket sends them without a copy of its own.
#[derive(Debug, Clone)]
pub struct Outbound(bytes::Bytes);

impl Outbound {
    pub fn new(json: String) -> Outbound {
        Outbound(json.into())
    }

    /// The text's UTF-8 bytes, shared.
    pub fn into_bytes(self) -> bytes::Bytes {
        self.0
    }
}

/// Messages a socket may have queued before it counts as too slow.
pub const SOCKET_QUEUE: usize = 1024;

pub type ConnId = u64;

#[derive(Default)]
pub struct Hub {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Principal (a user, or `shop:<id>`) -> its open sockets.
    conns: HashMap<String, Vec<(ConnId, mpsc::Sender<Outbound>)>>,
    /// User -> open sockets and whether they said they are away.
    users: HashMap<String, (usize, bool)>,
}

impl Hub {
    /// Registers a socket under each principal. True when it is the user's first.
    pub fn connect(
        &self,
        id: ConnId,
        identity: &str,
        principals: &[String],
        tx: mpsc::Sender<Outbound>,
    ) -> bool {
        let mut inner = self.inner.lock().expect("hub lock");
        for p in principals {
            inner
                .conns
                .entry(p.clone())
                .or_default()
                .push((id, tx.clone()));
        }
        let user = inner.users.entry(identity.to_owned()).or_insert((0, false));
        user.0 += 1;
        user.0 == 1
    }

    /// Forgets a socket. True when it was the user's last.
    pub fn disconnect(&self, id: ConnId, identity: &str, principals: &[String]) -> bool {
        let mut inner = self.inner.lock().expect("hub lock");
        for p in principals {
            if let Some(list) = inner.conns.get_mut(p) {
                list.retain(|(c, _)| *c != id);
                if list.is_empty() {
                    inner.conns.remove(p);
                }
            }
        }
        match inner.users.get_mut(identity) {
            Some(user) if user.0 > 1 => {
                user.0 -= 1;
                false
            }
            Some(_) => {
                inner.users.remove(identity);
                true
            }
            None => false,
        }
    }

    /// Whether any socket reads this principal's inbox.
    pub fn is_online(&self, principal: &str) -> bool {
        self.inner
            .lock()
            .expect("hub lock")
            .conns
            .contains_key(principal)
    }

    pub fn status(&self, user: &str) -> PresenceStatus {
        match self.inner.lock().expect("hub lock").users.get(user) {
            None => PresenceStatus::Offline,
            Some((_, true)) => PresenceStatus::Away,
            Some((_, false)) => PresenceStatus::Online,
        }
    }

    /// Records "away" or "online"; true when that changed anything.
    pub fn set_away(&self, user: &str, away: bool) -> bool {
        let mut inner = self.inner.lock().expect("hub lock");
        match inner.users.get_mut(user) {
            Some(entry) if entry.1 != away => {
                entry.1 = away;
                true
            }
            _ => false,
        }
    }

    /// Queues `msg` on every socket of these principals, once per socket, skipping
    /// `except`. A socket whose queue is full is cut loose: it will resync.
    pub fn deliver<'a>(
        &self,
        principals: impl IntoIterator<Item = &'a str>,
        msg: &Outbound,
        except: Option<ConnId>,
    ) {
        let mut inner = self.inner.lock().expect("hub lock");
        let mut sent: Vec<ConnId> = Vec::new();
        let mut too_slow: Vec<ConnId> = Vec::new();
        for p in principals {
            let Some(list) = inner.conns.get(p) else {
                continue;
            };
            for (id, tx) in list {
                if Some(*id) == except || sent.contains(id) {
                    continue;
                }
                sent.push(*id);
                if tx.try_send(msg.clone()).is_err() {
                    too_slow.push(*id);
                }
            }
        }
        if !too_slow.is_empty() {
            for list in inner.conns.values_mut() {
                list.retain(|(id, _)| !too_slow.contains(id));
            }
            inner.conns.retain(|_, list| !list.is_empty());
            tracing::info!(
                sockets = too_slow.len(),
                "chat sockets too slow; cut, they will resync"
            );
        }
    }

    /// Users with at least one socket.
    pub fn online_users(&self) -> usize {
        self.inner.lock().expect("hub lock").users.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presence_follows_the_last_socket() {
        let hub = Hub::default();
        let (tx, _rx) = mpsc::channel(4);
        let me = vec!["ana".to_owned()];
        assert!(hub.connect(1, "ana", &me, tx.clone()));
        assert!(!hub.connect(2, "ana", &me, tx));
        assert_eq!(hub.status("ana"), PresenceStatus::Online);
        assert!(hub.set_away("ana", true));
        assert_eq!(hub.status("ana"), PresenceStatus::Away);
        assert!(!hub.disconnect(1, "ana", &me));
        assert!(hub.disconnect(2, "ana", &me));
        assert_eq!(hub.status("ana"), PresenceStatus::Offline);
        assert!(!hub.is_online("ana"));
    }

    #[test]
    fn a_full_socket_is_cut_and_others_still_get_the_message() {
        let hub = Hub::default();
        let (slow_tx, _slow_rx) = mpsc::channel(1);
        let (fast_tx, mut fast_rx) = mpsc::channel(8);
        hub.connect(1, "slow", &["slow".to_owned()], slow_tx);
        hub.connect(2, "fast", &["fast".to_owned()], fast_tx);
        let msg = Outbound::new("x".to_owned());
        hub.deliver(["slow", "fast"], &msg, None);
        hub.deliver(["slow", "fast"], &msg, None);
        assert!(!hub.is_online("slow"));
        assert!(fast_rx.try_recv().is_ok() && fast_rx.try_recv().is_ok());
    }
}
