//! `souk`: the Souk server and its companion commands.

mod agent_worker;
mod agents;
mod auth;
mod cli;
mod config;
mod http;
mod media;
mod outbox_worker;
mod ratelimit;
mod serve;
mod webhook;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cli.run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("souk: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
