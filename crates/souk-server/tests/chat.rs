//! Chat against the real server, on SQLite and on PostgreSQL: each scenario runs on both.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::{chat_token, server_on, Backend, TestServer};
use serde_json::json;
use souk_client::chat::ChatClient;
use souk_client::ClientError;
use souk_proto::chat::{ChatServerMessage, EventInfo, EventKind, MessageState};

/// Runs a scenario once per backend, as `scenario::sqlite` and `scenario::postgres`.
macro_rules! on_both_backends {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$scenario(super::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$scenario(super::Backend::Postgres).await
            }
        }
    )*};
}

on_both_backends!(
    messages_are_ordered_acknowledged_and_idempotent,
    bad_input_is_refused_and_leaves_nothing_behind,
    groups_are_moderated,
    offline_members_get_pushes_and_catch_up,
    restart_after_kill_keeps_every_acknowledged_message,
);

async fn connect(server: &TestServer, identity: &str, shops: &[&str]) -> ChatClient {
    ChatClient::connect(&server.url, &chat_token(identity, shops))
        .await
        .unwrap_or_else(|e| panic!("{identity} could not connect to chat: {e}"))
}

fn code(err: ClientError) -> String {
    match err {
        ClientError::Refused(e) => e.code.as_str().to_owned(),
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Waits for the next pushed event of `kind`, skipping other pushes.
async fn next_event(client: &ChatClient, kind: EventKind) -> EventInfo {
    loop {
        match client.next_pushed(common::WAIT).await {
            Some(ChatServerMessage::ChatEvent(e)) if e.kind == kind => return e,
            Some(_) => continue,
            None => panic!("no {kind:?} event in time"),
        }
    }
}

async fn next_push<T>(
    client: &ChatClient,
    what: &str,
    mut pick: impl FnMut(ChatServerMessage) -> Option<T>,
) -> T {
    loop {
        match client.next_pushed(common::WAIT).await {
            Some(msg) => {
                if let Some(found) = pick(msg) {
                    return found;
                }
            }
            None => panic!("no {what} in time"),
        }
    }
}

/// Everything in one conversation, from the start, as a fresh device sees it.
async fn all_events(client: &ChatClient, conversation: &str) -> Vec<EventInfo> {
    let mut cursor = 0;
    let mut events = Vec::new();
    loop {
        let synced = client
            .sync(
                &HashMap::from([(conversation.to_owned(), cursor)]),
                Some(500),
            )
            .await
            .expect("sync");
        let conv = synced
            .conversations
            .into_iter()
            .find(|c| c.conversation.id == conversation)
            .expect("the conversation is in the sync");
        cursor = conv.events.last().map_or(cursor, |e| e.seq);
        events.extend(conv.events);
        if !conv.has_more {
            return events;
        }
    }
}

async fn messages_are_ordered_acknowledged_and_idempotent(backend: Backend) {
    let (_db, server) = server_on(backend, "");
    let ana = connect(&server, "ana", &[]).await;
    // Bruno answers for the shop from two devices.
    let bruno = connect(&server, "bruno", &["acme"]).await;
    let bruno_tablet = connect(&server, "bruno", &["acme"]).await;

    let conv = ana.open_direct("shop:acme").await.unwrap();
    assert_eq!(conv.members.len(), 2);
    assert_eq!(
        ana.open_direct("shop:acme").await.unwrap().id,
        conv.id,
        "opening is idempotent"
    );

    let first = ana
        .send_text(&conv.id, "m1", "Hola, ¿tienen talla 38?")
        .await
        .unwrap();
    assert_eq!((first.seq, first.duplicate), (1, false));
    let product = json!({"product_id": "sku-38", "title": "Sandal", "price_minor": 4599,
                         "currency": "EUR", "image_url": "https://cdn.example/s.png"});
    let second = ana
        .send(&conv.id, "m2", EventKind::Product, product.clone())
        .await
        .unwrap();
    assert_eq!(second.seq, 2);

    // A retry with the same id is the same message; a different body under it is refused.
    let retry = ana
        .send_text(&conv.id, "m1", "Hola, ¿tienen talla 38?")
        .await
        .unwrap();
    assert_eq!((retry.seq, retry.duplicate), (1, true));
    let reuse = ana
        .send_text(&conv.id, "m1", "something else")
        .await
        .unwrap_err();
    assert_eq!(code(reuse), "idempotency_conflict");

    // Both of the shop's devices get both messages live, in order.
    for device in [&bruno, &bruno_tablet] {
        let a = next_event(device, EventKind::Text).await;
        let b = next_event(device, EventKind::Product).await;
        assert_eq!((a.seq, b.seq), (1, 2));
        assert_eq!(a.sender, "ana");
        assert_eq!(b.body, product);
    }

    // The shop replies and reads; Ana sees the read receipt (her ticks).
    let reply = bruno
        .send_text(&conv.id, "r1", "Sí, la tenemos.")
        .await
        .unwrap();
    assert_eq!(reply.seq, 3);
    // (Ana's own devices get her messages too; the reply is the first from the shop.)
    let seen = loop {
        let e = next_event(&ana, EventKind::Text).await;
        if e.sender != "ana" {
            break e;
        }
    };
    assert_eq!((seen.sender.as_str(), seen.seq), ("shop:acme", 3));
    bruno
        .request(json!({"type": "chat_receipt", "conversation": conv.id, "read": 2}))
        .await
        .unwrap();
    let receipt = next_push(&ana, "a receipt", |m| match m {
        ChatServerMessage::ChatReceipt(r) => Some(r),
        _ => None,
    })
    .await;
    assert_eq!(
        (receipt.member.as_str(), receipt.read_seq),
        ("shop:acme", 2)
    );

    // Edits and recalls are events; history shows the outcome.
    ana.request(
        json!({"type": "chat_edit", "conversation": conv.id, "seq": 1,
                       "body": {"text": "Hola, ¿tienen talla 39?"}}),
    )
    .await
    .unwrap();
    let not_hers = bruno
        .request(
            json!({"type": "chat_edit", "conversation": conv.id, "seq": 1, "body": {"text": "x"}}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(not_hers), "permission_denied");
    ana.request(json!({"type": "chat_recall", "conversation": conv.id, "seq": 2}))
        .await
        .unwrap();

    // A new device catches up on everything, converged.
    let phone = connect(&server, "ana", &[]).await;
    let events = all_events(&phone, &conv.id).await;
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3, 4, 5]);
    assert_eq!(events[0].state, MessageState::Edited);
    assert_eq!(events[0].body["text"], "Hola, ¿tienen talla 39?");
    assert_eq!(events[1].state, MessageState::Recalled);
    assert_eq!(
        events[1].body,
        json!({}),
        "a recalled message's content is gone"
    );
    assert_eq!(
        (events[3].kind, events[3].target_seq),
        (EventKind::Edit, Some(1))
    );
    assert_eq!(
        (events[4].kind, events[4].target_seq),
        (EventKind::Recall, Some(2))
    );

    // Unread counts: Ana has read nothing from the shop yet; the shop read up to 2.
    let synced = phone.sync(&HashMap::new(), Some(0)).await.unwrap();
    assert_eq!(synced.conversations[0].unread, 1);
    let shop_view = bruno_tablet.sync(&HashMap::new(), Some(0)).await.unwrap();
    assert_eq!(
        shop_view.conversations[0].unread, 0,
        "ana's only visible message was read"
    );

    // REST pages back through the same history.
    let page: serde_json::Value = reqwest::Client::new()
        .get(format!(
            "{}/api/v1/chat/conversations/{}/events?before=4&limit=2",
            server.url, conv.id
        ))
        .bearer_auth(chat_token("ana", &[]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let seqs: Vec<u64> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    assert_eq!(page["has_more"], true);
}

async fn bad_input_is_refused_and_leaves_nothing_behind(backend: Backend) {
    let (_db, server) = server_on(backend, "[chat]\nedit_window_s = 1\n");
    let ana = connect(&server, "ana", &[]).await;
    let eve = connect(&server, "eve", &[]).await;
    let conv = ana.open_direct("bruno").await.unwrap();
    ana.send_text(&conv.id, "ok-1", "hello").await.unwrap();

    let too_long = "x".repeat(4001);
    assert_eq!(
        code(ana.send_text(&conv.id, "big", &too_long).await.unwrap_err()),
        "message_too_large"
    );
    assert_eq!(
        code(ana.send_text("dm_nope", "n1", "hi").await.unwrap_err()),
        "conversation_not_found"
    );
    assert_eq!(
        code(
            eve.send_text(&conv.id, "e1", "let me in")
                .await
                .unwrap_err()
        ),
        "not_a_member"
    );
    assert_eq!(
        code(
            ana.send_text(&conv.id, "b1", "pay me by western union")
                .await
                .unwrap_err()
        ),
        "content_blocked"
    );
    assert_eq!(
        code(
            ana.send(
                &conv.id,
                "i1",
                EventKind::Image,
                json!({"url": "javascript:alert(1)"})
            )
            .await
            .unwrap_err()
        ),
        "invalid_request"
    );
    assert_eq!(
        code(
            ana.sync(&HashMap::from([(conv.id.clone(), 99)]), None)
                .await
                .unwrap_err()
        ),
        "invalid_cursor"
    );
    assert_eq!(
        code(
            ana.request(json!({"type": "chat_history", "conversation": conv.id, "before": 50}))
                .await
                .unwrap_err()
        ),
        "invalid_cursor"
    );
    assert_eq!(
        code(
            eve.sync(&HashMap::from([(conv.id.clone(), 0)]), None)
                .await
                .unwrap_err()
        ),
        "not_a_member"
    );
    // Malformed and unknown messages get their own codes and the socket stays usable.
    assert_eq!(
        code(
            ana.request(json!({"type": "chat_send", "conversation": conv.id}))
                .await
                .unwrap_err()
        ),
        "malformed_message"
    );
    assert_eq!(
        code(
            ana.request(json!({"type": "chat_teleport"}))
                .await
                .unwrap_err()
        ),
        "unknown_message_type"
    );

    // The edit window closes (1 s here). Edits inside it succeed; poll until refused.
    let deadline = std::time::Instant::now() + common::WAIT;
    loop {
        let edit = json!({"type": "chat_edit", "conversation": conv.id, "seq": 1, "body": {"text": "hello!"}});
        match ana.request(edit).await {
            Err(e) => {
                assert_eq!(code(e), "edit_window_closed");
                break;
            }
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "the edit window never closed"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        code(
            ana.request(json!({"type": "chat_recall", "conversation": conv.id, "seq": 1}))
                .await
                .unwrap_err()
        ),
        "edit_window_closed"
    );

    // A flood: some sends are refused, and exactly the acknowledged ones are stored.
    let mut acked = Vec::new();
    let mut limited = 0;
    for i in 0..120 {
        match ana
            .send_text(&conv.id, &format!("flood-{i}"), "buy now")
            .await
        {
            Ok(ack) => acked.push(ack.seq),
            Err(e) => {
                assert_eq!(code(e), "rate_limited");
                limited += 1;
            }
        }
    }
    assert!(limited > 0, "a flood of 120 messages is limited");
    // (Read back from another device: this socket's own allowance is spent.)
    let laptop = connect(&server, "ana", &[]).await;
    let events = all_events(&laptop, &conv.id).await;
    let texts: Vec<&EventInfo> = events
        .iter()
        .filter(|e| e.kind == EventKind::Text)
        .collect();
    assert_eq!(
        texts.len(),
        1 + acked.len(),
        "stored = the first message + every acknowledged one"
    );
    assert!(events
        .iter()
        .all(|e| e.body["text"] != "pay me by western union"));
}

async fn groups_are_moderated(backend: Backend) {
    let (_db, server) = server_on(backend, "");
    let owner = connect(&server, "olga", &[]).await;
    let ali = connect(&server, "ali", &[]).await;
    let bea = connect(&server, "bea", &[]).await;
    let group = owner
        .create_group("Group buy: linen", &["ali", "bea"])
        .await
        .unwrap();
    assert_eq!(group.members.len(), 3);

    // A plain member cannot moderate.
    let denied = ali
        .request(
            json!({"type": "chat_mute", "conversation": group.id, "member": "bea", "seconds": 60}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(denied), "permission_denied");

    // Appoint an admin; the admin mutes a member.
    owner
        .request(json!({"type": "chat_set_role", "conversation": group.id, "member": "ali", "role": "admin"}))
        .await
        .unwrap();
    ali.request(
        json!({"type": "chat_mute", "conversation": group.id, "member": "bea", "seconds": 60}),
    )
    .await
    .unwrap();
    assert_eq!(
        code(bea.send_text(&group.id, "b1", "hello?").await.unwrap_err()),
        "muted"
    );

    // The admin deletes someone else's message; everyone converges.
    let ack = owner
        .send_text(&group.id, "o1", "Orders close Friday")
        .await
        .unwrap();
    ali.request(json!({"type": "chat_delete", "conversation": group.id, "seq": ack.seq}))
        .await
        .unwrap();
    let deletion = next_event(&bea, EventKind::Delete).await;
    assert_eq!(deletion.target_seq, Some(ack.seq));

    // A ban removes the member and keeps them out.
    owner
        .request(
            json!({"type": "chat_ban", "conversation": group.id, "member": "bea", "seconds": 0}),
        )
        .await
        .unwrap();
    assert_eq!(
        code(bea.send_text(&group.id, "b2", "hi").await.unwrap_err()),
        "not_a_member"
    );
    let readd = owner
        .request(json!({"type": "chat_add_members", "conversation": group.id, "members": ["bea"]}))
        .await
        .unwrap_err();
    assert_eq!(code(readd), "banned");
    owner
        .request(json!({"type": "chat_unban", "conversation": group.id, "member": "bea"}))
        .await
        .unwrap();
    owner
        .request(json!({"type": "chat_add_members", "conversation": group.id, "members": ["bea"]}))
        .await
        .unwrap();

    // Membership changes are events in the conversation.
    let kinds: Vec<EventKind> = all_events(&owner, &group.id)
        .await
        .iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::GroupCreated,
            EventKind::RoleChanged,
            EventKind::Text,
            EventKind::Delete,
            EventKind::MemberRemoved,
            EventKind::MemberAdded,
        ]
    );

    // Blocking in a direct conversation.
    let dm = ali.open_direct("bea").await.unwrap();
    bea.request(json!({"type": "chat_block", "user": "ali"}))
        .await
        .unwrap();
    assert_eq!(
        code(ali.send_text(&dm.id, "a1", "hi").await.unwrap_err()),
        "blocked"
    );
    bea.request(json!({"type": "chat_unblock", "user": "ali"}))
        .await
        .unwrap();
    ali.send_text(&dm.id, "a1", "hi").await.unwrap();

    // Presence reaches contacts only.
    let stranger = connect(&server, "zed", &[]).await;
    owner
        .notify(json!({"type": "chat_presence", "status": "away"}))
        .unwrap();
    let seen = next_push(&ali, "olga's presence", |m| match m {
        ChatServerMessage::ChatPresence(p) if p.user == "olga" => Some(p.status),
        _ => None,
    })
    .await;
    assert_eq!(seen, souk_proto::chat::PresenceStatus::Away);
    assert!(
        !matches!(
            stranger.next_pushed(Duration::from_millis(300)).await,
            Some(ChatServerMessage::ChatPresence(_))
        ),
        "a non-contact never sees presence"
    );
}

async fn offline_members_get_pushes_and_catch_up(backend: Backend) {
    let (push_url, mut pushes, fail_first) = common::push_receiver(2).await;
    let toml = format!("[chat]\npush_urls = [\"{push_url}\"]\n");
    let (_db, server) = server_on(backend, &toml);
    let seller = connect(&server, "seller", &[]).await;
    let conv = seller.open_direct("night-owl").await.unwrap();
    for i in 1..=3 {
        seller
            .send_text(
                &conv.id,
                &format!("s{i}"),
                &format!("Your parcel update #{i}"),
            )
            .await
            .unwrap();
    }
    // The receiver refuses the first deliveries; the outbox retries until it has all.
    let mut got = Vec::new();
    while got.len() < 3 {
        let push = tokio::time::timeout(Duration::from_secs(30), pushes.recv())
            .await
            .expect("pushes arrive despite early failures")
            .expect("receiver open");
        assert_eq!(push["recipient"], "night-owl");
        assert_eq!(push["type"], "chat.unread_message");
        let seq = push["seq"].as_u64().unwrap();
        if !got.contains(&seq) {
            got.push(seq);
        }
    }
    got.sort();
    assert_eq!(got, vec![1, 2, 3]);
    common::eventually("the outbox to drain", || async {
        common::gauge(&server, "souk_chat_push_outbox").await == 0
    })
    .await;
    assert!(
        fail_first.load(std::sync::atomic::Ordering::Relaxed) >= 2,
        "the first deliveries failed"
    );

    // The offline user comes online and catches up with the right unread count.
    let owl = connect(&server, "night-owl", &[]).await;
    assert_eq!(common::gauge(&server, "souk_chat_users_online").await, 2);
    let synced = owl.sync(&HashMap::new(), None).await.unwrap();
    let view = &synced.conversations[0];
    assert_eq!(view.unread, 3);
    let seqs: Vec<u64> = view.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    // Online now: no push for the next message.
    seller
        .send_text(&conv.id, "s4", "Delivered!")
        .await
        .unwrap();
    next_event(&owl, EventKind::Text).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), pushes.recv())
            .await
            .is_err(),
        "no push to a connected user"
    );
}

