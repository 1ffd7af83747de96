//! The language model stage: a trait any provider fits, and the OpenAI-compatible client.
//!
//! A reply streams: [`Llm::start`] returns at once with a [`Reply`] whose events arrive as
//! the model writes. Dropping the `Reply` cancels the request (the task that reads the
//! HTTP body is aborted), which is how barge-in and preemptive generation throw a reply
//! away. Every reply carries the generation it was started for.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};
use souk_chat::translate::OpenAiConfig;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::llm_stream::{ChatStream, StreamEvent, ToolCall};
use crate::turn::Generation;

/// One piece of what the shopper sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    /// A photo by URL, for a provider that sees images.
    ImageUrl(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmMessage {
    System(String),
    User(Vec<Part>),
    Assistant {
        text: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The result of the tool call `call_id`, as JSON text.
    Tool {
        call_id: String,
        content: String,
    },
}

/// A function the model may call, with its arguments as a JSON schema.
#[derive(Debug, Clone)]
pub struct ToolSpec {
    pub name: &'static str,
    pub description: &'static str,
    pub parameters: Value,
}

#[derive(Debug, Clone)]
pub struct LlmRequest {
    pub generation: Generation,
    pub messages: Vec<LlmMessage>,
    pub tools: Vec<ToolSpec>,
}

/// Why a reply failed. Each has a stable code for the room's error event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LlmError {
    /// No connection to the model server.
    Unreachable(String),
    /// The server answered with an HTTP error.
    Status { status: u16, body: String },
    /// Nothing arrived for this long.
    Timeout(Duration),
    /// The stream broke or carried an error.
    Stream(String),
}

impl LlmError {
    pub fn code(&self) -> &'static str {
        match self {
            LlmError::Unreachable(_) => "llm_unreachable",
            LlmError::Status { .. } => "llm_http_error",
            LlmError::Timeout(_) => "llm_timeout",
            LlmError::Stream(_) => "llm_stream_error",
        }
    }
}

impl std::fmt::Display for LlmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LlmError::Unreachable(why) => {
                write!(f, "the language model server is unreachable: {why}")
            }
            LlmError::Status { status, body } => {
                write!(
                    f,
                    "the language model server answered HTTP {status}: {body}"
                )
            }
            LlmError::Timeout(after) => write!(
                f,
                "the language model server sent nothing for {} s",
                after.as_secs_f32()
            ),
            LlmError::Stream(why) => write!(f, "the language model's reply broke off: {why}"),
        }
    }
}

impl std::error::Error for LlmError {}

pub type ReplyItem = Result<StreamEvent, LlmError>;

/// A reply as it streams. Dropping it cancels the request.
pub struct Reply {
    pub generation: Generation,
    events: mpsc::Receiver<ReplyItem>,
    task: JoinHandle<()>,
}

