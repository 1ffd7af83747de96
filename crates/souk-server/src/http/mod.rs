//! The HTTP surface: health, signalling WebSocket, room-service API, demo pages.

mod agent_workers;
mod assets;
mod chat;
mod chat_api;
mod commerce_api;
mod dev;
mod live;
mod metrics;
mod rooms;
mod signal;
mod whip;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::rest::ErrorBody;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Keys;
use crate::media::MediaShards;
use crate::ratelimit::KeyedLimiter;

/// What every handler can reach.
pub struct AppState {
    pub media: MediaShards,
    pub keys: Keys,
    pub dev: bool,
    /// Signalling connections per client address, to blunt join floods.
    pub join_limiter: KeyedLimiter<std::net::IpAddr>,
    /// Proxies whose `X-Forwarded-For` names the real client.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    pub next_conn: AtomicU64,
    /// Signalling sockets currently open (a leak shows here first).
    pub open_sessions: std::sync::atomic::AtomicUsize,
    pub chat: Arc<souk_chat::Chat>,
    /// The AI assistant in shop chat.
    pub agent: Arc<souk_agent::chat_agent::ChatAgent>,
    /// The AI agent by voice, one per room that asks.
    pub room_agents: Arc<souk_agent::voice::room::RoomAgents>,
    pub ledger: Arc<souk_commerce::Ledger>,
    /// Keyword lists for live comments (the same as chat's).
    pub blocklist: souk_chat::moderation::Blocklist,
    /// WHIP session id -> (room, participant), for `DELETE`.
    pub whip_sessions:
        std::sync::Mutex<std::collections::HashMap<String, (String, souk_sfu::ParticipantId)>>,
    /// Chat messages per user, across their devices: a flood gets `rate_limited`.
    pub chat_send_limiter: KeyedLimiter<String>,
}

pub type State = Arc<AppState>;

/// Who a signalling session is, and the media engine that runs its room (looked up once,
/// at the join).
#[derive(Clone, Copy)]
struct Member<'a> {
    id: souk_sfu::ParticipantId,
    claims: &'a souk_proto::token::RoomClaims,
    engine: &'a crate::media::MediaHandle,
}

pub fn router(state: State, cors_origins: Option<&[String]>) -> Router {
    let cors = CorsLayer::new()
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ])
        .expose_headers([axum::http::header::LOCATION])
        .max_age(Duration::from_secs(600));
    let cors = match cors_origins {
        None => cors.allow_origin(AllowOrigin::any()),
        Some(origins) => cors.allow_origin(AllowOrigin::list(
            origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()),
        )),
    };
    let mut app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics::metrics))
        .route("/rtc", get(signal::upgrade))
        .route("/api/v1/rooms", get(rooms::list).post(rooms::create))
        .route("/api/v1/rooms/{room}", axum::routing::delete(rooms::delete))
        .route(
            "/api/v1/rooms/{room}/agent",
            get(rooms::agent_status)
                .post(rooms::agent_join)
                .delete(rooms::agent_leave),
        )
        .route("/api/v1/agent/workers", get(agent_workers::connect))
        .route(
            "/api/v1/rooms/{room}/participants",
            get(rooms::participants),
        )
        .route(
            "/api/v1/rooms/{room}/participants/{identity}",
            axum::routing::delete(rooms::remove_participant),
        )
        .route(
            "/api/v1/rooms/{room}/participants/{identity}/tracks/{track_id}/mute",
            post(rooms::mute_track),
        )
        .route("/api/v1/chat/conversations", get(chat_api::conversations))
        .route(
            "/api/v1/chat/conversations/{id}/events",
            get(chat_api::events),
        )
        .route(
            "/api/v1/chat/conversations/{id}/notices",
            post(chat_api::notice),
        )
        .route(
            "/api/v1/chat/conversations/{id}/agent",
            post(chat_api::agent_join).delete(chat_api::agent_leave),
        )
        .route(
            "/api/v1/gifts",
            get(commerce_api::gifts).put(commerce_api::put_gifts),
        )
        .route("/api/v1/wallets/{user}", get(commerce_api::balance))
        .route("/api/v1/wallets/{user}/top_up", post(commerce_api::top_up))
        .route("/api/v1/wallets/{user}/refund", post(commerce_api::refund))
        .route("/api/v1/rooms/{room}/coupons", post(commerce_api::coupon))
        .route("/api/v1/rooms/{room}/sales", post(commerce_api::sale))
        .route("/api/v1/rooms/{room}/battles", post(commerce_api::battle))
        .route(
            "/api/v1/rooms/{room}/leaderboard",
            get(commerce_api::leaderboard),
        )
        .route("/api/v1/battles/{id}", get(commerce_api::battle_score))
        .route("/api/v1/orders/{id}", get(commerce_api::order))
        .route("/api/v1/ledger/audit", get(commerce_api::audit))
        .route("/whip/{room}", post(whip::publish))
        .route(
            "/whip/{room}/{session}",
            axum::routing::delete(whip::stop).patch(whip::trickle),
        )
        .route("/whep/{room}", post(whip::play))
        .route(
            "/whep/{room}/{session}",
            axum::routing::delete(whip::stop).patch(whip::trickle),
        );
    if state.dev {
        app = app
            .route("/dev/token", get(dev::token))
            .route("/dev/top_up", post(dev::top_up))
            .route("/dev/agent", post(dev::agent));
    }
    app.fallback(assets::serve).layer(cors).with_state(state)
}

