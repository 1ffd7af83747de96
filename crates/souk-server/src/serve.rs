//! `souk serve`: wires configuration, sockets, the media engine and HTTP together, and
//! shuts them down in order on Ctrl-C or SIGTERM.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::serve::ListenerExt;
use souk_sfu::{Sfu, SfuConfig};
use str0m::net::TcpType;
use str0m::Candidate;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use souk_agent::chat_agent::ChatAgent;
use souk_agent::shop::SaleOrders;
use souk_agent::voice::room::{MintToken, RoomAgents};

use crate::agents;
use souk_chat::moderation::Blocklist;
use souk_chat::translate::{OpenAiTranslator, Translator};
use souk_chat::{Chat, ChatSettings, ChatStore};
use souk_commerce::Ledger;
use souk_store::Db;

use crate::config::{ServerConfig, DEV_API_KEY, DEV_API_SECRET};
use crate::http::{self, AppState};
use crate::media::{self, MediaShards, MediaSockets};
use crate::outbox_worker;
use crate::ratelimit::KeyedLimiter;
use crate::webhook;

pub fn run(config: ServerConfig) -> anyhow::Result<()> {
    runtime()?.block_on(serve(config))
}

/// Logging, the process-wide crypto providers and the async runtime, for `souk serve`
/// and `souk agent` alike.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,str0m=warn,is=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    // str0m needs a process-wide crypto provider before the first Rtc. TLS needs one too:
    // two are linked (aws-lc-rs for serving, ring for webhook delivery), so rustls cannot
    // guess and would panic at the first handshake.
    str0m::crypto::from_feature_flags().install_process_default();
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The addresses to advertise in ICE candidates.
fn advertised_ips(config: &ServerConfig) -> Vec<IpAddr> {
    if let Some(ip) = config.public_ip {
        return vec![ip];
    }
    let bind = config.bind.ip();
    if !bind.is_unspecified() {
        return vec![bind];
    }
    // Bound to every interface: offer each of them (loopback too, for a browser on
    // this machine) and let ICE find the one that works.
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|ifs| {
            ifs.into_iter()
                .map(|i| i.ip())
                .filter(|ip| ip.is_ipv4())
                .collect()
        })
        .unwrap_or_default();
    if ips.is_empty() {
        warn!("no network interfaces found; advertising 127.0.0.1 (set --public-ip)");
        ips.push(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    ips
}

fn candidates(ips: &[IpAddr], port: u16) -> anyhow::Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for &ip in ips {
        let addr = SocketAddr::new(ip, port);
        out.push(Candidate::host(addr, "udp").with_context(|| format!("UDP candidate {addr}"))?);
        let tcp = Candidate::builder()
            .tcp()
            .host(addr)
            .tcptype(TcpType::Passive)
            .build()
            .with_context(|| format!("TCP candidate {addr}"))?;
        out.push(tcp);
    }
    Ok(out)
}

