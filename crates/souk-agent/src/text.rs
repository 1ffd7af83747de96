//! Answering a text conversation: the model, the shop's tools, and the rules around them.
//!
//! One call to [`TextAgent::reply`] is one answer to the shopper. The model may call
//! tools a few times before it answers; each result goes back to it. Asking for a person
//! ends the answer with a handoff instead. The language is decided here, not by the
//! model: the shop's pinned language, else the one the shopper last wrote in.

use std::sync::Arc;

use crate::language::{self, Notice};
use crate::llm::{Llm, LlmError, LlmMessage, LlmRequest, Part};
use crate::llm_stream::{StreamEvent, ToolCall};
use crate::shop::{Shop, ToolOutcome};
use crate::turn::Generation;

/// Tool rounds before the agent gives up on the model: enough for search, then detail.
const MAX_TOOL_ROUNDS: usize = 4;
/// Most recent messages of the conversation the model sees.
const CONTEXT_MESSAGES: usize = 30;

#[derive(Debug, Clone)]
pub struct Policy {
    /// Shown to the model as who it works for.
    pub shop_name: String,
    /// Always answer in this language, whatever the shopper writes.
    pub pinned_language: Option<String>,
    /// The model accepts images.
    pub vision: bool,
    /// The answers are spoken aloud.
    pub spoken: bool,
}

/// Who wrote a message in the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Author {
    Shopper,
    Agent,
    Staff,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatLine {
    pub author: Author,
    pub text: String,
    /// Photos the shopper sent with this message.
    pub images: Vec<String>,
    /// For the assistant's answers: the tool calls behind them, for a later handoff summary.
    pub looked_up: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextReply {
    pub text: String,
    /// BCP 47 tag of the reply's language.
    pub lang: String,
    /// The tool calls behind the answer, as `name(arguments)`.
    pub looked_up: Vec<String>,
    /// Set when the model handed the conversation to a person.
    pub handoff: Option<Handoff>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub reason: String,
    /// For the member of staff who takes over: what the shopper asked and what was found.
    pub summary: String,
}

/// Why no answer came, and what to show instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    pub code: &'static str,
    pub message: String,
    /// The notice for the shopper, in their language.
    pub notice: String,
    pub lang: String,
}

pub struct TextAgent {
    llm: Arc<dyn Llm>,
    shop: Arc<Shop>,
    policy: Policy,
}

impl TextAgent {
    pub fn new(llm: Arc<dyn Llm>, shop: Arc<Shop>, policy: Policy) -> TextAgent {
        TextAgent { llm, shop, policy }
    }

    /// The language to answer `history` in.
    pub fn language(&self, history: &[ChatLine]) -> String {
        reply_language(self.policy.pinned_language.as_deref(), history)
    }

    /// Answers the shopper `shopper` whose conversation so far is `history`.
    pub async fn reply(
        &self,
        generation: Generation,
        shopper: &str,
        history: &[ChatLine],
    ) -> Result<TextReply, ReplyError> {
        self.answer(
            generation,
            shopper,
            history,
            &self.language(history),
            &mut |_| {},
        )
        .await
    }

    /// Answers in `lang`, handing the answer's text to `on_text` as the model writes it
    /// (a voice starts speaking before the answer is complete).
    pub async fn answer(
        &self,
        generation: Generation,
        shopper: &str,
        history: &[ChatLine],
        lang: &str,
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<TextReply, ReplyError> {
        let lang = lang.to_owned();
        let failed = |code: &'static str, message: String| ReplyError {
            code,
            message,
            notice: Notice::Unavailable.text(&lang).to_owned(),
            lang: lang.clone(),
        };
        let mut messages = vec![LlmMessage::System(self.instructions(&lang))];
        let recent = &history[history.len().saturating_sub(CONTEXT_MESSAGES)..];
        messages.extend(recent.iter().map(|line| self.message(line)));
        let mut looked_up = Vec::new();
        for _ in 0..MAX_TOOL_ROUNDS {
            let (text, calls) = self
                .complete(generation, &messages, on_text)
                .await
                .map_err(|e| failed(e.code(), e.to_string()))?;
            if calls.is_empty() {
                if text.trim().is_empty() {
                    return Err(failed(
                        "llm_empty_reply",
                        "the language model answered with no text".into(),
                    ));
                }
                return Ok(TextReply {
                    text: text.trim().to_owned(),
                    lang,
                    looked_up,
                    handoff: None,
                });
            }
            messages.push(LlmMessage::Assistant {
                text: text.clone(),
                tool_calls: calls.clone(),
            });
            for call in &calls {
                match self.shop.call(&call.name, &call.arguments, shopper).await {
                    ToolOutcome::Result(result) => {
                        looked_up.push(describe_call(call));
                        messages.push(LlmMessage::Tool {
                            call_id: call.id.clone(),
                            content: result.to_string(),
                        });
                    }
                    ToolOutcome::Handoff { reason } => {
                        return Ok(TextReply {
                            text: Notice::Handoff.text(&lang).to_owned(),
                            handoff: Some(Handoff {
                                summary: summary(history, &looked_up, &lang),
                                reason,
                            }),
                            lang,
                            looked_up,
                        })
                    }
                }
            }
        }
        Err(failed(
            "llm_tool_loop",
            format!("the language model called tools {MAX_TOOL_ROUNDS} times without answering"),
        ))
    }

