//! Live rooms through the sans-IO core: the stage, comments, likes, moderation and
//! catching up on room events.

mod common;

use std::time::Duration;

use common::Room;
use souk_proto::error::ErrorCode;
use souk_proto::live::{EventCursor, LiveEvent, Moderation};
use souk_proto::signal::{
    ClientMessage, CommentRequest, IdentityRef, Joined, LikeRequest, ModerateRequest, Req,
    ServerMessage, StageDecision,
};
use souk_proto::token::Role;
use souk_sfu::{JoinRequest, ParticipantId};

fn errors(room: &Room, i: usize) -> Vec<ErrorCode> {
    room.clients[i]
        .messages
        .iter()
        .filter_map(|m| match m {
            ServerMessage::Error(e) => Some(e.code),
            _ => None,
        })
        .collect()
}

fn room_events(room: &Room, i: usize) -> Vec<souk_proto::live::RoomEvent> {
    room.clients[i]
        .messages
        .iter()
        .flat_map(|m| match m {
            ServerMessage::RoomEvents(batch) => batch.events.clone(),
            _ => Vec::new(),
        })
        .collect()
}

fn events(room: &Room, i: usize) -> Vec<LiveEvent> {
    room_events(room, i).into_iter().map(|e| e.event).collect()
}

fn last_stage(room: &Room, i: usize) -> souk_proto::live::StageState {
    events(room, i)
        .into_iter()
        .rev()
        .find_map(|e| match e {
            LiveEvent::Stage(s) => Some(s),
            _ => None,
        })
        .expect("a stage event")
}

/// Sends and lets the batched room events go out.
/// The `joined` the core sends `id` next, taken straight from its output.
fn next_joined(room: &mut Room, id: ParticipantId) -> Joined {
    std::iter::from_fn(|| room.sfu.poll_output())
        .find_map(|o| match o {
            souk_sfu::Output::Signal(to, msg) if to == id => match *msg {
                ServerMessage::Joined(j) => Some(j),
                _ => None,
            },
            _ => None,
        })
        .expect("joined")
}

fn send(room: &mut Room, i: usize, msg: ClientMessage) {
    room.send(i, msg);
    room.run_for(Duration::from_millis(200));
}

fn comment(text: &str) -> ClientMessage {
    ClientMessage::Comment(CommentRequest {
        req: None,
        text: text.into(),
    })
}

#[test]
fn an_approved_viewer_publishes_without_a_new_token_and_loses_it_when_removed() {
    let mut room = Room::new(21);
    let host = room.join("live", "host", Role::Host);
    let guest = room.join("live", "guest", Role::Audience);
    let viewer = room.join("live", "viewer", Role::Audience);

    room.publish_video(guest, false);
    assert_eq!(
        errors(&room, guest),
        vec![ErrorCode::PermissionDenied],
        "audience cannot publish"
    );

    send(&mut room, guest, ClientMessage::RaiseHand(Req::default()));
    assert_eq!(last_stage(&room, host).hands, vec!["guest"]);
    // A viewer cannot approve anyone, themself included.
    let approve = ClientMessage::StageDecision(StageDecision {
        req: None,
        identity: "guest".into(),
        approve: true,
    });
    send(&mut room, viewer, approve.clone());
    assert_eq!(errors(&room, viewer), vec![ErrorCode::PermissionDenied]);

    send(&mut room, host, approve);
    let stage = last_stage(&room, viewer);
    assert_eq!(
        (stage.seats, stage.hands.len()),
        (vec!["guest".to_owned()], 0)
    );
    assert!(room.clients[guest].messages.iter().any(|m| matches!(m,
        ServerMessage::ParticipantUpdated(p) if p.participant.identity == "guest" && p.participant.grants.publish)));

    room.publish_video(guest, false);
    room.run_for(Duration::from_secs(3));
    let track = room.published_tracks(guest)[0].clone();
    let got = room.clients[viewer]
        .received
        .get(&track)
        .cloned()
        .unwrap_or_default();
    assert!(
        got.frames > 30,
        "the viewer decodes the new co-host: {} frames",
        got.frames
    );

    send(
        &mut room,
        host,
        ClientMessage::StageRemove(IdentityRef {
            req: None,
            identity: "guest".into(),
        }),
    );
    assert!(
        room.clients[viewer].messages.iter().any(|m| matches!(m,
        ServerMessage::TrackUnpublished(t) if t.track_id == track)),
        "the removed co-host's track goes"
    );
    assert!(last_stage(&room, viewer).seats.is_empty());
}

