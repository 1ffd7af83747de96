//! The AI assistant in shop chat: when it answers, and how it hands over to people.
//!
//! It listens to every committed chat event. A shopper's message in a direct conversation
//! with a shop it serves wakes that conversation's worker, which reads the recent history
//! and decides from it alone. Everything the assistant decides is written into the
//! conversation as a marked event (`"agent": "joined" | "handoff" | "left" | "error"`),
//! so its state survives a restart, every member sees it, and two workers cannot
//! disagree.
//!
//! - It joins when the shop asks for it always, or when no member of staff is online, or
//!   when the merchant's backend asks (REST); joining posts the AI disclosure.
//! - It answers each burst of shopper messages once, showing itself typing meanwhile.
//! - A handoff posts a summary for the staff and stops it; so does a member of staff
//!   writing in the conversation; so does a model failure, after telling the shopper.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use souk_chat::service::AI_MARK;
use souk_chat::Chat;
use souk_proto::chat::{ConversationKind, EventInfo, EventKind};
use souk_proto::{ErrorCode, ProtoError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::language::Notice;
use crate::llm::Llm;
use crate::shop::Shop;
use crate::text::{reply_language, Author, ChatLine, Policy, TextAgent};
use crate::voice::telemetry::CountsByCode;
use souk_metrics::Histogram;

/// Events read back to decide and to answer.
const HISTORY: u32 = 100;
/// Conversations remembered as not concerning the assistant (forgotten all at once past
/// this, and looked at again).
const MAX_UNSERVED: usize = 100_000;
/// A conversation's worker ends after this long without messages.
const WORKER_IDLE: Duration = Duration::from_secs(300);

/// When the assistant answers a shop's conversations on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerWhen {
    Always,
    /// Only while no member of staff is online; they take it from there.
    StaffOffline,
    /// Only where the merchant's backend asked for it.
    OnRequest,
}

pub struct ShopAgent {
    /// The shop id; its inbox is the principal `shop:<id>`.
    pub id: String,
    pub name: String,
    pub shop: Arc<Shop>,
    pub pinned_language: Option<String>,
    pub answer: AnswerWhen,
}

/// Replies, handoffs and failures, for `/metrics`.
#[derive(Debug)]
pub struct AgentStats {
    pub replies: AtomicU64,
    pub handoffs: AtomicU64,
    pub failures: CountsByCode,
    /// Seconds from the shopper's message to the reply being posted, as a histogram.
    pub reply_seconds: Mutex<Histogram>,
}

/// Buckets for chat answer times, in seconds.
const REPLY_BOUNDS: &[f64] = &[0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0];

impl Default for AgentStats {
    fn default() -> Self {
        AgentStats {
            replies: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            failures: CountsByCode::default(),
            reply_seconds: Mutex::new(Histogram::new(REPLY_BOUNDS)),
        }
    }
}

/// What the history says about the assistant in one conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Standing {
    /// It never took part.
    Absent,
    Active,
    /// It handed over, failed or left; people answer now.
    Quiet,
    /// It was active, and a member of staff has written since.
    StaffTookOver,
}

pub struct ChatAgent {
    chat: Arc<Chat>,
    /// `None`: no model is configured, so the assistant cannot start.
    llm: Option<Arc<dyn Llm>>,
    vision: bool,
    shops: HashMap<String, ShopAgent>,
    workers: Mutex<HashMap<String, Arc<Notify>>>,
    /// Conversations known not to concern the assistant.
    unserved: Mutex<HashSet<String>>,
    generation: AtomicU64,
    pub stats: AgentStats,
}

/// The conversation's shop (one the assistant serves) and shopper.
struct Parties<'a> {
    shop: &'a ShopAgent,
    principal: String,
    shopper: String,
}