impl Reply {
    /// Runs `produce` on a task that sends the reply's events; the task is aborted when
    /// the `Reply` is dropped.
    pub fn spawn<F, Fut>(generation: Generation, produce: F) -> Reply
    where
        F: FnOnce(mpsc::Sender<ReplyItem>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, events) = mpsc::channel(64);
        let task = tokio::spawn(produce(tx));
        Reply {
            generation,
            events,
            task,
        }
    }

    /// The next event; `None` once the reply has ended.
    pub async fn next(&mut self) -> Option<ReplyItem> {
        self.events.recv().await
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub trait Llm: Send + Sync {
    /// Starts a reply; must be called inside a tokio runtime.
    fn start(&self, request: LlmRequest) -> Reply;
}

/// Limits on how long the model may keep the shopper waiting.
#[derive(Debug, Clone, Copy)]
pub struct LlmTimeouts {
    /// Until the response headers and the first bytes of the body.
    pub first_byte: Duration,
    /// Between two pieces of the body.
    pub idle: Duration,
}

impl Default for LlmTimeouts {
    fn default() -> Self {
        LlmTimeouts {
            first_byte: Duration::from_secs(20),
            idle: Duration::from_secs(20),
        }
    }
}

/// Streams chat completions with tools from an OpenAI-compatible server (OpenAI, vLLM,
/// Ollama, llama.cpp's server).
pub struct OpenAiLlm {
    client: reqwest::Client,
    config: OpenAiConfig,
    timeouts: LlmTimeouts,
}

impl OpenAiLlm {
    pub fn new(config: OpenAiConfig, timeouts: LlmTimeouts) -> OpenAiLlm {
        let client = reqwest::Client::builder()
            .connect_timeout(timeouts.first_byte)
            .build()
            .expect("a default HTTP client builds");
        OpenAiLlm {
            client,
            config,
            timeouts,
        }
    }

    fn body(&self, request: &LlmRequest) -> Value {
        let mut body = json!({
            "model": self.config.model,
            "stream": true,
            "messages": request.messages.iter().map(message_json).collect::<Vec<_>>(),
        });
        if !request.tools.is_empty() {
            body["tools"] = request
                .tools
                .iter()
                .map(|t| {
                    json!({"type": "function", "function": {
                        "name": t.name, "description": t.description, "parameters": t.parameters,
                    }})
                })
                .collect();
        }
        body
    }
}

fn message_json(message: &LlmMessage) -> Value {
    match message {
        LlmMessage::System(text) => json!({"role": "system", "content": text}),
        LlmMessage::User(parts) => match parts.as_slice() {
            [Part::Text(text)] => json!({"role": "user", "content": text}),
            parts => json!({"role": "user", "content": parts.iter().map(|p| match p {
                Part::Text(text) => json!({"type": "text", "text": text}),
                Part::ImageUrl(url) => json!({"type": "image_url", "image_url": {"url": url}}),
            }).collect::<Vec<_>>()}),
        },
        LlmMessage::Assistant { text, tool_calls } => {
            let mut m = json!({"role": "assistant", "content": text});
            if !tool_calls.is_empty() {
                m["tool_calls"] = tool_calls
                    .iter()
                    .map(|c| {
                        json!({"id": c.id, "type": "function",
                            "function": {"name": c.name, "arguments": c.arguments}})
                    })
                    .collect();
            }
            m
        }
        LlmMessage::Tool { call_id, content } => {
            json!({"role": "tool", "tool_call_id": call_id, "content": content})
        }
    }
}

impl Llm for OpenAiLlm {
    fn start(&self, request: LlmRequest) -> Reply {
        let url = format!(
            "{}/chat/completions",
            self.config.base_url.trim_end_matches('/')
        );
        let mut call = self.client.post(url).json(&self.body(&request));
        if let Some(key) = &self.config.api_key {
            call = call.bearer_auth(key);
        }
        let timeouts = self.timeouts;
        Reply::spawn(request.generation, move |tx| async move {
            if let Err(e) = stream_reply(call, timeouts, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        })
    }
}

async fn stream_reply(
    call: reqwest::RequestBuilder,
    timeouts: LlmTimeouts,
    tx: &mpsc::Sender<ReplyItem>,
) -> Result<(), LlmError> {
    let mut response = tokio::time::timeout(timeouts.first_byte, call.send())
        .await
        .map_err(|_| LlmError::Timeout(timeouts.first_byte))?
        .map_err(|e| LlmError::Unreachable(e.to_string()))?;
    let status = response.status();
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(LlmError::Status {
            status: status.as_u16(),
            body: body.chars().take(300).collect(),
        });
    }
    let mut reader = ChatStream::default();
    let mut wait = timeouts.first_byte;
    loop {
        let chunk = tokio::time::timeout(wait, response.chunk())
            .await
            .map_err(|_| LlmError::Timeout(wait))?
            .map_err(|e| LlmError::Stream(e.to_string()))?;
        wait = timeouts.idle;
        let Some(bytes) = chunk else {
            return Err(LlmError::Stream(
                "the connection closed before the reply ended".into(),
            ));
        };
        for event in reader.push(&bytes) {
            let done = event == StreamEvent::Done;
            if let StreamEvent::Error(why) = event {
                return Err(LlmError::Stream(why));
            }
            if tx.send(Ok(event)).await.is_err() || done {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_http::{closed_base, response, serve_one};

    fn client(base: String, timeout_ms: u64) -> OpenAiLlm {
        let t = Duration::from_millis(timeout_ms);
        OpenAiLlm::new(
            OpenAiConfig {
                base_url: base,
                api_key: Some("sk-test".into()),
                model: "m".into(),
            },
            LlmTimeouts {
                first_byte: t,
                idle: t,
            },
        )
    }

    fn request() -> LlmRequest {
        LlmRequest {
            generation: 7,
            messages: vec![LlmMessage::User(vec![Part::Text("hi".into())])],
            tools: crate::shop::Shop::tools(),
        }
    }

    async fn drain(mut reply: Reply) -> Vec<ReplyItem> {
        let mut all = Vec::new();
        while let Some(item) = reply.next().await {
            all.push(item);
        }
        all
    }

    #[tokio::test]
    async fn streams_text_and_tool_calls_with_the_key_and_tools_sent() {
        let sse = concat!(
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n",
        );
        let server = serve_one(Some(response(
            "200 OK",
            "text/event-stream",
            sse.as_bytes(),
        )))
        .await;
        let reply = client(server.base, 5000).start(request());
        assert_eq!(reply.generation, 7);
        let events: Vec<StreamEvent> = drain(reply).await.into_iter().map(Result::unwrap).collect();
        assert_eq!(events[0], StreamEvent::Text("Hel".into()));
        assert_eq!(events[1], StreamEvent::Text("lo".into()));
        assert_eq!(events.last(), Some(&StreamEvent::Done));
        let request = String::from_utf8(server.request.await.unwrap()).unwrap();
        assert!(request.starts_with("POST /v1/chat/completions"));
        assert!(request
            .to_lowercase()
            .contains("authorization: bearer sk-test"));
        assert!(request.contains("\"stream\":true") && request.contains("search_catalog"));
    }

    #[tokio::test]
    async fn a_server_that_is_down_slow_or_failing_is_a_clear_error() {
        let down = drain(client(closed_base().await, 2000).start(request())).await;
        assert!(
            matches!(&down[..], [Err(LlmError::Unreachable(_))]),
            "{down:?}"
        );

        let silent = serve_one(None).await;
        let slow = drain(client(silent.base, 300).start(request())).await;
        assert!(matches!(&slow[..], [Err(LlmError::Timeout(_))]), "{slow:?}");

        let body = r#"{"error":{"message":"model not found"}}"#;
        let server = serve_one(Some(response(
            "404 Not Found",
            "application/json",
            body.as_bytes(),
        )))
        .await;
        let failing = drain(client(server.base, 2000).start(request())).await;
        match &failing[..] {
            [Err(e @ LlmError::Status { status: 404, .. })] => {
                assert!(e.to_string().contains("model not found"));
                assert_eq!(e.code(), "llm_http_error");
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn dropping_a_reply_hangs_up_on_the_server() {
        let first = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\n\n";
        // A chunked body that never ends: the model is still writing.
        let server = serve_one(Some(
            format!(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n{:x}\r\n{first}\r\n",
                first.len()
            )
            .into_bytes(),
        ))
        .await;
        let mut reply = client(server.base, 5000).start(request());
        assert_eq!(
            reply.next().await,
            Some(Ok(StreamEvent::Text("Hel".into())))
        );
        drop(reply);
        assert!(
            server.hung_up.await.unwrap(),
            "the request was not cancelled"
        );
    }

    #[test]
    fn messages_in_openai_shape() {
        let call = ToolCall {
            id: "c1".into(),
            name: "get_order".into(),
            arguments: r#"{"order_id":"A1"}"#.into(),
        };
        let shapes: Vec<Value> = [
            LlmMessage::User(vec![Part::Text("hi".into())]),
            LlmMessage::User(vec![
                Part::Text("this one?".into()),
                Part::ImageUrl("https://x/p.jpg".into()),
            ]),
            LlmMessage::Assistant {
                text: String::new(),
                tool_calls: vec![call],
            },
            LlmMessage::Tool {
                call_id: "c1".into(),
                content: "{}".into(),
            },
        ]
        .iter()
        .map(message_json)
        .collect();
        assert_eq!(shapes[0], json!({"role": "user", "content": "hi"}));
        assert_eq!(
            shapes[1]["content"][1],
            json!({"type": "image_url", "image_url": {"url": "https://x/p.jpg"}})
        );
        assert_eq!(shapes[2]["tool_calls"][0]["function"]["name"], "get_order");
        assert_eq!(shapes[3]["tool_call_id"], "c1");
    }
}
