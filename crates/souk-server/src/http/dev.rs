//! `GET /dev/token`: tokens for the demo pages. Exists only under `--dev`.

use std::time::Duration;

use axum::extract::{Query, State};
use axum::Json;
use serde::Deserialize;
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::token::Role;

use super::ApiError;
use crate::auth::{self, TokenSpec};
use crate::config::{DEV_API_KEY, DEV_API_SECRET};

#[derive(Deserialize)]
pub struct TokenQuery {
    #[serde(default)]
    room: String,
    identity: String,
    name: Option<String>,
    role: Option<String>,
    /// `1` for a chat token.
    chat: Option<u8>,
    /// Comma-separated shops whose inbox the user answers for.
    shops: Option<String>,
}

pub async fn token(
    State(_): State<super::State>,
    Query(q): Query<TokenQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    if q.room.is_empty() && q.chat != Some(1) {
        return Err(ProtoError::new(
            ErrorCode::InvalidRequest,
            "give a room, or chat=1 for a chat token",
        )
        .into());
    }
    let role = match q.role.as_deref() {
        None => Role::Shopper,
        Some(r) => r
            .parse()
            .map_err(|e: String| ProtoError::new(ErrorCode::InvalidRequest, e))?,
    };
    let spec = TokenSpec {
        room: q.room,
        name: q.name.unwrap_or_else(|| q.identity.clone()),
        identity: q.identity,
        role,
        ttl: Duration::from_secs(3600),
        grants: None,
        metadata: None,
        chat: q.chat == Some(1),
        shops: q
            .shops
            .map(|s| {
                s.split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default(),
    };
    let token = auth::sign(DEV_API_KEY, DEV_API_SECRET, &spec, auth::unix_now())
        .map_err(|e| ProtoError::new(ErrorCode::Internal, e.to_string()))?;
    Ok(Json(serde_json::json!({ "token": token })))
}

#[derive(Deserialize)]
pub struct TopUpQuery {
    user: String,
    amount_minor: i64,
    currency: Option<String>,
}

/// `POST /dev/top_up?user=&amount_minor=`: money for the demo pages' wallets, as the
/// merchant's backend would load after a payment. Exists only under `--dev`.
pub async fn top_up(
    State(state): State<super::State>,
    Query(q): Query<TopUpQuery>,
) -> Result<Json<souk_proto::commerce::WalletTxn>, ApiError> {
    let key = format!("dev-{:016x}", rand::random::<u64>());
    let currency = q.currency.unwrap_or_else(|| "USD".into());
    let now_ms = auth::unix_now_ms();
    Ok(Json(
        state
            .ledger
            .top_up(&key, &q.user, q.amount_minor, &currency, now_ms)
            .await?,
    ))
}

#[derive(Deserialize)]
pub struct AgentQuery {
    room: String,
    shop: Option<String>,
}

/// `POST /dev/agent?room=&shop=`: the AI agent joins a room, as the merchant's backend
/// would ask with `POST /api/v1/rooms/{room}/agent`. Exists only under `--dev`.
pub async fn agent(
    State(state): State<super::State>,
    Query(q): Query<AgentQuery>,
) -> Result<axum::http::StatusCode, ApiError> {
    let shop = q.shop.unwrap_or_else(|| "demo".into());
    super::rooms::start_agent(&state, &q.room, &shop).await?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}
