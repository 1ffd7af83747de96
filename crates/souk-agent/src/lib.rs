//! The AI customer-service agent.
//!
//! [`turn`] decides who speaks when: end of the shopper's turn, preemptive generation,
//! barge-in and false interruptions, and which of the agent's words were really heard.
//! It is sans-IO like the media core: speech detection, transcription, the language model,
//! speech synthesis and playout are drivers that feed it events and carry out its
//! commands, so every timing rule is tested against scripted timelines.
//!
//! [`llm_stream`] reads a language model's streamed reply (any OpenAI-compatible server)
//! into text as it comes and whole tool calls, also without IO.

pub mod llm_stream;
pub mod turn;
pub mod words;