#[test]
fn comments_are_limited_moderated_and_likes_are_batched() {
    let mut room = Room::new(22);
    let host = room.join("live", "host", Role::Host);
    let fan = room.join("live", "fan", Role::Audience);
    let other = room.join("live", "other", Role::Audience);

    send(&mut room, fan, comment("¡Hola! ¿Cuánto cuesta?"));
    assert!(events(&room, other)
        .iter()
        .any(|e| matches!(e, LiveEvent::Comment(c) if c.identity == "fan")));
    send(&mut room, fan, comment(&"x".repeat(201)));
    send(&mut room, fan, comment("two"));
    send(&mut room, fan, comment("three"));
    send(&mut room, fan, comment("four, too fast"));
    assert_eq!(
        errors(&room, fan),
        vec![ErrorCode::MessageTooLarge, ErrorCode::RateLimited]
    );

    let mute = ClientMessage::Moderate(ModerateRequest {
        req: None,
        action: Moderation::Mute {
            identity: "fan".into(),
            seconds: 60,
        },
    });
    send(&mut room, other, mute.clone());
    assert_eq!(
        errors(&room, other),
        vec![ErrorCode::PermissionDenied],
        "viewers do not moderate"
    );
    send(&mut room, host, mute);
    room.run_for(Duration::from_secs(2));
    send(&mut room, fan, comment("let me talk"));
    assert_eq!(errors(&room, fan).last(), Some(&ErrorCode::Muted));

    for _ in 0..5 {
        send(
            &mut room,
            other,
            ClientMessage::Like(LikeRequest { count: 1 }),
        );
    }
    room.run_for(Duration::from_secs(1));
    let likes: Vec<(u64, u64)> = events(&room, host)
        .into_iter()
        .filter_map(|e| match e {
            LiveEvent::Likes { added, total } => Some((added, total)),
            _ => None,
        })
        .collect();
    assert_eq!(
        likes.iter().map(|l| l.0).sum::<u64>(),
        5,
        "every like counted: {likes:?}"
    );
    assert_eq!(likes.last().map(|l| l.1), Some(5), "the running total");
    assert!(likes.len() < 5, "likes are batched: {likes:?}");
    assert!(events(&room, host)
        .iter()
        .any(|e| matches!(e, LiveEvent::Viewers { count: 3, .. })));
}

