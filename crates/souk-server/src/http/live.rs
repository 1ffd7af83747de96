//! The live-room requests the server answers itself, because they wait on the database
//! (money) or on configuration (the comment blocklist), before the media core hears of
//! them. Money is committed first and announced after: an announced gift is paid for,
//! and a lost announcement never loses money.

use souk_proto::commerce::Sale;
use souk_proto::error::{ErrorCode, ProtoError};
use souk_proto::live::{LiveEvent, OrderPlaced};
use souk_proto::signal::{Ack, ClientMessage, ServerMessage};
use souk_proto::token::Role;

/// Messages handled here rather than by the media core.
pub(super) fn is_server_side(msg: &ClientMessage) -> bool {
    matches!(
        msg,
        ClientMessage::SendGift(_)
            | ClientMessage::ClaimCoupon(_)
            | ClientMessage::Buy(_)
            | ClientMessage::StartSale(_)
            | ClientMessage::Comment(_)
    )
}

/// What became of a request.
enum Outcome {
    /// Answered here, with this result.
    Done(serde_json::Value),
    /// Checked and passed on to the media core, which answers it.
    PassedOn,
}

/// Handles a message; `None` when the media core will answer it.
pub(super) async fn handle(
    state: &super::State,
    member: super::Member<'_>,
    msg: ClientMessage,
) -> Option<ServerMessage> {
    let req = msg.req();
    match answer(state, member, msg).await {
        Ok(Outcome::Done(result)) => Some(ServerMessage::Ack(Ack {
            req,
            result: Some(result),
        })),
        Ok(Outcome::PassedOn) => None,
        Err(e) => Some(ServerMessage::error(req, e)),
    }
}

fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("ledger answers serialise")
}

async fn answer(
    state: &super::State,
    member: super::Member<'_>,
    msg: ClientMessage,
) -> Result<Outcome, ProtoError> {
    let super::Member { id, claims, engine } = member;
    let room = claims.room.as_str();
    let me = claims.sub.as_str();
    let now = crate::auth::unix_now_ms();
    match msg {
        ClientMessage::Comment(c) => {
            if let Some(locale) = state.blocklist.check(&c.text) {
                return Err(ProtoError::new(
                    ErrorCode::ContentBlocked,
                    format!("the comment contains a blocked phrase (list '{locale}')"),
                ));
            }
            // The media core applies the room's comment rules and answers.
            engine.message(id, ClientMessage::Comment(c)).await?;
            Ok(Outcome::PassedOn)
        }
        ClientMessage::SendGift(g) => {
            let to = g.to.clone();
            let (room_name, target) = (room.to_owned(), to.clone());
            let on_stage = engine
                .call(move |sfu, _| sfu.on_stage(&room_name, &target))
                .await?;
            if !on_stage {
                return Err(ProtoError::new(
                    ErrorCode::ParticipantNotFound,
                    format!("'{to}' is not the host or a co-host of this room"),
                ));
            }
            let sent = state
                .ledger
                .send_gift(&g.idempotency_key, room, me, &to, &g.gift_id, g.count, now)
                .await?;
            if !sent.replayed {
                super::announce(state, room, LiveEvent::Gift(sent.value.clone())).await;
            }
            Ok(Outcome::Done(json(&sent.value)))
        }
        ClientMessage::ClaimCoupon(c) => {
            let claimed = state
                .ledger
                .claim_coupon(room, &c.coupon_id, me, now)
                .await?;
            Ok(Outcome::Done(json(&claimed)))
        }
        ClientMessage::Buy(b) => {
            let applied = state
                .ledger
                .buy(&b.idempotency_key, room, &b.sale_id, me, b.quantity, now)
                .await?;
            let order = applied.value;
            if applied.replayed {
                return Ok(Outcome::Done(json(&order)));
            }
            let sale = state.ledger.sale(&b.sale_id).await?;
            let placed = OrderPlaced {
                sale_id: sale.sale_id,
                buyer: me.to_owned(),
                quantity: order.quantity,
                sold: sale.sold,
                stock: sale.stock,
            };
            super::announce(state, room, LiveEvent::OrderPlaced(placed)).await;
            Ok(Outcome::Done(json(&order)))
        }
        ClientMessage::StartSale(s) => {
            if claims.role != Role::Host {
                return Err(ProtoError::new(
                    ErrorCode::PermissionDenied,
                    "only the host starts flash sales",
                ));
            }
            let sale = Sale {
                sale_id: s.sale_id,
                room: room.to_owned(),
                product_id: s.product_id,
                title: s.title,
                price_minor: s.price_minor,
                currency: s.currency,
                stock: s.stock,
                sold: 0,
                per_buyer_limit: s.per_buyer_limit,
                starts_at_ms: now + s.starts_in_s * 1000,
                ends_at_ms: now + (s.starts_in_s + s.duration_s.max(1)) * 1000,
            };
            state.ledger.create_sale(&sale).await?;
            super::announce(state, room, LiveEvent::SaleStarted(sale.clone())).await;
            Ok(Outcome::Done(json(&sale)))
        }
        _ => unreachable!("is_server_side lists what reaches here"),
    }
}
