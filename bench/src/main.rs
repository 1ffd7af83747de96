//! `souk-bench`: what Souk costs to run, measured on the real server.
//!
//! - `fanout`: one bot publisher (synthetic simulcast VP8 + Opus) fanned out to bot
//!   subscribers in steps: server CPU and memory from /proc, loss and latency at the
//!   bots, the bots' own CPU, and the most subscribers held under the loss and latency
//!   bar.
//! - `chat-live`: thousands of connected chat users in direct conversations at a steady
//!   message rate: delivery and durable-acknowledgement latency.
//! - `chat-sync`: how long a user who was offline takes to catch up on many messages.
//! - `ledger`: durable gifts per second through the ledger, and commit latency.
//! - `live-fanout`: comments in one live room delivered to thousands of viewers.
//! - `voice`: the AI agent's voice-to-voice delay and barge-in, at a shopper bot.

mod bots;
mod chat;
mod fanout;
mod forward_delay;
mod janus;
mod ledger;
mod live;
mod proc_stat;
mod server;
mod stamped_viewer;
mod voice;

use clap::Parser;

#[derive(Parser)]
#[command(about = "Souk load and cost benchmarks")]
enum Cli {
    Fanout(fanout::Fanout),
    ChatLive(chat::ChatLive),
    ChatSync(chat::ChatSyncBench),
    Ledger(ledger::LedgerBench),
    LiveFanout(live::LiveFanout),
    Voice(voice::VoiceBench),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse() {
        Cli::Fanout(args) => fanout::run(args).await,
        Cli::ChatLive(args) => chat::live(args).await,
        Cli::ChatSync(args) => chat::sync(args).await,
        Cli::Ledger(args) => ledger::ledger(args).await,
        Cli::LiveFanout(args) => live::live_fanout(args).await,
        Cli::Voice(args) => voice::run(args).await,
    }
}