#[test]
fn a_returning_viewer_catches_up_or_is_told_to_reload_and_a_ban_keeps_them_out() {
    let mut room = Room::new(23);
    let host = room.join("live", "host", Role::Host);
    let fan = room.join("live", "fan", Role::Audience);
    send(&mut room, host, comment("welcome"));
    let seen = room_events(&room, fan)
        .last()
        .map(|e| (e.epoch.clone(), e.seq))
        .expect("an event");
    // The viewer drops; two comments happen while away.
    room.sfu.signal_lost(room.now, room.clients[fan].id);
    send(&mut room, host, comment("flash sale in 1 minute"));
    send(&mut room, host, comment("coupons now"));

    let rejoin = |cursor: EventCursor| JoinRequest {
        room: "live".into(),
        identity: "fan".into(),
        name: "fan".into(),
        role: Role::Audience,
        grants: Role::Audience.default_grants(),
        metadata: None,
        auto_subscribe: true,
        req: None,
        last_event: Some(cursor),
    };
    let fan2 = room
        .sfu
        .join(
            room.now,
            rejoin(EventCursor {
                epoch: seen.0.clone(),
                seq: seen.1,
            }),
        )
        .unwrap();
    let joined = next_joined(&mut room, fan2);
    let missed: Vec<String> = joined
        .live
        .missed
        .iter()
        .filter_map(|e| match &e.event {
            LiveEvent::Comment(c) => Some(c.text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(missed, vec!["flash sale in 1 minute", "coupons now"]);
    assert!(!joined.live.reload);

    let fan3 = room
        .sfu
        .join(
            room.now,
            rejoin(EventCursor {
                epoch: "RM_other".into(),
                seq: 3,
            }),
        )
        .unwrap();
    let joined = next_joined(&mut room, fan3);
    assert!(
        joined.live.reload,
        "another epoch: rebuild from the snapshot"
    );

    send(
        &mut room,
        host,
        ClientMessage::Moderate(ModerateRequest {
            req: None,
            action: Moderation::Ban {
                identity: "fan".into(),
                seconds: 0,
            },
        }),
    );
    let again = room.sfu.join(
        room.now,
        rejoin(EventCursor {
            epoch: seen.0,
            seq: 0,
        }),
    );
    assert_eq!(again.unwrap_err().code, ErrorCode::Banned);
}

#[test]
fn a_pinned_product_carries_the_capture_time_of_the_hosts_frame() {
    let mut room = Room::new(24);
    let host = room.join("live", "host", Role::Host);
    let viewer = room.join("live", "viewer", Role::Audience);
    room.publish_video(host, false);
    // str0m sends a sender report about once a second.
    room.run_for(Duration::from_secs(4));
    let product = souk_proto::live::PinnedProduct {
        product_id: "tote".into(),
        title: "Tote".into(),
        price_minor: 8900,
        currency: "USD".into(),
        image_url: None,
        url: None,
        capture_ms: None,
    };
    send(
        &mut room,
        host,
        ClientMessage::PinProduct(souk_proto::signal::PinRequest {
            req: None,
            product: Some(product),
        }),
    );
    let pinned = events(&room, viewer)
        .into_iter()
        .find_map(|e| match e {
            LiveEvent::ProductPinned(p) => Some(p),
            _ => None,
        })
        .expect("the pin is announced");
    let captured = pinned
        .capture_ms
        .expect("stamped from the host's sender reports");
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    // Simulated time runs ahead of the wall clock by the seconds the test simulated.
    assert!(
        captured.abs_diff(wall) < 60_000,
        "capture {captured} vs now {wall}"
    );
}

#[test]
fn only_the_agent_publishes_captions_and_its_own_are_labelled_as_ai() {
    use souk_proto::live::{AgentStatus, Caption};
    use souk_proto::signal::{AgentEvent, AgentEventRequest};
    let mut room = Room::new(41);
    let shopper = room.join("consult", "layla", Role::Shopper);
    let agent = room.join("consult", "souk-agent", Role::Agent);
    let caption = |speaker: &str, text: &str, ai: bool| Caption {
        speaker: speaker.into(),
        text: text.into(),
        lang: "en".into(),
        is_final: true,
        ai,
        interrupted: false,
    };
    let say = |event| ClientMessage::AgentEvent(AgentEventRequest { req: None, event });
    // The shopper's words, transcribed by the agent; then the agent's reply, which it
    // did not mark as AI: the server does.
    send(
        &mut room,
        agent,
        say(AgentEvent::Caption(caption(
            "layla",
            "where is my order",
            true,
        ))),
    );
    send(
        &mut room,
        agent,
        say(AgentEvent::Caption(caption(
            "souk-agent",
            "It shipped today.",
            false,
        ))),
    );
    send(
        &mut room,
        agent,
        say(AgentEvent::Status(AgentStatus {
            identity: "someone-else".into(),
            state: "listening".into(),
            code: None,
            message: None,
        })),
    );
    let seen: Vec<LiveEvent> = events(&room, shopper);
    let captions: Vec<(String, bool)> = seen
        .iter()
        .filter_map(|e| match e {
            LiveEvent::Caption(c) => Some((c.speaker.clone(), c.ai)),
            _ => None,
        })
        .collect();
    assert_eq!(
        captions,
        [("layla".to_owned(), false), ("souk-agent".to_owned(), true)]
    );
    assert!(seen
        .iter()
        .any(|e| matches!(e, LiveEvent::Agent(s) if s.identity == "souk-agent")));

    // A person cannot pass words off as the agent's, and a caption is bounded.
    send(
        &mut room,
        shopper,
        say(AgentEvent::Caption(caption(
            "souk-agent",
            "free shoes!",
            true,
        ))),
    );
    assert_eq!(errors(&room, shopper), [ErrorCode::PermissionDenied]);
    send(
        &mut room,
        agent,
        say(AgentEvent::Caption(caption(
            "souk-agent",
            &"a".repeat(2001),
            true,
        ))),
    );
    assert_eq!(errors(&room, agent), [ErrorCode::MessageTooLarge]);
}