async fn serve(config: ServerConfig) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let tracker = TaskTracker::new();

    let ips = advertised_ips(&config);
    let webhooks = config
        .webhooks
        .clone()
        .map(|w| webhook::spawn(w, cancel.clone(), &tracker));
    let seed: u64 = rand::random();
    let mut engines = Vec::with_capacity(config.media_threads);
    let mut media_ports = Vec::with_capacity(config.media_threads);
    for shard in 0..config.media_threads {
        // Consecutive ports from the configured one; port 0 lets each pick its own.
        let port = if config.media_port == 0 {
            0
        } else {
            u16::try_from(usize::from(config.media_port) + shard)
                .context("the media ports run past 65535; lower --media-port")?
        };
        let sockets = MediaSockets::bind(config.bind.ip(), port).await?;
        let media_port = sockets.local.port();
        let mut sfu_config = SfuConfig::new(
            candidates(&ips, media_port)?,
            seed.wrapping_add(shard as u64),
        );
        sfu_config.resume_window = config.resume_window;
        sfu_config.resilience = config.resilience;
        sfu_config.bandwidth = config.bandwidth;
        let sfu = Sfu::new(sfu_config, Instant::now(), crate::auth::unix_now() * 1000);
        let engine = media::spawn(
            sfu,
            sockets,
            config.ice_tcp_check_within,
            webhooks.clone(),
            cancel.clone(),
            &tracker,
        )
        .context("starting the media sending thread")?;
        engines.push(engine);
        media_ports.push(media_port.to_string());
    }
    let media = MediaShards::new(engines);
    let db = open_db(&config).await?;
    let outbox_wake = Arc::new(tokio::sync::Notify::new());
    let chat = open_chat(&config, db.clone(), outbox_wake.clone()).await?;
    let ledger = Arc::new(
        Ledger::open(db.clone(), config.webhooks.is_some(), outbox_wake.clone())
            .await
            .map_err(|e| anyhow::anyhow!("preparing the ledger: {e}"))?,
    );
    ledger.start_group_commit();
    if config.dev && ledger.gifts().await.map(|g| g.is_empty()).unwrap_or(false) {
        for (id, name, price) in [
            ("rose", "Rose", 100),
            ("heart", "Heart", 500),
            ("rocket", "Rocket", 5000),
        ] {
            let gift = souk_proto::commerce::Gift {
                gift_id: id.into(),
                name: name.into(),
                price_minor: price,
                currency: "USD".into(),
            };
            ledger
                .put_gift(&gift)
                .await
                .map_err(|e| anyhow::anyhow!("seeding the demo gifts: {e}"))?;
        }
    }
    let mut routes: outbox_worker::Routes = Vec::new();
    if let Some(push) = config.chat.push.clone() {
        routes.push((souk_chat::store::PUSH_TOPIC, push));
    }
    if let Some(hooks) = config.webhooks.clone() {
        routes.push((souk_commerce::ORDER_TOPIC, hooks));
    }
    outbox_worker::spawn(db.clone(), routes, outbox_wake, cancel.clone(), &tracker);

    let sale_orders = Arc::new(agents::LedgerOrders(ledger.clone()));
    let (agent, room_agents) = start_agents(&config, chat.clone(), sale_orders, cancel.clone())?;

    let state = Arc::new(AppState {
        media,
        keys: config.keys.clone(),
        dev: config.dev,
        join_limiter: KeyedLimiter::new(30, Duration::from_secs(10)),
        trusted_proxies: config.trusted_proxies.clone(),
        next_conn: AtomicU64::new(1),
        open_sessions: Default::default(),
        chat: chat.clone(),
        agent,
        room_agents: room_agents.clone(),
        ledger,
        blocklist: blocklist(&config),
        whip_sessions: Default::default(),
        chat_send_limiter: KeyedLimiter::new(CHAT_SENDS_PER_10S, Duration::from_secs(10)),
    });
    let app = http::router(state.clone(), config.cors_origins.as_deref())
        .into_make_service_with_connect_info::<SocketAddr>();

    let listener = std::net::TcpListener::bind(config.bind)
        .with_context(|| format!("binding HTTP {}", config.bind))?;
    listener.set_nonblocking(true)?;
    let http_addr = listener.local_addr()?;
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    room_agents.set_url(format!("{scheme}://{http_addr}"));
    // One stable line for people and for scripts that start the server on port 0.
    println!(
        "souk listening http={scheme}://{http_addr} media={} candidates={}",
        media_ports.join(","),
        ips.iter()
            .map(|ip| ip.to_string())
            .collect::<Vec<_>>()
            .join(",")
    );
    if config.dev {
        println!("souk dev mode: api_key={DEV_API_KEY} api_secret={DEV_API_SECRET} (published; never use in production)");
        println!("souk demo: {scheme}://{http_addr}/demo/");
    }

    tokio::spawn(shutdown_signal(cancel.clone()));

    let served = match &config.tls {
        Some((cert, key)) => {
            let tls = axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "loading TLS certificate {} and key {}",
                        cert.display(),
                        key.display()
                    )
                })?;
            let handle = axum_server::Handle::new();
            let stopper = handle.clone();
            let c = cancel.clone();
            tokio::spawn(async move {
                c.cancelled().await;
                stopper.graceful_shutdown(Some(Duration::from_secs(5)));
            });
            axum_server::from_tcp_rustls(listener, tls)
                .map(|tls| tls.acceptor(axum_server::accept::NoDelayAcceptor))
                .handle(handle)
                .serve(app)
                .await
        }
        None => {
            let listener = tokio::net::TcpListener::from_std(listener)?.tap_io(no_delay);
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.clone().cancelled_owned())
                .await
        }
    };
    served.context("HTTP server failed")?;

    cancel.cancel();
    tracker.close();
    // Signalling sockets are upgraded HTTP connections the server no longer tracks; wait
    // for them to deliver their `leave` notices, or the runtime would drop them mid-write.
    let drained = async {
        tracker.wait().await;
        while state
            .open_sessions
            .load(std::sync::atomic::Ordering::Relaxed)
            > 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(5), drained)
        .await
        .is_err()
    {
        warn!("some tasks or sockets did not stop within 5 s");
    }
    db.close().await;
    info!("stopped");
    Ok(())
}

/// Messages one user may send per 10 s, across all their devices.
const CHAT_SENDS_PER_10S: u32 = 100;

