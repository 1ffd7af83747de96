//! Reading a streamed chat completion (OpenAI-compatible server-sent events), sans IO.
//!
//! OpenAI, vLLM, Ollama and llama.cpp's server all stream a reply as `data:` lines, each
//! a JSON chunk with a piece of text or a piece of a tool call, and end with
//! `data: [DONE]`. The bytes arrive cut anywhere, even inside a line or a UTF-8
//! character, so [`ChatStream`] buffers until a line is whole. Text is handed on as soon
//! as it arrives (the agent speaks while the model writes); a tool call's arguments come
//! in fragments and are handed on whole, when the model finishes. A chunk that is not
//! JSON, or an error the server streams, becomes an [`StreamEvent::Error`] with the
//! server's words: the caller decides, the stream never panics.

use serde::Deserialize;

use crate::words::excerpt;

/// What one push of bytes produced, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEvent {
    /// More of the reply's text.
    Text(String),
    /// The model finished: why (`stop`, `length`, `tool_calls`...), and the tool calls
    /// it made, arguments complete.
    Finished {
        reason: String,
        tool_calls: Vec<ToolCall>,
    },
    /// The server ended the stream (`[DONE]`).
    Done,
    /// The server streamed an error, or a chunk this reader cannot understand.
    Error(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// JSON text, as the model wrote it (validated by whoever runs the tool).
    pub arguments: String,
}

/// Longest line kept while waiting for its end: a server that never sends a newline must
/// not grow the buffer without bound.
const MAX_LINE: usize = 1 << 20;

#[derive(Debug, Default)]
pub struct ChatStream {
    /// Bytes of the line not yet ended.
    pending: Vec<u8>,
    /// Tool calls being assembled, by the index the server gives them.
    calls: Vec<ToolCall>,
}

impl ChatStream {
    /// Feeds the next bytes of the response body.
    pub fn push(&mut self, bytes: &[u8]) -> Vec<StreamEvent> {
        let mut events = Vec::new();
        self.pending.extend_from_slice(bytes);
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            self.line(line.trim_end_matches(['\n', '\r']), &mut events);
        }
        if self.pending.len() > MAX_LINE {
            self.pending.clear();
            events.push(StreamEvent::Error(format!(
                "the model server sent a line longer than {MAX_LINE} bytes"
            )));
        }
        events
    }

    fn line(&mut self, line: &str, events: &mut Vec<StreamEvent>) {
        // Blank lines end an event, `:` lines are comments (keep-alives), and fields
        // other than `data` carry nothing for chat completions.
        let Some(data) = line.strip_prefix("data:") else {
            return;
        };
        let data = data.trim_start();
        if data == "[DONE]" {
            events.push(StreamEvent::Done);
            return;
        }
        match serde_json::from_str::<Chunk>(data) {
            Ok(chunk) => self.chunk(chunk, events),
            Err(e) => events.push(StreamEvent::Error(format!(
                "the model server sent a chunk that is not a chat completion ({e}): {}",
                excerpt(data, 120)
            ))),
        }
    }

    fn chunk(&mut self, chunk: Chunk, events: &mut Vec<StreamEvent>) {
        if let Some(error) = chunk.error {
            events.push(StreamEvent::Error(format!(
                "the model server reported an error: {}",
                error.message
            )));
            return;
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            if let Some(text) = choice.delta.content.filter(|t| !t.is_empty()) {
                events.push(StreamEvent::Text(text));
            }
            for part in choice.delta.tool_calls {
                self.tool_call_part(part);
            }
            if let Some(reason) = choice.finish_reason {
                events.push(StreamEvent::Finished {
                    reason,
                    tool_calls: std::mem::take(&mut self.calls),
                });
            }
        }
    }

    /// The first fragment of a call carries its id and name; later ones only more of
    /// its arguments.
    fn tool_call_part(&mut self, part: ToolCallPart) {
        if self.calls.len() <= part.index {
            self.calls.resize_with(part.index + 1, || ToolCall {
                id: String::new(),
                name: String::new(),
                arguments: String::new(),
            });
        }
        let call = &mut self.calls[part.index];
        if let Some(id) = part.id {
            call.id = id;
        }
        if let Some(function) = part.function {
            if let Some(name) = function.name {
                call.name.push_str(&name);
            }
            if let Some(arguments) = function.arguments {
                call.arguments.push_str(&arguments);
            }
        }
    }
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    error: Option<ServerError>,
}