    fn instructions(&self, lang: &str) -> String {
        format!(
            "You are the AI customer-service assistant of the shop \"{shop}\". The shopper knows you are an AI. \
             Answer in {language}, briefly and politely, in plain text. {spoken}\
             Use search_catalog for any product question and get_order for any order question; never invent products, prices, stock or order details. \
             Prices from tools are in minor units: 3999 USD means 39.99 USD. \
             Call transfer_to_human when the shopper asks for a person, wants a refund or complaint handled, or you cannot help.",
            shop = self.policy.shop_name,
            language = language::name(lang),
            spoken = if self.policy.spoken {
                "Your words are spoken aloud: one to three short sentences, no lists, links or markdown. "
            } else {
                ""
            },
        )
    }

    fn message(&self, line: &ChatLine) -> LlmMessage {
        match line.author {
            Author::Shopper => {
                let mut parts = vec![Part::Text(line.text.clone())];
                for url in &line.images {
                    parts.push(if self.policy.vision {
                        Part::ImageUrl(url.clone())
                    } else {
                        Part::Text("[the shopper sent a photo; you cannot see images]".into())
                    });
                }
                LlmMessage::User(parts)
            }
            Author::Agent => LlmMessage::Assistant {
                text: line.text.clone(),
                tool_calls: Vec::new(),
            },
            Author::Staff => LlmMessage::Assistant {
                text: format!("[a member of staff wrote] {}", line.text),
                tool_calls: Vec::new(),
            },
        }
    }

    /// One model call: its text and the tools it wants run.
    async fn complete(
        &self,
        generation: Generation,
        messages: &[LlmMessage],
        on_text: &mut (dyn FnMut(&str) + Send),
    ) -> Result<(String, Vec<ToolCall>), LlmError> {
        let mut reply = self.llm.start(LlmRequest {
            generation,
            messages: messages.to_vec(),
            tools: Shop::tools(),
        });
        let mut text = String::new();
        let mut calls = Vec::new();
        while let Some(event) = reply.next().await {
            match event? {
                StreamEvent::Text(t) => {
                    on_text(&t);
                    text.push_str(&t);
                }
                StreamEvent::Finished { tool_calls, .. } => calls.extend(tool_calls),
                StreamEvent::Done => return Ok((text, calls)),
                StreamEvent::Error(why) => return Err(LlmError::Stream(why)),
            }
        }
        Err(LlmError::Stream("the reply ended without [DONE]".into()))
    }
}

/// The language to answer `history` in: the shop's pinned one, else the one the
/// shopper last wrote in, else English.
pub fn reply_language(pinned: Option<&str>, history: &[ChatLine]) -> String {
    if let Some(pinned) = pinned {
        return pinned.to_owned();
    }
    history
        .iter()
        .rev()
        .filter(|l| l.author == Author::Shopper)
        .find_map(|l| language::detect(&l.text))
        .unwrap_or("en")
        .to_owned()
}

