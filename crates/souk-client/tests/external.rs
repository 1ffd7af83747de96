//! Peers whose SDP the caller carries: a publisher and a receiver, wired to each other
//! with no server between them, exchange real media.

use std::time::Duration;

use souk_client::{ClientOptions, ExternalPeers, SyntheticMedia};
use souk_proto::model::TrackKind;

#[tokio::test]
async fn external_peers_exchange_media_over_sdp_the_caller_carries() {
    let publisher = ExternalPeers::new(ClientOptions::default());
    let receiver = ExternalPeers::new(ClientOptions {
        receive_packets: true,
        ..Default::default()
    });
    let offer = publisher
        .offer_to_publish(SyntheticMedia::default())
        .await
        .expect("an offer");
    let answer = receiver.answer_offer(offer).await.expect("an answer");
    publisher
        .accept_publish_answer(answer)
        .await
        .expect("the answer applies");

    let stats = receiver
        .wait_for("audio and video to arrive", Duration::from_secs(20), |s| {
            s.frames_of(TrackKind::Video) >= 30 && s.frames_of(TrackKind::Audio) >= 30
        })
        .await
        .expect("media flows");
    assert!(stats.subscriber_connected);
    assert!(stats.tracks.keys().all(|id| id.starts_with("mid-")));
    assert!(stats.latency.quantile_ms(0.5).is_some());

    // An answer with no offer pending is refused, not applied.
    let stray = publisher.accept_publish_answer("v=0".into()).await;
    assert!(stray.is_err());
}