#[derive(Deserialize)]
struct ServerError {
    message: String,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    delta: Delta,
    finish_reason: Option<String>,
}

#[derive(Deserialize, Default)]
struct Delta {
    content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<ToolCallPart>,
}

#[derive(Deserialize)]
struct ToolCallPart {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<FunctionPart>,
}

#[derive(Deserialize)]
struct FunctionPart {
    name: Option<String>,
    arguments: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> StreamEvent {
        StreamEvent::Text(s.to_string())
    }

    #[test]
    fn text_is_handed_on_as_it_arrives_wherever_the_bytes_are_cut() {
        let body = "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n\
                    data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"مرحبا\"}}]}\n\n\
                    data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\", hello\"}}]}\n\n\
                    data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                    data: [DONE]\n\n";
        let expected = vec![
            text("مرحبا"),
            text(", hello"),
            StreamEvent::Finished {
                reason: "stop".into(),
                tool_calls: vec![],
            },
            StreamEvent::Done,
        ];
        // Every cut, including inside the Arabic characters' UTF-8 bytes.
        for cut in 0..body.len() {
            let mut stream = ChatStream::default();
            let mut events = stream.push(&body.as_bytes()[..cut]);
            events.extend(stream.push(&body.as_bytes()[cut..]));
            assert_eq!(events, expected, "cut at byte {cut}");
        }
    }

    #[test]
    fn a_tool_call_is_assembled_from_its_fragments() {
        let mut stream = ChatStream::default();
        let chunks = [
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_order","arguments":""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\"order_"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"id\":\"A-17\"}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_2","function":{"name":"search_catalog","arguments":"{}"}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#,
        ];
        let mut events = Vec::new();
        for chunk in chunks {
            events.extend(stream.push(format!("data: {chunk}\r\n\r\n").as_bytes()));
        }
        assert_eq!(
            events,
            vec![StreamEvent::Finished {
                reason: "tool_calls".into(),
                tool_calls: vec![
                    ToolCall {
                        id: "call_1".into(),
                        name: "get_order".into(),
                        arguments: r#"{"order_id":"A-17"}"#.into(),
                    },
                    ToolCall {
                        id: "call_2".into(),
                        name: "search_catalog".into(),
                        arguments: "{}".into(),
                    },
                ],
            }]
        );
    }

    #[test]
    fn keep_alives_and_other_fields_are_ignored() {
        let mut stream = ChatStream::default();
        let events = stream.push(b": keep-alive\n\nevent: ping\nid: 4\n\n");
        assert!(events.is_empty());
    }

    #[test]
    fn a_streamed_error_and_a_bad_chunk_are_reported_not_panicked_on() {
        let mut stream = ChatStream::default();
        let events = stream.push(
            b"data: {\"error\":{\"message\":\"model 'x' not found\",\"type\":\"invalid_request_error\"}}\n\
              data: <html>502 Bad Gateway</html>\n",
        );
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[0],
            StreamEvent::Error("the model server reported an error: model 'x' not found".into())
        );
        let StreamEvent::Error(message) = &events[1] else {
            panic!("{events:?}")
        };
        assert!(message.contains("not a chat completion"), "{message}");
        assert!(message.contains("502 Bad Gateway"), "{message}");
        // The stream goes on after a bad chunk.
        assert_eq!(
            stream.push(b"data: {\"choices\":[{\"delta\":{\"content\":\"ok\"}}]}\n"),
            vec![text("ok")]
        );
    }

    #[test]
    fn a_line_that_never_ends_is_cut_off() {
        let mut stream = ChatStream::default();
        let events = stream.push(&vec![b'x'; MAX_LINE + 1]);
        assert!(matches!(events.as_slice(), [StreamEvent::Error(_)]));
        assert_eq!(stream.push(b"data: [DONE]\n"), vec![StreamEvent::Done]);
    }
}