/// The token in `Authorization: Bearer <token>`, if the request carries one.
pub(super) fn bearer_token(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Announces a live-room event (after whatever it reports has been committed).
pub(super) async fn announce(state: &State, room: &str, event: souk_proto::live::LiveEvent) {
    let engine = state.media.room(room);
    let room = room.to_owned();
    let _ = engine
        .call(move |sfu, now| sfu.publish_event(now, &room, event))
        .await;
}

/// An API error: a status and the standard body.
#[derive(Debug)]
pub struct ApiError(pub ProtoError);

impl From<ProtoError> for ApiError {
    fn from(e: ProtoError) -> Self {
        ApiError(e)
    }
}

pub fn status_for(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::RoomNotFound
        | ErrorCode::ConversationNotFound
        | ErrorCode::MessageNotFound
        | ErrorCode::ParticipantNotFound
        | ErrorCode::TrackNotFound
        | ErrorCode::SessionNotFound => StatusCode::NOT_FOUND,
        ErrorCode::RoomExists | ErrorCode::IdempotencyConflict => StatusCode::CONFLICT,
        ErrorCode::TranslatorUnavailable
        | ErrorCode::TranslationFailed
        | ErrorCode::AgentUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unauthorized
        | ErrorCode::TokenMissing
        | ErrorCode::TokenMalformed
        | ErrorCode::TokenInvalidSignature
        | ErrorCode::TokenExpired
        | ErrorCode::TokenNotYetValid
        | ErrorCode::TokenUnknownKey => StatusCode::UNAUTHORIZED,
        ErrorCode::GiftNotFound
        | ErrorCode::CouponNotFound
        | ErrorCode::SaleNotFound
        | ErrorCode::OrderNotFound => StatusCode::NOT_FOUND,
        ErrorCode::InsufficientFunds
        | ErrorCode::CouponExhausted
        | ErrorCode::CouponAlreadyClaimed
        | ErrorCode::SaleNotActive
        | ErrorCode::SoldOut
        | ErrorCode::PurchaseLimit => StatusCode::CONFLICT,
        ErrorCode::PermissionDenied
        | ErrorCode::TokenWrongRoom
        | ErrorCode::NotAMember
        | ErrorCode::Muted
        | ErrorCode::Banned
        | ErrorCode::Blocked => StatusCode::FORBIDDEN,
        ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::MessageTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::BAD_REQUEST,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.0.code,
            message: self.0.message,
        };
        (status_for(body.code), Json(body)).into_response()
    }
}

/// Address a request came from, for rate limiting.
pub type ClientAddr = axum::extract::ConnectInfo<SocketAddr>;

/// The client's address: the peer, or, when the peer is a trusted proxy, the nearest
/// address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(
    peer: std::net::IpAddr,
    headers: &axum::http::HeaderMap,
    trusted: &[std::net::IpAddr],
) -> std::net::IpAddr {
    if !trusted.contains(&peer) {
        return peer;
    }
    let forwarded = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .collect::<Vec<_>>();
    forwarded
        .into_iter()
        .rev()
        .find(|ip| !trusted.contains(ip))
        .unwrap_or(peer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let proxy: std::net::IpAddr = "127.0.0.1".parse().unwrap();
        let mut headers = axum::http::HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.7".parse().unwrap(),
        );
        assert_eq!(
            client_ip(proxy, &headers, &[proxy]),
            "198.51.100.7".parse::<std::net::IpAddr>().unwrap()
        );
        assert_eq!(
            client_ip(proxy, &headers, &[]),
            proxy,
            "untrusted peers are taken as they are"
        );
        assert_eq!(
            client_ip(proxy, &axum::http::HeaderMap::new(), &[proxy]),
            proxy
        );
        let spoofed: std::net::IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(
            client_ip(spoofed, &headers, &[proxy]),
            spoofed,
            "a client cannot claim another address"
        );
    }
}