impl ChatAgent {
    /// Starts listening to `chat`; stops when `cancel` fires.
    pub fn spawn(
        chat: Arc<Chat>,
        llm: Option<Arc<dyn Llm>>,
        vision: bool,
        shops: Vec<ShopAgent>,
        cancel: CancellationToken,
    ) -> Arc<ChatAgent> {
        let agent = Arc::new(ChatAgent {
            chat,
            llm,
            vision,
            shops: shops
                .into_iter()
                .map(|s| (format!("shop:{}", s.id), s))
                .collect(),
            workers: Mutex::new(HashMap::new()),
            unserved: Mutex::default(),
            generation: AtomicU64::new(0),
            stats: AgentStats::default(),
        });
        let listener = agent.clone();
        let mut events = agent.chat.watch();
        tokio::spawn(async move {
            loop {
                let event = tokio::select! {
                    _ = cancel.cancelled() => return,
                    event = events.recv() => event,
                };
                match event {
                    Ok(event) => listener.heard(&event),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "the AI assistant fell behind the chat; those conversations are answered at their next message");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        agent
    }

    fn heard(self: &Arc<Self>, event: &EventInfo) {
        let written = matches!(
            event.kind,
            EventKind::Text | EventKind::Image | EventKind::Product | EventKind::Order
        );
        // Every chat message passes here: conversations that cannot concern the
        // assistant cost nothing after their first look.
        if !written || event.body.get(AI_MARK).is_some() || self.shops.is_empty() {
            return;
        }
        if self
            .unserved
            .lock()
            .expect("unserved lock")
            .contains(&event.conversation)
        {
            return;
        }
        self.wake(&event.conversation);
    }

    /// Makes sure the conversation's worker runs and looks at it again.
    fn wake(self: &Arc<Self>, conversation: &str) {
        let mut workers = self.workers.lock().expect("workers lock");
        if let Some(notify) = workers.get(conversation) {
            notify.notify_one();
            return;
        }
        let notify = Arc::new(Notify::new());
        notify.notify_one();
        workers.insert(conversation.to_owned(), notify.clone());
        let agent = self.clone();
        let conversation = conversation.to_owned();
        tokio::spawn(async move {
            loop {
                let woken = tokio::time::timeout(WORKER_IDLE, notify.notified()).await;
                if woken.is_err() {
                    agent
                        .workers
                        .lock()
                        .expect("workers lock")
                        .remove(&conversation);
                }
                // After removal too: a message that raced the removal is still answered.
                if let Err(e) = agent.attend(&conversation).await {
                    tracing::warn!(conversation, "AI assistant: {e}");
                }
                if woken.is_err() {
                    return;
                }
            }
        });
    }

    /// The merchant's backend asks for the assistant in `conversation`.
    pub async fn join(self: &Arc<Self>, conversation: &str) -> Result<(), ProtoError> {
        let (events, parties) = self.read(conversation).await?;
        let parties = parties.ok_or_else(|| {
            ProtoError::new(
                ErrorCode::InvalidRequest,
                format!("conversation '{conversation}' is not a direct conversation with a shop the AI assistant serves"),
            )
        })?;
        if standing(&events, &parties) != Standing::Active {
            self.start(conversation, &parties, &events).await?;
        }
        self.wake(conversation);
        Ok(())
    }

    /// The merchant's backend sends the assistant away from `conversation`.
    pub async fn leave(&self, conversation: &str) -> Result<(), ProtoError> {
        let (events, parties) = self.read(conversation).await?;
        if let Some(parties) = parties {
            if standing(&events, &parties) == Standing::Active {
                self.post_marker(
                    conversation,
                    &parties,
                    "left",
                    "The AI assistant has left the conversation.",
                    json!({}),
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Looks at the conversation and does what its history calls for.
    async fn attend(&self, conversation: &str) -> Result<(), ProtoError> {
        let (events, Some(parties)) = self.read(conversation).await? else {
            // A group, or a direct conversation without a served shop: its members
            // never change, so it never will concern the assistant.
            let mut unserved = self.unserved.lock().expect("unserved lock");
            if unserved.len() >= MAX_UNSERVED {
                unserved.clear();
            }
            unserved.insert(conversation.to_owned());
            return Ok(());
        };
        match standing(&events, &parties) {
            Standing::Quiet => return Ok(()),
            Standing::StaffTookOver => {
                return self
                    .post_marker(
                        conversation,
                        &parties,
                        "left",
                        "A member of staff is answering; the AI assistant has left.",
                        json!({}),
                    )
                    .await
            }
            Standing::Absent => {
                let wanted = match parties.shop.answer {
                    AnswerWhen::Always => true,
                    AnswerWhen::StaffOffline => !self.chat.hub().is_online(&parties.principal),
                    AnswerWhen::OnRequest => false,
                };
                if !wanted || unanswered(&events, &parties).is_none() {
                    return Ok(());
                }
                if !self.start(conversation, &parties, &events).await? {
                    return Ok(());
                }
            }
            Standing::Active => {}
        }
        let Some(asked_at_ms) = unanswered(&events, &parties) else {
            return Ok(());
        };
        self.answer(conversation, &parties, &events, asked_at_ms)
            .await
    }

    /// Posts the disclosure (or, without a model, the reason it cannot start).
    /// Returns whether the assistant is now active.
    async fn start(
        &self,
        conversation: &str,
        parties: &Parties<'_>,
        events: &[EventInfo],
    ) -> Result<bool, ProtoError> {
        let lang = reply_language(
            parties.shop.pinned_language.as_deref(),
            &lines(events, parties),
        );
        if self.llm.is_none() {
            let message = "The AI assistant cannot start: no language model is configured on this server ([agent.llm] in its configuration). A member of staff will answer.";
            self.stats.failures.add("agent_no_llm");
            self.post_marker(
                conversation,
                parties,
                "error",
                message,
                json!({"code": "agent_no_llm"}),
            )
            .await?;
            return Err(ProtoError::new(ErrorCode::AgentUnavailable, message));
        }
        self.chat
            .post_as_agent(
                conversation,
                &parties.principal,
                EventKind::Text,
                json!({"text": Notice::Disclosure.text(&lang), "lang": lang, "agent": "joined"}),
            )
            .await?;
        Ok(true)
    }

    async fn answer(
        &self,
        conversation: &str,
        parties: &Parties<'_>,
        events: &[EventInfo],
        asked_at_ms: u64,
    ) -> Result<(), ProtoError> {
        let Some(agent) = agent_for(parties, self.vision, self.llm.clone()) else {
            return Ok(());
        };
        let started = Instant::now();
        let _ = self
            .chat
            .show_typing(conversation, &parties.principal)
            .await;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let history = lines(events, parties);
        match agent.reply(generation, &parties.shopper, &history).await {
            Ok(reply) => {
                self.chat
                    .post_as_agent(
                        conversation,
                        &parties.principal,
                        EventKind::Text,
                        json!({"text": reply.text, "lang": reply.lang, "looked_up": reply.looked_up}),
                    )
                    .await?;
                self.stats.replies.fetch_add(1, Ordering::Relaxed);
                let waited =
                    souk_chat::service::now_ms().saturating_sub(asked_at_ms) as f64 / 1000.0;
                self.stats
                    .reply_seconds
                    .lock()
                    .expect("stats lock")
                    .observe(waited.max(started.elapsed().as_secs_f64()));
                if let Some(handoff) = reply.handoff {
                    self.stats.handoffs.fetch_add(1, Ordering::Relaxed);
                    self.post_marker(
                        conversation,
                        parties,
                        "handoff",
                        "The conversation was handed over to a member of staff.",
                        json!({"reason": handoff.reason, "summary": handoff.summary}),
                    )
                    .await?;
                }
                Ok(())
            }
            Err(e) => {
                tracing::warn!(
                    conversation,
                    code = e.code,
                    "AI assistant reply failed: {}",
                    e.message
                );
                self.stats.failures.add(e.code);
                self.chat
                    .post_as_agent(
                        conversation,
                        &parties.principal,
                        EventKind::Text,
                        json!({"text": e.notice, "lang": e.lang}),
                    )
                    .await?;
                self.post_marker(
                    conversation,
                    parties,
                    "error",
                    &format!(
                        "The AI assistant stopped ({}): {}. A member of staff should answer.",
                        e.code, e.message
                    ),
                    json!({"code": e.code}),
                )
                .await
            }
        }
    }

    async fn post_marker(
        &self,
        conversation: &str,
        parties: &Parties<'_>,
        marker: &str,
        text: &str,
        mut extra: serde_json::Value,
    ) -> Result<(), ProtoError> {
        extra["text"] = json!(text);
        extra["agent"] = json!(marker);
        self.chat
            .post_as_agent(conversation, &parties.principal, EventKind::System, extra)
            .await
            .map(|_| ())
    }

    /// The recent events of a direct conversation, and its parties if its shop is served.
    async fn read(
        &self,
        conversation: &str,
    ) -> Result<(Vec<EventInfo>, Option<Parties<'_>>), ProtoError> {
        let store = self.chat.store();
        let internal = |e: souk_store::StoreError| {
            ProtoError::new(
                ErrorCode::Internal,
                format!("reading the conversation: {e}"),
            )
        };
        let conv = self.chat.existing(conversation).await?;
        if conv.kind != ConversationKind::Direct {
            return Ok((Vec::new(), None));
        }
        let members = store.members(conversation).await.map_err(internal)?;
        let shop = members
            .iter()
            .find_map(|m| self.shops.get_key_value(m.member.as_str()));
        let shopper = members
            .iter()
            .find(|m| !m.member.starts_with("shop:"))
            .map(|m| m.member.clone());
        let (Some((principal, shop)), Some(shopper)) = (shop, shopper) else {
            return Ok((Vec::new(), None));
        };
        let events = store
            .events_before(conversation, conv.last_seq + 1, HISTORY)
            .await
            .map_err(internal)?;
        Ok((
            events,
            Some(Parties {
                shop,
                principal: principal.clone(),
                shopper,
            }),
        ))
    }
}

fn agent_for(parties: &Parties<'_>, vision: bool, llm: Option<Arc<dyn Llm>>) -> Option<TextAgent> {
    Some(TextAgent::new(
        llm?,
        parties.shop.shop.clone(),
        Policy {
            shop_name: parties.shop.name.clone(),
            pinned_language: parties.shop.pinned_language.clone(),
            vision,
            spoken: false,
        },
    ))
}

fn marker(event: &EventInfo) -> Option<&str> {
    event
        .body
        .get("agent")
        .and_then(|m| m.as_str())
        .filter(|_| event.body.get(AI_MARK).is_some())
}

fn by_staff(event: &EventInfo, parties: &Parties<'_>) -> bool {
    event.sender == parties.principal
        && event.body.get(AI_MARK).is_none()
        && event.kind != EventKind::System
}

/// The assistant's standing, from the newest marker or staff message.
fn standing(events: &[EventInfo], parties: &Parties<'_>) -> Standing {
    let mut staff_wrote = false;
    for event in events.iter().rev() {
        if by_staff(event, parties) {
            staff_wrote = true;
            continue;
        }
        match marker(event) {
            Some("joined") if staff_wrote => return Standing::StaffTookOver,
            Some("joined") => return Standing::Active,
            Some(_) => return Standing::Quiet,
            None => {}
        }
    }
    if staff_wrote {
        Standing::Quiet
    } else {
        Standing::Absent
    }
}

/// When the shopper's newest message was sent, if nobody has answered since (the
/// assistant's disclosure is not an answer).
fn unanswered(events: &[EventInfo], parties: &Parties<'_>) -> Option<u64> {
    let last = events.iter().rev().find(|e| {
        e.kind != EventKind::System
            && marker(e).is_none()
            && (e.sender == parties.shopper || e.sender == parties.principal)
    })?;
    (last.sender == parties.shopper).then_some(last.created_at_ms)
}

/// The conversation as the model reads it: messages as they stand now, without the
/// assistant's fixed notices (the instructions already say it is an AI).
fn lines(events: &[EventInfo], parties: &Parties<'_>) -> Vec<ChatLine> {
    use souk_proto::chat::MessageState;
    events
        .iter()
        .filter(|e| matches!(e.state, MessageState::Normal | MessageState::Edited))
        .filter(|e| marker(e).is_none())
        .filter_map(|e| {
            let author = if e.sender == parties.shopper {
                Author::Shopper
            } else if e.sender == parties.principal && e.body.get(AI_MARK).is_some() {
                Author::Agent
            } else if e.sender == parties.principal {
                Author::Staff
            } else {
                return None;
            };
            let text = |k: &str| {
                e.body
                    .get(k)
                    .and_then(|v| v.as_str())
                    .unwrap_or("")
                    .to_owned()
            };
            let (text, images) = match e.kind {
                EventKind::Text => (text("text"), Vec::new()),
                EventKind::Image => (text("alt"), vec![text("url")]),
                EventKind::Product => (
                    format!("[product card] {} ({})", text("title"), text("id")),
                    Vec::new(),
                ),
                EventKind::Order => (
                    format!("[order card] {} {}", text("order_id"), text("status")),
                    Vec::new(),
                ),
                _ => return None,
            };
            let looked_up = e.body["looked_up"]
                .as_array()
                .map(|calls| {
                    calls
                        .iter()
                        .filter_map(|c| c.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            Some(ChatLine {
                author,
                text,
                images,
                looked_up,
            })
        })
        .collect()
}