async fn restart_after_kill_keeps_every_acknowledged_message(backend: Backend) {
    let (_db, mut server) = server_on(backend, "");
    let senders = ["s0", "s1", "s2", "s3"];
    let mut conversations = Vec::new();
    for s in senders {
        let client = connect(&server, s, &[]).await;
        conversations.push(client.open_direct("sink").await.unwrap().id);
    }
    // Send storms from four users; the server is killed while they run.
    let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, u64)>();
    let mut storms = Vec::new();
    for (s, conv) in senders.iter().zip(&conversations) {
        let client = connect(&server, s, &[]).await;
        let (conv, acked_tx) = (conv.clone(), acked_tx.clone());
        storms.push(tokio::spawn(async move {
            for i in 0.. {
                let id = format!("storm-{i}");
                match client.send_text(&conv, &id, &format!("message {i}")).await {
                    Ok(ack) => {
                        let _ = acked_tx.send((conv.clone(), id, ack.seq));
                    }
                    Err(ClientError::Refused(e)) if e.code.as_str() == "rate_limited" => {
                        tokio::time::sleep(Duration::from_millis(20)).await
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    drop(acked_tx);
    let mut acked: Vec<(String, String, u64)> = Vec::new();
    while acked.len() < 200 {
        acked.push(acked_rx.recv().await.expect("acks arrive"));
    }
    server.crash_and_restart();
    for storm in storms {
        storm.await.unwrap();
    }
    while let Ok(more) = acked_rx.try_recv() {
        acked.push(more);
    }

    let sink = connect(&server, "sink", &[]).await;
    for conv in &conversations {
        let events = all_events(&sink, conv).await;
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=seqs.len() as u64).collect::<Vec<_>>(),
            "no gaps, no duplicates"
        );
        let ids: Vec<&str> = events
            .iter()
            .filter_map(|e| e.client_msg_id.as_deref())
            .collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), ids.len(), "each message once");
        for (c, id, seq) in acked.iter().filter(|(c, _, _)| c == conv) {
            let stored = events
                .iter()
                .find(|e| e.seq == *seq)
                .unwrap_or_else(|| panic!("acked {c}/{id} is lost"));
            assert_eq!(stored.client_msg_id.as_deref(), Some(id.as_str()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn translation_uses_the_configured_model_and_caches() {
    let (model_url, calls) = common::scripted_completions("مرحبا، نعم لدينا المقاس 38").await;
    let toml =
        format!("[chat.translator]\nbase_url = \"{model_url}/v1\"\nmodel = \"test-model\"\n");
    let (_db, server) = server_on(Backend::Sqlite, &toml);
    let ana = connect(&server, "ana", &[]).await;
    let conv = ana.open_direct("rami").await.unwrap();
    ana.send_text(&conv.id, "t1", "Hello, yes we have size 38")
        .await
        .unwrap();
    let rami = connect(&server, "rami", &[]).await;
    let ask = json!({"type": "chat_translate", "conversation": conv.id, "seq": 1, "locale": "ar"});
    for cached in [false, true] {
        match rami.request(ask.clone()).await.unwrap() {
            ChatServerMessage::ChatTranslation(t) => {
                assert_eq!(t.text, "مرحبا، نعم لدينا المقاس 38");
                assert_eq!(t.cached, cached);
            }
            other => panic!("expected a translation, got {}", other.to_json()),
        }
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "the second answer came from the cache"
    );
    let bad = rami
        .request(json!({"type": "chat_translate", "conversation": conv.id, "seq": 1, "locale": "arabic!"}))
        .await
        .unwrap_err();
    assert_eq!(code(bad), "invalid_request");

    // Without a translator: a clear error, never a fake translation.
    let (_plain_db, plain) = server_on(Backend::Sqlite, "");
    let ana = connect(&plain, "ana", &[]).await;
    let conv = ana.open_direct("rami").await.unwrap();
    ana.send_text(&conv.id, "t1", "Hello").await.unwrap();
    let err = ana
        .request(
            json!({"type": "chat_translate", "conversation": conv.id, "seq": 1, "locale": "ar"}),
        )
        .await
        .unwrap_err();
    assert_eq!(code(err), "translator_unavailable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_needs_a_chat_token_and_rooms_need_a_room() {
    let server = TestServer::start();
    let room_token = server.token("r1", "ana", "shopper");
    let err = ChatClient::connect(&server.url, &room_token)
        .await
        .err()
        .expect("refused");
    assert_eq!(code(err), "permission_denied");
    let mut raw = common::RawSignal::connect(&server).await;
    raw.send_text(
        json!({"type": "join", "protocol": 1, "token": chat_token("ana", &[])}).to_string(),
    )
    .await;
    assert_eq!(raw.next_error().await, "permission_denied");
}
