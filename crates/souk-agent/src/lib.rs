//! The AI customer-service agent.
//!
//! [`turn`] decides who speaks when: end of the shopper's turn, preemptive generation,
//! barge-in and false interruptions, and which of the agent's words were really heard.
//! It is sans-IO like the media core: speech detection, transcription, the language model,
//! speech synthesis and playout are drivers that feed it events and carry out its
//! commands, so every timing rule is tested against scripted timelines.
//!
//! [`llm_stream`] reads a language model's streamed reply (any OpenAI-compatible server)
//! into text as it comes and whole tool calls, also without IO; [`llm`] is the stage any
//! provider fits and the OpenAI-compatible client. [`shop`] holds the catalogue and
//! orders (JSON, or CSV read by [`shop_csv`]) and runs the model's tool calls against them. [`text`] answers a chat
//! conversation with both, in the language [`language`] detects, and [`chat_agent`]
//! decides when it answers in shop chat and hands over to people.
//!
//! [`voice`] is the spoken side: the stages (speech detection, recognition, synthesis,
//! Opus), the session that drives them around [`turn`], the agent as a room participant,
//! and the workers that run agents in other processes.

pub mod chat_agent;
pub mod language;
pub mod llm;
pub mod llm_stream;
pub mod shop;
pub mod shop_csv;
#[cfg(test)]
mod test_http;
pub mod text;
pub mod turn;
pub mod voice;
pub mod words;