/// A tool call as a person reads it: `get_order(order_id: A1001)`.
fn describe_call(call: &ToolCall) -> String {
    let args = match serde_json::from_str::<serde_json::Value>(&call.arguments) {
        Ok(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("{k}: {s}"),
                other => format!("{k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join(", "),
        _ => call.arguments.clone(),
    };
    format!("{}({args})", call.name)
}

/// What the member of staff who takes over reads first: the shopper's last questions and
/// everything the assistant looked up in this conversation.
fn summary(history: &[ChatLine], looked_up_now: &[String], lang: &str) -> String {
    let asked: Vec<&str> = history
        .iter()
        .filter(|l| l.author == Author::Shopper)
        .rev()
        .take(3)
        .map(|l| l.text.as_str())
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    let mut out = format!(
        "Shopper writes in {}. Last asked: {}",
        language::name(lang),
        asked.join(" / ")
    );
    let looked_up: Vec<&String> = history
        .iter()
        .flat_map(|l| &l.looked_up)
        .chain(looked_up_now)
        .collect();
    if !looked_up.is_empty() {
        out.push_str(&format!(
            ". Looked up: {}",
            looked_up
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out.chars().take(1000).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::llm::{Reply, ReplyItem};
    use std::sync::Mutex;

    /// A model that plays one scripted answer per call and records what it was sent.
    /// Unit tests only.
    struct ScriptedLlm {
        answers: Mutex<Vec<Vec<ReplyItem>>>,
        seen: Mutex<Vec<LlmRequest>>,
    }

    impl ScriptedLlm {
        fn new(mut answers: Vec<Vec<ReplyItem>>) -> Arc<ScriptedLlm> {
            answers.reverse();
            Arc::new(ScriptedLlm {
                answers: Mutex::new(answers),
                seen: Mutex::new(Vec::new()),
            })
        }
    }

    impl Llm for ScriptedLlm {
        fn start(&self, request: LlmRequest) -> Reply {
            self.seen.lock().unwrap().push(request.clone());
            let events = self.answers.lock().unwrap().pop().unwrap_or_default();
            Reply::spawn(request.generation, move |tx| async move {
                for e in events {
                    let _ = tx.send(e).await;
                }
            })
        }
    }

    fn text(t: &str) -> Vec<ReplyItem> {
        vec![
            Ok(StreamEvent::Text(t.into())),
            Ok(StreamEvent::Finished {
                reason: "stop".into(),
                tool_calls: vec![],
            }),
            Ok(StreamEvent::Done),
        ]
    }

    fn call(name: &str, args: &str) -> Vec<ReplyItem> {
        vec![
            Ok(StreamEvent::Finished {
                reason: "tool_calls".into(),
                tool_calls: vec![ToolCall {
                    id: format!("call-{name}"),
                    name: name.into(),
                    arguments: args.into(),
                }],
            }),
            Ok(StreamEvent::Done),
        ]
    }

    fn agent(llm: Arc<ScriptedLlm>, pinned: Option<&str>) -> TextAgent {
        let shop = Shop::parse(
            r#"{"products": [{"id": "sneaker-38", "title": "Canvas sneaker", "price_minor": 3999, "currency": "USD", "stock": 3}]}"#,
        )
        .unwrap();
        TextAgent::new(
            llm,
            Arc::new(shop),
            Policy {
                shop_name: "Demo".into(),
                pinned_language: pinned.map(str::to_owned),
                vision: false,
                spoken: false,
            },
        )
    }

    fn shopper(text: &str) -> ChatLine {
        ChatLine {
            author: Author::Shopper,
            text: text.into(),
            images: vec![],
            looked_up: vec![],
        }
    }

    #[tokio::test]
    async fn tool_results_go_back_to_the_model_and_the_answer_is_in_the_shoppers_language() {
        let llm = ScriptedLlm::new(vec![
            call("search_catalog", r#"{"query": "sneaker"}"#),
            text("نعم، الحذاء متوفر بسعر 39.99 دولارًا."),
        ]);
        let reply = agent(llm.clone(), None)
            .reply(1, "layla", &[shopper("هل عندكم حذاء sneaker مقاس 38؟")])
            .await
            .unwrap();
        assert_eq!(reply.lang, "ar");
        assert!(reply.text.contains("39.99"));
        let seen = llm.seen.lock().unwrap();
        assert_eq!(seen.len(), 2);
        let LlmMessage::System(system) = &seen[0].messages[0] else {
            panic!()
        };
        assert!(system.contains("Answer in Arabic"));
        let LlmMessage::Tool { content, .. } = seen[1].messages.last().unwrap() else {
            panic!()
        };
        assert!(content.contains("sneaker-38"));
    }

    #[tokio::test]
    async fn a_pinned_language_wins() {
        let llm = ScriptedLlm::new(vec![text("Hello")]);
        let agent = agent(llm, Some("en"));
        assert_eq!(agent.language(&[shopper("¿Dónde está mi pedido?")]), "en");
        assert_eq!(
            agent
                .reply(1, "x", &[shopper("¿Dónde está mi pedido?")])
                .await
                .unwrap()
                .lang,
            "en"
        );
    }

    #[tokio::test]
    async fn a_transfer_ends_with_a_handoff_and_a_summary() {
        let llm = ScriptedLlm::new(vec![
            call("get_order", r#"{"order_id": "Z1"}"#),
            call("transfer_to_human", r#"{"reason": "refund request"}"#),
        ]);
        let reply = agent(llm, None)
            .reply(
                1,
                "x",
                &[shopper("I want a refund for order Z1, give me a person")],
            )
            .await
            .unwrap();
        let handoff = reply.handoff.unwrap();
        assert_eq!(handoff.reason, "refund request");
        assert!(handoff.summary.contains("refund for order Z1"));
        assert!(handoff.summary.contains("get_order"));
        assert_eq!(reply.text, Notice::Handoff.text("en"));
    }

    #[tokio::test]
    async fn failures_have_codes_and_a_notice_for_the_shopper() {
        let down = ScriptedLlm::new(vec![vec![Err(LlmError::Unreachable(
            "connection refused".into(),
        ))]]);
        let e = agent(down, None)
            .reply(1, "x", &[shopper("Onde está o meu pedido?")])
            .await
            .unwrap_err();
        assert_eq!(e.code, "llm_unreachable");
        assert_eq!(e.notice, Notice::Unavailable.text("pt"));

        let looping = ScriptedLlm::new(vec![
            call("search_catalog", r#"{"query": "a b"}"#);
            MAX_TOOL_ROUNDS
        ]);
        let e = agent(looping, None)
            .reply(1, "x", &[shopper("hi")])
            .await
            .unwrap_err();
        assert_eq!(e.code, "llm_tool_loop");

        let empty = ScriptedLlm::new(vec![text("  ")]);
        assert_eq!(
            agent(empty, None)
                .reply(1, "x", &[shopper("hi")])
                .await
                .unwrap_err()
                .code,
            "llm_empty_reply"
        );

        let cut = ScriptedLlm::new(vec![vec![Ok(StreamEvent::Text("Hel".into()))]]);
        assert_eq!(
            agent(cut, None)
                .reply(1, "x", &[shopper("hi")])
                .await
                .unwrap_err()
                .code,
            "llm_stream_error"
        );
    }

    #[tokio::test]
    async fn bad_tool_arguments_reach_the_model_as_an_error_it_can_fix() {
        let llm = ScriptedLlm::new(vec![
            call("get_order", r#"{"id": 5}"#),
            call("get_order", r#"{"order_id": "Z1"}"#),
            text("I could not find order Z1."),
        ]);
        let reply = agent(llm.clone(), None)
            .reply(1, "x", &[shopper("where is Z1")])
            .await
            .unwrap();
        assert_eq!(reply.text, "I could not find order Z1.");
        let seen = llm.seen.lock().unwrap();
        let LlmMessage::Tool { content, .. } = seen[1].messages.last().unwrap() else {
            panic!()
        };
        assert!(content.contains("invalid_arguments"));
    }

    #[tokio::test]
    async fn photos_go_as_images_only_to_a_model_with_vision() {
        let line = ChatLine {
            author: Author::Shopper,
            text: "this one?".into(),
            images: vec!["https://x/p.jpg".into()],
            looked_up: vec![],
        };
        let blind = agent(ScriptedLlm::new(vec![]), None);
        let LlmMessage::User(parts) = blind.message(&line) else {
            panic!()
        };
        assert!(matches!(&parts[1], Part::Text(t) if t.contains("cannot see")));
        let mut seeing = agent(ScriptedLlm::new(vec![]), None);
        seeing.policy.vision = true;
        let LlmMessage::User(parts) = seeing.message(&line) else {
            panic!()
        };
        assert_eq!(parts[1], Part::ImageUrl("https://x/p.jpg".into()));
    }
}
