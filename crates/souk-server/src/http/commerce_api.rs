//! The merchant's backend API for live commerce (HTTP Basic with the API key): the
//! gift catalogue, wallets, coupons, flash sales, battles and the books.
//!
//! Money requests carry an `idempotency_key`: the same key with the same body answers
//! the same; with another body, `409 idempotency_conflict`.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use souk_proto::commerce::{
    Balance, Battle, Coupon, Gift, LeaderboardEntry, Order, Sale, WalletTxn,
};
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::live::LiveEvent;

use super::rooms::authorize;
use super::ApiError;

pub async fn gifts(
    State(state): State<super::State>,
    headers: HeaderMap,
) -> Result<Json<Vec<Gift>>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.ledger.gifts().await?))
}

/// Adds or replaces catalogue entries.
pub async fn put_gifts(
    State(state): State<super::State>,
    headers: HeaderMap,
    Json(gifts): Json<Vec<Gift>>,
) -> Result<Json<Vec<Gift>>, ApiError> {
    authorize(&state, &headers)?;
    for gift in &gifts {
        state.ledger.put_gift(gift).await?;
    }
    Ok(Json(state.ledger.gifts().await?))
}

#[derive(Deserialize)]
pub struct CurrencyQuery {
    currency: String,
}

/// A wallet's balance: for the merchant's backend, or its owner.
pub async fn balance(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Query(q): Query<CurrencyQuery>,
) -> Result<Json<Balance>, ApiError> {
    backend_or_user(&state, &headers, |c| c.sub == user)?;
    Ok(Json(state.ledger.balance(&user, &q.currency).await?))
}

#[derive(Deserialize)]
pub struct WalletMove {
    idempotency_key: String,
    amount_minor: i64,
    currency: String,
}

pub async fn top_up(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Json(m): Json<WalletMove>,
) -> Result<Json<WalletTxn>, ApiError> {
    wallet_move(&state, &headers, &user, m, false).await
}

pub async fn refund(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(user): Path<String>,
    Json(m): Json<WalletMove>,
) -> Result<Json<WalletTxn>, ApiError> {
    wallet_move(&state, &headers, &user, m, true).await
}

async fn wallet_move(
    state: &super::State,
    headers: &HeaderMap,
    user: &str,
    m: WalletMove,
    refund: bool,
) -> Result<Json<WalletTxn>, ApiError> {
    authorize(state, headers)?;
    let now = crate::auth::unix_now_ms();
    let (key, amount, currency) = (&m.idempotency_key, m.amount_minor, &m.currency);
    let done = if refund {
        state
            .ledger
            .refund(key, user, amount, currency, now)
            .await?
    } else {
        state
            .ledger
            .top_up(key, user, amount, currency, now)
            .await?
    };
    Ok(Json(done))
}

#[derive(Deserialize)]
pub struct NewCoupon {
    coupon_id: String,
    quantity: i64,
    value_minor: i64,
    currency: String,
}

pub async fn coupon(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Json(c): Json<NewCoupon>,
) -> Result<Json<Coupon>, ApiError> {
    authorize(&state, &headers)?;
    let coupon = Coupon {
        coupon_id: c.coupon_id,
        room: room.clone(),
        quantity: c.quantity,
        claimed: 0,
        value_minor: c.value_minor,
        currency: c.currency,
    };
    state.ledger.issue_coupon(&coupon).await?;
    super::announce(&state, &room, LiveEvent::CouponIssued(coupon.clone())).await;
    Ok(Json(coupon))
}

pub async fn sale(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Json(mut sale): Json<Sale>,
) -> Result<Json<Sale>, ApiError> {
    authorize(&state, &headers)?;
    sale.room = room.clone();
    sale.sold = 0;
    state.ledger.create_sale(&sale).await?;
    super::announce(&state, &room, LiveEvent::SaleStarted(sale.clone())).await;
    Ok(Json(sale))
}

#[derive(Deserialize)]
pub struct NewBattle {
    hosts: [String; 2],
    duration_s: u64,
}

pub async fn battle(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Json(b): Json<NewBattle>,
) -> Result<Json<Battle>, ApiError> {
    authorize(&state, &headers)?;
    let battle = state
        .ledger
        .start_battle(
            &room,
            [&b.hosts[0], &b.hosts[1]],
            b.duration_s * 1000,
            crate::auth::unix_now_ms(),
        )
        .await?;
    super::announce(&state, &room, LiveEvent::Battle(battle.clone())).await;
    Ok(Json(battle))
}

pub async fn battle_score(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Battle>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(
        state.ledger.battle(&id, crate::auth::unix_now_ms()).await?,
    ))
}

/// A flash-sale order: for the merchant's backend, or its buyer. Someone else's order
/// reads exactly like a missing one.
pub async fn order(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Order>, ApiError> {
    let order = state.ledger.order(&id).await;
    let buyer = order.as_ref().map(|o| o.buyer.clone()).unwrap_or_default();
    match backend_or_user(&state, &headers, |c| c.sub == buyer) {
        Err(ApiError(e)) if e.code == ErrorCode::PermissionDenied => {
            Err(ProtoError::new(ErrorCode::OrderNotFound, format!("no order '{id}'")).into())
        }
        Err(e) => Err(e),
        Ok(()) => Ok(Json(order?)),
    }
}

/// Lets in the merchant's backend (HTTP Basic), or a user whose token (`Bearer`)
/// passes `allowed`.
fn backend_or_user(
    state: &super::State,
    headers: &HeaderMap,
    allowed: impl Fn(&souk_proto::token::RoomClaims) -> bool,
) -> Result<(), ApiError> {
    match super::bearer_token(headers) {
        Some(token) => {
            let claims = crate::auth::verify(&state.keys, token)?;
            if allowed(&claims) {
                Ok(())
            } else {
                Err(ProtoError::new(
                    ErrorCode::PermissionDenied,
                    "this token does not allow reading that",
                )
                .into())
            }
        }
        None => authorize(state, headers),
    }
}

/// The room's hosts by gifts: for the merchant's backend, or anyone in the room.
pub async fn leaderboard(
    State(state): State<super::State>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<Vec<LeaderboardEntry>>, ApiError> {
    backend_or_user(&state, &headers, |c| c.room == room)?;
    Ok(Json(state.ledger.leaderboard(&room, 20).await?))
}

/// Checks the books (every currency sums to zero; balances match entries).
pub async fn audit(
    State(state): State<super::State>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    match state.ledger.audit().await? {
        Ok(()) => Ok(Json(serde_json::json!({ "balanced": true }))),
        Err(why) => Err(ProtoError::new(
            ErrorCode::Internal,
            format!("the books do not balance: {why}"),
        )
        .into()),
    }
}
