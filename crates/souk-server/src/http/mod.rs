//! The HTTP surface: health, signalling WebSocket, room-service API, demo pages.

mod assets;
mod dev;
mod metrics;
mod rooms;
mod signal;

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
use crate::media::MediaHandle;
use crate::ratelimit::KeyedLimiter;

/// What every handler can reach.
pub struct AppState {
    pub media: MediaHandle,
    pub keys: Keys,
    pub dev: bool,
    /// Signalling connections per client address, to blunt join floods.
    pub join_limiter: KeyedLimiter<std::net::IpAddr>,
    pub next_conn: AtomicU64,
    /// Signalling sockets currently open (a leak shows here first).
    pub open_sessions: std::sync::atomic::AtomicUsize,
}

pub type State = Arc<AppState>;

pub fn router(state: State, cors_origins: Option<&[String]>) -> Router {
    let cors = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::DELETE])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
        ])
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
        );
    if state.dev {
        app = app.route("/dev/token", get(dev::token));
    }
    app.fallback(assets::serve).layer(cors).with_state(state)
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
        | ErrorCode::ParticipantNotFound
        | ErrorCode::TrackNotFound
        | ErrorCode::SessionNotFound => StatusCode::NOT_FOUND,
        ErrorCode::RoomExists => StatusCode::CONFLICT,
        ErrorCode::Unauthorized
        | ErrorCode::TokenMissing
        | ErrorCode::TokenMalformed
        | ErrorCode::TokenInvalidSignature
        | ErrorCode::TokenExpired
        | ErrorCode::TokenNotYetValid
        | ErrorCode::TokenUnknownKey => StatusCode::UNAUTHORIZED,
        ErrorCode::PermissionDenied | ErrorCode::TokenWrongRoom => StatusCode::FORBIDDEN,
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