/// Signalling and room events are small frames that must leave at once: with Nagle's
/// algorithm a frame written while the previous one waits for the peer's delayed ACK
/// (up to 40 ms) is held back with it.
fn no_delay(stream: &mut tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        warn!("could not set TCP_NODELAY on an accepted connection: {e}");
    }
}

fn blocklist(config: &ServerConfig) -> Blocklist {
    match &config.chat.blocklist {
        Some(lists) => Blocklist::from_config(lists),
        None => Blocklist::samples(),
    }
}

/// Opens the database: SQLite in the data directory unless a URL is configured.
async fn open_db(config: &ServerConfig) -> anyhow::Result<Db> {
    Ok(match &config.db_url {
        Some(url) => Db::open(url, config.sqlite_sync)
            .await
            .with_context(|| "opening the database given by --db / store.url".to_string())?,
        None => {
            let path = config.data_dir.join("souk.db");
            Db::open_sqlite(&path, config.sqlite_sync)
                .await
                .with_context(|| format!("opening the database {}", path.display()))?
        }
    })
}

async fn open_chat(
    config: &ServerConfig,
    db: Db,
    outbox_wake: Arc<tokio::sync::Notify>,
) -> anyhow::Result<Arc<Chat>> {
    let store = ChatStore::open(db)
        .await
        .context("preparing the chat tables")?;
    let settings = ChatSettings {
        edit_window: config.chat.edit_window,
        blocklist: blocklist(config),
        push: config.chat.push.is_some(),
    };
    let translator = config
        .chat
        .translator
        .clone()
        .map(|t| Arc::new(OpenAiTranslator::new(t)) as Arc<dyn Translator>);
    Ok(Arc::new(Chat::new(
        store,
        settings,
        translator,
        outbox_wake,
    )))
}

/// The AI agent: in shop chat, and by voice in rooms (here, or on agent workers).
fn start_agents(
    config: &ServerConfig,
    chat: Arc<Chat>,
    sale_orders: Arc<dyn SaleOrders>,
    cancel: CancellationToken,
) -> anyhow::Result<(Arc<ChatAgent>, Arc<RoomAgents>)> {
    let shops = agents::load_shops(&config.agent, sale_orders)?;
    let llm = agents::model(&config.agent);
    if llm.is_none() && !shops.is_empty() {
        info!("the AI agent has no language model ([agent.llm]); conversations and rooms that ask for it are told so");
    }
    let (api_key, secret) = config
        .keys
        .pick(None)
        .map(|(k, s)| (k.to_owned(), s.to_owned()))?;
    let mint: MintToken = Box::new(move |room, identity| {
        let spec = crate::auth::TokenSpec {
            room: room.to_owned(),
            identity: identity.to_owned(),
            name: "AI assistant".into(),
            role: souk_proto::token::Role::Agent,
            ttl: Duration::from_secs(6 * 3600),
            grants: None,
            metadata: None,
            chat: false,
            shops: Vec::new(),
        };
        crate::auth::sign(&api_key, &secret, &spec, crate::auth::unix_now())
            .map_err(|e| e.to_string())
    });
    let rooms = agents::room_agents(&config.agent, &shops, llm.clone(), mint, cancel.clone())?;
    rooms.set_on_handoff(handoff_to_inbox(chat.clone()));
    let chat_agent = ChatAgent::spawn(chat, llm, config.agent.vision, shops, cancel);
    Ok((chat_agent, rooms))
}

/// A spoken conversation handed over lands in the shop's chat inbox, in the shopper's
/// conversation with the shop, as a handoff staff can act on.
fn handoff_to_inbox(chat: Arc<Chat>) -> souk_agent::voice::room::OnHandoff {
    Arc::new(move |handoff| {
        let chat = chat.clone();
        tokio::spawn(async move {
            let shop = format!("shop:{}", handoff.shop);
            let shopper = souk_chat::Caller::new(&handoff.shopper, &[], 0);
            let posted = async {
                let conversation = chat
                    .open_direct(&shopper, &shop, None)
                    .await?
                    .conversation
                    .id;
                let body = serde_json::json!({
                    "text": "A voice call with the AI assistant was handed over to a member of staff.",
                    "agent": "handoff",
                    "reason": "voice call",
                    "summary": handoff.summary,
                    "room": handoff.room,
                });
                chat.post_as_agent(
                    &conversation,
                    &shop,
                    souk_proto::chat::EventKind::System,
                    body,
                )
                .await
            };
            if let Err(e) = posted.await {
                warn!(
                    "the voice handoff did not reach the shop's inbox: {}",
                    e.message
                );
            }
        });
    })
}

async fn shutdown_signal(cancel: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    info!("shutting down: telling participants and closing sockets");
    cancel.cancel();
}
