//! Whole rooms driven through the sans-IO core on simulated time.

mod common;

use std::time::Duration;

use common::Room;
use souk_proto::signal::{ClientMessage, ServerMessage};
use souk_proto::token::Role;

#[test]
fn video_flows_between_two_participants_starting_at_a_keyframe() {
    let mut room = Room::new(1);
    let a = room.join("r", "alice", Role::Staff);
    let b = room.join("r", "bob", Role::Shopper);
    room.publish_video(a, false);
    room.publish_video(b, false);
    room.run_for(Duration::from_secs(5));

    for (me, other) in [(a, b), (b, a)] {
        let track = room.published_tracks(other)[0].clone();
        let got = room.clients[me]
            .received
            .get(&track)
            .cloned()
            .unwrap_or_default();
        assert!(
            got.frames > 100,
            "{} got {} frames of {}",
            room.clients[me].identity,
            got.frames,
            track
        );
        assert_eq!(
            got.first_is_key,
            Some(true),
            "the first frame a subscriber sees is a keyframe"
        );
    }
}

#[test]
fn adaptive_stream_picks_the_layer_that_covers_the_rendered_size() {
    let mut room = Room::new(2);
    let host = room.join("live", "host", Role::Host);
    let viewer = room.join("live", "viewer", Role::Audience);
    room.publish_video(host, true);
    room.run_for(Duration::from_secs(3));
    let track = room.published_tracks(host)[0].clone();
    let widths = |room: &Room| {
        room.clients[viewer]
            .received
            .get(&track)
            .map(|r| r.key_widths.clone())
            .unwrap_or_default()
    };
    assert_eq!(
        widths(&room).last(),
        Some(&1280),
        "no size given: the top layer"
    );

    room.show(viewer, &track, 300, 170);
    room.run_for(Duration::from_secs(3));
    assert_eq!(
        widths(&room).last(),
        Some(&320),
        "a thumbnail gets the smallest layer"
    );

    room.show(viewer, &track, 600, 340);
    room.run_for(Duration::from_secs(3));
    assert_eq!(
        widths(&room).last(),
        Some(&640),
        "a medium tile gets the middle layer"
    );
}

#[test]
fn a_late_joiner_receives_tracks_published_before_it_came() {
    let mut room = Room::new(3);
    let a = room.join("r", "early", Role::Staff);
    room.publish_video(a, false);
    room.run_for(Duration::from_secs(2));
    let late = room.join("r", "late", Role::Shopper);
    room.run_for(Duration::from_secs(3));
    let track = room.published_tracks(a)[0].clone();
    let got = room.clients[late]
        .received
        .get(&track)
        .cloned()
        .unwrap_or_default();
    assert!(got.frames > 50, "late joiner got {} frames", got.frames);
    assert_eq!(got.first_is_key, Some(true));
}

#[test]
fn leaving_cleans_up_and_the_empty_room_closes() {
    let mut room = Room::new(4);
    let a = room.join("r", "alice", Role::Staff);
    let b = room.join("r", "bob", Role::Staff);
    room.publish_video(a, false);
    room.run_for(Duration::from_secs(2));
    room.send(a, ClientMessage::Leave(Default::default()));
    assert!(room.clients[b]
        .messages
        .iter()
        .any(|m| matches!(m, ServerMessage::ParticipantLeft(_))));
    assert!(room.clients[b]
        .messages
        .iter()
        .any(|m| matches!(m, ServerMessage::TrackUnpublished(_))));
    assert_eq!(room.sfu.participant_count(), 1);
    room.send(b, ClientMessage::Leave(Default::default()));
    assert_eq!(room.sfu.participant_count(), 0);
    assert_eq!(
        room.sfu.room_count(),
        1,
        "an empty room lingers for a while"
    );
    room.run_for(room.sfu.config().empty_room_timeout + Duration::from_secs(1));
    assert_eq!(room.sfu.room_count(), 0, "then closes");
}

#[test]
fn a_dropped_socket_is_resumable_within_the_window_then_removed() {
    let mut room = Room::new(5);
    let a = room.join("r", "alice", Role::Staff);
    let b = room.join("r", "bob", Role::Staff);
    let id = room.clients[a].id;
    room.sfu.signal_lost(room.now, id);
    room.run_for(room.sfu.config().resume_window - Duration::from_secs(1));
    assert_eq!(
        room.sfu.participant_count(),
        2,
        "still there inside the window"
    );
    room.run_for(Duration::from_secs(2));
    assert_eq!(
        room.sfu.participant_count(),
        1,
        "removed once the window passed"
    );
    assert!(room.clients[b]
        .messages
        .iter()
        .any(|m| matches!(m, ServerMessage::ParticipantLeft(l) if l.identity == "alice")));
}

#[test]
fn the_same_identity_joining_again_replaces_the_old_session() {
    let mut room = Room::new(6);
    let first = room.join("r", "alice", Role::Staff);
    room.join("r", "alice", Role::Staff);
    assert_eq!(room.sfu.participant_count(), 1);
    assert!(room.clients[first].messages.iter().any(|m| matches!(m, ServerMessage::Leave(l) if l.reason == souk_proto::model::LeaveReason::DuplicateIdentity)));
}

#[test]
fn video_survives_five_percent_loss_through_retransmission() {
    let mut room = Room::new(7);
    room.link.loss = 0.05;
    let a = room.join("r", "alice", Role::Staff);
    let b = room.join("r", "bob", Role::Staff);
    room.publish_video(a, false);
    room.run_for(Duration::from_secs(10));
    let track = room.published_tracks(a)[0].clone();
    let got = room.clients[b]
        .received
        .get(&track)
        .cloned()
        .unwrap_or_default();
    // 30 fps for ~9.5 s after connecting; NACK/RTX must recover nearly all of it.
    assert!(
        got.frames > 250,
        "bob got {} frames under 5% loss",
        got.frames
    );
}
