//! Command-line interface.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use souk_proto::token::Role;

use crate::auth::{self, TokenSpec};
use crate::config::{self, ServerConfig};

#[derive(Parser)]
#[command(
    name = "souk",
    version,
    about = "Self-hosted real-time interaction for cross-border commerce"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP + WebSocket on --bind, media on --media-port (UDP and ICE-TCP).
    Serve(ServeArgs),
    /// Print an access token for a room.
    Token(TokenArgs),
    /// Run voice agents for a Souk server as a separate worker (add workers to scale).
    Agent(AgentArgs),
}

#[derive(Args)]
pub struct AgentArgs {
    /// The server's HTTP address, e.g. https://souk.example.com.
    #[arg(long)]
    pub server: String,
    #[arg(long, env = "SOUK_API_KEY")]
    pub api_key: String,
    #[arg(long, env = "SOUK_API_SECRET")]
    pub api_secret: String,
    /// A configuration file with the [agent] section: model, speech stages and shops.
    #[arg(long)]
    pub config: PathBuf,
    /// Rooms this worker takes at once.
    #[arg(long, default_value_t = 4)]
    pub capacity: usize,
}

#[derive(Args)]
pub struct ServeArgs {
    /// Development mode: fixed, published API key and secret; the dev token endpoint.
    #[arg(long)]
    pub dev: bool,
    /// Configuration file (TOML); required without --dev.
    #[arg(long, env = "SOUK_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP and WebSocket address.
    #[arg(long)]
    pub bind: Option<SocketAddr>,
    /// Media port for UDP and ICE-TCP (0 picks a free one).
    #[arg(long)]
    pub media_port: Option<u16>,
    /// Media engines, each on its own port from --media-port on, sharing the rooms
    /// between them so that many rooms use every core (default 1).
    #[arg(long)]
    pub media_threads: Option<usize>,
    /// Address advertised in ICE candidates, for a server behind 1:1 NAT.
    #[arg(long)]
    pub public_ip: Option<IpAddr>,
    /// How long an ICE-TCP connection to the media port may stay open without passing
    /// an ICE check of a session (e.g. 10s).
    #[arg(long, value_parser = parse_duration)]
    pub ice_tcp_check_within: Option<Duration>,
    /// How long a participant whose connection dropped can resume (e.g. 15s).
    #[arg(long, value_parser = parse_duration)]
    pub resume_window: Option<Duration>,
    /// Loss resilience (audio RED, full retransmission, Opus DTX asked of publishers);
    /// `off` keeps plain forwarding, for side-by-side measurement.
    #[arg(long, value_parser = ["on", "off"], default_value = "on")]
    pub resilience: String,
    /// Per-subscriber downlink estimation, which fits each subscriber's videos into its
    /// link: `reports` (receiver reports: follows queues, ignores random loss), `twcc`
    /// (str0m's GoogCC, which treats loss above 10% as congestion), or `off`.
    #[arg(long, value_parser = ["reports", "twcc", "off"], default_value = "reports")]
    pub bwe: String,
    /// Directory for the embedded SQLite database (default ./souk-data).
    #[arg(long, env = "SOUK_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL (postgres://...) instead of the embedded SQLite.
    #[arg(long, env = "SOUK_DB")]
    pub db: Option<String>,
    /// TLS certificate chain (PEM); with --tls-key serves HTTPS and WSS.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Args)]
struct TokenArgs {
    /// Sign with the development secret (matches `souk serve --dev`).
    #[arg(long, conflicts_with = "config")]
    dev: bool,
    /// Sign with a key from this configuration file.
    #[arg(long, env = "SOUK_CONFIG")]
    config: Option<PathBuf>,
    /// Which API key of the configuration to sign with (default: the only one).
    #[arg(long)]
    api_key: Option<String>,
    /// The room the token admits to (not needed with --chat).
    #[arg(long, required_unless_present = "chat")]
    room: Option<String>,
    #[arg(long)]
    identity: String,
    /// A user-scoped chat token (combine with --room for both).
    #[arg(long)]
    chat: bool,
    /// A shop whose shared inbox the user answers for (repeatable).
    #[arg(long = "shop")]
    shops: Vec<String>,
    /// Display name (default: the identity).
    #[arg(long)]
    name: Option<String>,
    /// shopper, staff, host, cohost, audience or agent.
    #[arg(long, default_value = "shopper")]
    role: Role,
    /// Lifetime, e.g. 90s, 30m, 1h, 2d.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    ttl: Duration,
}

impl Cli {
    pub fn run(self) -> anyhow::Result<()> {
        match self.command {
            Command::Serve(args) => {
                let config = ServerConfig::from_args(&args)?;
                crate::serve::run(config)
            }
            Command::Agent(args) => crate::agent_worker::run(args),
            Command::Token(args) => {
                let keys = if args.dev {
                    config::dev_keys()
                } else {
                    let Some(path) = &args.config else {
                        bail!("give --dev or --config FILE to choose the signing key");
                    };
                    config::FileConfig::load(path)?.keys()?
                };
                let (api_key, secret) = keys.pick(args.api_key.as_deref())?;
                let spec = TokenSpec {
                    room: args.room.unwrap_or_default(),
                    identity: args.identity.clone(),
                    name: args.name.unwrap_or(args.identity),
                    role: args.role,
                    ttl: args.ttl,
                    grants: None,
                    metadata: None,
                    chat: args.chat,
                    shops: args.shops,
                };
                let token = auth::sign(api_key, secret, &spec, auth::unix_now())
                    .context("signing the token")?;
                println!("{token}");
                Ok(())
            }
        }
    }
}

/// Parses `90s`, `30m`, `1h`, `2d` (or plain seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a duration like 90s, 30m, 1h or 2d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("unknown unit in '{s}': use s, m, h or d")),
    };
    if secs == 0 {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("45").unwrap(), Duration::from_secs(45));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("0s").is_err());
    }
}
