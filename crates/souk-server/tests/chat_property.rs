//! Property: whatever mix of sends, retries, dropped sockets and reconnects with stale
//! cursors happens, every member ends with exactly the acknowledged messages, each
//! once, in sequence order. Each seed is one random scenario against the real server,
//! on SQLite and on PostgreSQL; a failure names its seed.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use common::{chat_token, server_on, Backend, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use souk_client::chat::ChatClient;
use souk_proto::chat::{ChatServerMessage, EventInfo, EventKind};

const MEMBERS: [&str; 3] = ["m0", "m1", "m2"];
const SEEDS: std::ops::Range<u64> = 0..6;
const STEPS: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite() {
    for seed in SEEDS {
        scenario(Backend::Sqlite, seed).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres() {
    for seed in SEEDS {
        scenario(Backend::Postgres, seed).await;
    }
}

/// One member's device: what it has seen, and where it would resume from.
#[derive(Default)]
struct Device {
    client: Option<ChatClient>,
    seen: BTreeMap<u64, EventInfo>,
}

impl Device {
    /// The highest sequence number below which nothing is missing.
    fn cursor(&self) -> u64 {
        let mut c = 0;
        while self.seen.contains_key(&(c + 1)) {
            c += 1;
        }
        c
    }

    fn apply(&mut self, event: EventInfo, seed: u64) {
        if let Some(before) = self.seen.get(&event.seq) {
            assert_eq!(
                before.client_msg_id, event.client_msg_id,
                "seed {seed}: seq {} changed identity between deliveries",
                event.seq
            );
        }
        self.seen.insert(event.seq, event);
    }

    /// Sends on the open socket; the sequence number it was stored at.
    async fn send(&self, conv: &str, id: &str, text: &str) -> u64 {
        let client = self.client.as_ref().expect("connected");
        client.send_text(conv, id, text).await.unwrap().seq
    }

    /// Applies whatever the server pushed so far.
    async fn drain(&mut self, seed: u64) {
        let Some(client) = &self.client else { return };
        let mut live = Vec::new();
        while let Some(msg) = client.next_pushed(Duration::from_millis(2)).await {
            if let ChatServerMessage::ChatEvent(e) = msg {
                live.push(e);
            }
        }
        for e in live {
            self.apply(e, seed);
        }
    }

    /// Connects and catches up from `from` (possibly older than what it has).
    async fn reconnect(
        &mut self,
        server: &TestServer,
        who: &str,
        conv: &str,
        from: u64,
        seed: u64,
    ) {
        let client = ChatClient::connect(&server.url, &chat_token(who, &[]))
            .await
            .expect("reconnects");
        let mut cursor = from;
        loop {
            let synced = client
                .sync(&HashMap::from([(conv.to_owned(), cursor)]), Some(7))
                .await
                .expect("sync");
            let view = synced
                .conversations
                .into_iter()
                .next()
                .expect("one conversation");
            cursor = view.events.last().map_or(cursor, |e| e.seq);
            for e in view.events {
                self.apply(e, seed);
            }
            if !view.has_more {
                break;
            }
        }
        self.client = Some(client);
    }
}

async fn scenario(backend: Backend, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let (_db, server) = server_on(backend, "");
    let owner = ChatClient::connect(&server.url, &chat_token("m0", &[]))
        .await
        .unwrap();
    let conv = owner
        .create_group("property", &MEMBERS[1..])
        .await
        .unwrap()
        .id;
    drop(owner);

    let mut devices: Vec<Device> = MEMBERS.iter().map(|_| Device::default()).collect();
    for (i, who) in MEMBERS.iter().enumerate() {
        devices[i].reconnect(&server, who, &conv, 0, seed).await;
    }
    // client_msg_id -> acknowledged seq; and sends whose fate is unknown.
    let mut acked: HashMap<String, u64> = HashMap::new();
    let mut plain_sends: Vec<Vec<String>> = vec![Vec::new(); MEMBERS.len()];
    let mut unknown: Vec<Vec<(String, String)>> = vec![Vec::new(); MEMBERS.len()];
    let mut next_id = 0;

    for _ in 0..STEPS {
        let m = rng.gen_range(0..MEMBERS.len());
        let who = MEMBERS[m];
        let dev = &mut devices[m];
        match rng.gen_range(0..10) {
            // A plain send, acknowledged.
            0..=3 if dev.client.is_some() => {
                next_id += 1;
                let id = format!("{who}-{next_id}");
                let ack = dev
                    .client
                    .as_ref()
                    .unwrap()
                    .send_text(&conv, &id, &id)
                    .await
                    .unwrap();
                assert!(!ack.duplicate);
                acked.insert(id.clone(), ack.seq);
                plain_sends[m].push(id);
            }
            // A send whose socket dies before the answer: it may or may not be stored.
            4 if dev.client.is_some() => {
                next_id += 1;
                let id = format!("{who}-{next_id}");
                let client = dev.client.take().unwrap();
                client
                    .notify(
                        json!({"type": "chat_send", "conversation": conv, "client_msg_id": id,
                                   "kind": "text", "body": {"text": id}}),
                    )
                    .unwrap();
                client.close();
                unknown[m].push((id.clone(), id));
            }
            // A retry of an unanswered send: stored exactly once either way.
            5 if dev.client.is_some() && !unknown[m].is_empty() => {
                let (id, text) = unknown[m].remove(0);
                let seq = dev.send(&conv, &id, &text).await;
                acked.insert(id, seq);
            }
            6 if dev.client.is_some() => {
                dev.drain(seed).await;
                dev.client.take().unwrap().close();
            }
            // Reconnect, sometimes with a stale cursor (a device restored from backup).
            7..=8 if dev.client.is_none() => {
                let cursor = dev.cursor();
                let from = if rng.gen_bool(0.5) {
                    rng.gen_range(0..=cursor)
                } else {
                    cursor
                };
                dev.reconnect(&server, who, &conv, from, seed).await;
            }
            _ => dev.drain(seed).await,
        }
    }

    // Everyone comes back, retries what was never answered, and catches up.
    for (m, who) in MEMBERS.iter().enumerate() {
        let dev = &mut devices[m];
        if dev.client.is_none() {
            let cursor = dev.cursor();
            dev.reconnect(&server, who, &conv, cursor, seed).await;
        }
        for (id, text) in std::mem::take(&mut unknown[m]) {
            let seq = dev.send(&conv, &id, &text).await;
            acked.insert(id, seq);
        }
    }
    for (m, who) in MEMBERS.iter().enumerate() {
        let dev = &mut devices[m];
        dev.drain(seed).await;
        let cursor = dev.cursor();
        dev.reconnect(&server, who, &conv, cursor, seed).await;

        let seqs: Vec<u64> = dev.seen.keys().copied().collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "seed {seed}: {who} has a gap"
        );
        let texts: Vec<&EventInfo> = dev
            .seen
            .values()
            .filter(|e| e.kind == EventKind::Text)
            .collect();
        let mut ids: Vec<&str> = texts
            .iter()
            .filter_map(|e| e.client_msg_id.as_deref())
            .collect();
        assert_eq!(
            ids.len(),
            acked.len(),
            "seed {seed}: {who} has {} messages, {} were acknowledged",
            ids.len(),
            acked.len()
        );
        for e in &texts {
            let id = e.client_msg_id.as_deref().unwrap();
            assert_eq!(
                acked.get(id),
                Some(&e.seq),
                "seed {seed}: {who} has {id} at the wrong seq"
            );
        }
        ids.sort();
        ids.dedup();
        assert_eq!(
            ids.len(),
            acked.len(),
            "seed {seed}: a message appears twice for {who}"
        );
    }
    // Each sender's answered sends are stored in the order they were made. (A retried
    // send is left out: it may have been stored when first sent, before later ones.)
    for (m, order) in plain_sends.iter().enumerate() {
        let seqs: Vec<u64> = order.iter().map(|id| acked[id]).collect();
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: {}'s messages out of order",
            MEMBERS[m]
        );
    }
}
