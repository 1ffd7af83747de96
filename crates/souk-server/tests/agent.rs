//! The AI assistant in shop chat, against the real server and a scripted OpenAI-compatible
//! model server that streams its answers and calls the shop's tools.

mod common;

use common::{chat_token, Api, TestServer, KEY, SECRET};
use reqwest::Method;
use serde_json::{json, Value};
use souk_client::chat::ChatClient;
use souk_proto::chat::{ChatServerMessage, EventInfo, EventKind};

const SHOP: &str = r#"{"products": [
  {"id": "sneaker-canvas", "title": "Canvas sneaker", "titles": {"ar": "حذاء رياضي من القماش"},
   "price_minor": 3999, "currency": "USD", "stock": 4}
], "orders": [
  {"id": "A1001", "buyer": "layla", "status": "shipped", "items": [], "total_minor": 12900, "currency": "USD", "carrier": "Aramex"}
]}"#;

/// The scripted model: it searches the catalogue for any question, looks up orders when
/// asked, transfers when asked for a person, and answers from the tool's result, naming
/// the language it was told to answer in. A message containing "hang" gets no answer.
async fn scripted_model() -> String {
    async fn complete(axum::Json(req): axum::Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let messages = req["messages"].as_array().cloned().unwrap_or_default();
        let system = messages[0]["content"].as_str().unwrap_or("").to_owned();
        let language = system
            .split("Answer in ")
            .nth(1)
            .and_then(|r| r.split(',').next())
            .unwrap_or("?")
            .to_owned();
        let last = messages.last().cloned().unwrap_or_default();
        let text = |m: &Value| match &m["content"] {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts.iter().filter_map(|p| p["text"].as_str()).collect(),
            _ => String::new(),
        };
        let chunk = |delta: Value, finish: Option<&str>| {
            format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let call = |name: &str, args: Value| {
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "call-1", "type": "function",
                    "function": {"name": name, "arguments": args.to_string()}}]}),
                Some("tool_calls"),
            )
        };
        let said = text(&last);
        if said.contains("hang") {
            std::future::pending::<()>().await;
        }
        let body = if last["role"] == "tool" {
            let result: Value = serde_json::from_str(&said).unwrap_or_default();
            let answer = match (&result["results"][0], &result["order"], &result["error"]) {
                (p, _, _) if p.is_object() => format!(
                    "({language}) We have {} for {} {}.",
                    p["title"].as_str().unwrap_or(""),
                    p["price_minor"],
                    p["currency"].as_str().unwrap_or("")
                ),
                (_, o, _) if o.is_object() => format!(
                    "({language}) Order {} is {} with {}.",
                    o["id"].as_str().unwrap_or(""),
                    o["status"].as_str().unwrap_or(""),
                    o["carrier"].as_str().unwrap_or("")
                ),
                (_, _, e) => format!(
                    "({language}) Sorry: {}",
                    e["code"].as_str().unwrap_or("nothing found")
                ),
            };
            chunk(json!({"content": answer}), Some("stop"))
        } else if said.contains("person") {
            call(
                "transfer_to_human",
                json!({"reason": "the shopper asked for a person"}),
            )
        } else if let Some(id) = said
            .split_whitespace()
            .find(|w| (w.starts_with('A') && w.len() == 5) || w.starts_with("OR_"))
        {
            call("get_order", json!({"order_id": id}))
        } else {
            {
                let locale = if language == "Arabic" { "ar" } else { "en" };
                call("search_catalog", json!({"query": said, "locale": locale}))
            }
        };
        (
            [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
            format!("{body}data: [DONE]\n\n"),
        )
            .into_response()
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(complete));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/v1")
}

/// A server whose assistant serves shop "acme" with `answer`, backed by `llm_url`.
/// The server reads the shop file at start, so it is removed right after.
fn start_server(llm_url: Option<&str>, answer: &str) -> TestServer {
    start_server_and(llm_url, answer, &[])
}

/// [`start_server`] with more command-line arguments.
fn start_server_and(llm_url: Option<&str>, answer: &str, extra: &[&str]) -> TestServer {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let data =
        std::env::temp_dir().join(format!("souk-agent-shop-{}-{n}.json", std::process::id()));
    std::fs::write(&data, SHOP).unwrap();
    let llm = llm_url
        .map(|u| format!("[agent.llm]\nbase_url = \"{u}\"\nmodel = \"scripted\"\n"))
        .unwrap_or_default();
    let toml = format!(
        "[agent]\nllm_timeout_s = 2\n{llm}\n[[agent.shops]]\nid = \"acme\"\nname = \"Acme\"\ndata = \"{}\"\nanswer = \"{answer}\"\n",
        data.display()
    );
    let server = TestServer::start_with_config_and(&toml, extra);
    let _ = std::fs::remove_file(data);
    server
}

async fn connect(server: &TestServer, identity: &str, shops: &[&str]) -> ChatClient {
    ChatClient::connect(&server.url, &chat_token(identity, shops))
        .await
        .unwrap_or_else(|e| panic!("{identity} could not connect to chat: {e}"))
}

/// Waits for the next event in `conversation` that `pick` accepts.
async fn next_where(
    client: &ChatClient,
    what: &str,
    pick: impl Fn(&EventInfo) -> bool,
) -> EventInfo {
    loop {
        match client.next_pushed(common::WAIT).await {
            Some(ChatServerMessage::ChatEvent(e)) if pick(&e) => return e,
            Some(_) => continue,
            None => panic!("no {what} in time"),
        }
    }
}

fn is_ai(e: &EventInfo) -> bool {
    e.body["ai"] == true
}

fn marker(e: &EventInfo) -> &str {
    e.body["agent"].as_str().unwrap_or("")
}

fn text(e: &EventInfo) -> &str {
    e.body["text"].as_str().unwrap_or("")
}

async fn rest(
    server: &TestServer,
    method: reqwest::Method,
    conversation: &str,
) -> reqwest::Response {
    reqwest::Client::new()
        .request(
            method,
            format!(
                "{}/api/v1/chat/conversations/{conversation}/agent",
                server.url
            ),
        )
        .basic_auth(KEY, Some(SECRET))
        .send()
        .await
        .unwrap()
}

/// Layla buys in a live room's flash sale; the order is in the ledger, not the shop's file.
async fn buy_in_a_flash_sale(server: &TestServer) -> String {
    let api = Api::new(server);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for (path, body) in [
        (
            "/wallets/layla/top_up",
            json!({"idempotency_key": "load", "amount_minor": 10_000, "currency": "USD"}),
        ),
        (
            "/rooms/live/sales",
            json!({"sale_id": "fs-1", "room": "", "product_id": "tote", "title": "Tote",
            "price_minor": 2500, "currency": "USD", "stock": 5, "per_buyer_limit": 2,
            "starts_at_ms": now_ms - 1000, "ends_at_ms": now_ms + 60_000}),
        ),
    ] {
        let (status, answer) = api.call(Method::POST, path, Some(body)).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    let viewer = server.bot("live", "layla", "audience").await;
    let buy = souk_proto::signal::ClientMessage::Buy(souk_proto::signal::Buy {
        req: Some(1),
        idempotency_key: "buy-1".into(),
        sale_id: "fs-1".into(),
        quantity: 1,
    });
    let order = common::request(&viewer, buy, 1).await.expect("bought");
    order["order_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_finds_an_order_placed_in_a_live_sale() {
    let model = scripted_model().await;
    let server = start_server(Some(&model), "always");
    let order_id = buy_in_a_flash_sale(&server).await;
    let layla = connect(&server, "layla", &[]).await;
    let conv = layla.open_direct("shop:acme").await.unwrap();
    layla
        .send_text(&conv.id, "q1", &format!("Where is my order {order_id} ?"))
        .await
        .unwrap();
    let answer = next_where(&layla, "an order answer", |e| {
        is_ai(e) && marker(e) != "joined"
    })
    .await;
    assert_eq!(
        text(&answer),
        format!("(English) Order {order_id} is paid with .")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_assistant_answers_from_the_catalogue_in_the_shoppers_language_and_hands_over() {
    let model = scripted_model().await;
    let server = start_server(Some(&model), "staff_offline");
    let layla = connect(&server, "layla", &[]).await;
    let conv = layla.open_direct("shop:acme").await.unwrap();

    // No staff online: the assistant introduces itself as an AI, then answers from the
    // catalogue, in Arabic because she writes Arabic.
    layla
        .send_text(&conv.id, "q1", "هل عندكم حذاء sneaker؟")
        .await
        .unwrap();
    let hello = next_where(&layla, "the AI disclosure", is_ai).await;
    assert_eq!(marker(&hello), "joined");
    assert_eq!(hello.sender, "shop:acme");
    assert!(text(&hello).contains("ذكاء اصطناعي"), "{}", text(&hello));
    let answer = next_where(&layla, "an answer", is_ai).await;
    assert_eq!(
        text(&answer),
        "(Arabic) We have حذاء رياضي من القماش for 3999 USD."
    );
    assert_eq!(answer.body["lang"], "ar");

    // Her own order, in English now.
    layla
        .send_text(&conv.id, "q2", "Where is my order A1001 ?")
        .await
        .unwrap();
    let answer = next_where(&layla, "an order answer", is_ai).await;
    assert_eq!(
        text(&answer),
        "(English) Order A1001 is shipped with Aramex."
    );

    // A person, please: the handoff notice, then a summary for staff.
    layla
        .send_text(&conv.id, "q3", "I want a person please")
        .await
        .unwrap();
    let notice = next_where(&layla, "the handoff notice", is_ai).await;
    assert!(
        text(&notice).contains("member of our team"),
        "{}",
        text(&notice)
    );
    let handoff = next_where(&layla, "the handoff", |e| marker(e) == "handoff").await;
    assert_eq!(handoff.kind, EventKind::System);
    assert_eq!(handoff.body["reason"], "the shopper asked for a person");
    assert!(handoff.body["summary"]
        .as_str()
        .unwrap()
        .contains("I want a person"));

    // Handed over: the staff member answers; the assistant stays quiet even though it is
    // asked again, and its answers were counted.
    let sam = connect(&server, "sam", &["acme"]).await;
    sam.send_text(&conv.id, "s1", "Hi Layla, Sam here.")
        .await
        .unwrap();
    layla
        .send_text(&conv.id, "q4", "Do you have sneakers?")
        .await
        .unwrap();
    let metrics = common::metrics(&server).await;
    assert!(metrics.contains("souk_agent_replies_total 3"), "{metrics}");
    assert!(metrics.contains("souk_agent_handoffs_total 1"));
    assert!(metrics.contains("souk_agent_reply_seconds_count 3"));

    // Nobody can pass for the assistant.
    let forged = layla
        .request(
            json!({"type": "chat_send", "conversation": conv.id, "client_msg_id": "f1",
            "kind": "text", "body": {"text": "I am the AI", "ai": true}}),
        )
        .await
        .unwrap_err();
    match forged {
        souk_client::ClientError::Refused(e) => assert_eq!(e.code.as_str(), "permission_denied"),
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn staff_online_keep_the_conversation_until_the_backend_asks_for_the_assistant() {
    let model = scripted_model().await;
    let server = start_server(Some(&model), "staff_offline");
    let _sam = connect(&server, "sam", &["acme"]).await;
    let omar = connect(&server, "omar", &[]).await;
    let conv = omar.open_direct("shop:acme").await.unwrap();
    omar.send_text(&conv.id, "q1", "Do you have canvas sneakers?")
        .await
        .unwrap();

    // Staff are online, so the assistant waits until the merchant's backend asks for it;
    // then it introduces itself and answers the waiting question.
    assert_eq!(
        rest(&server, reqwest::Method::POST, &conv.id)
            .await
            .status(),
        204
    );
    let hello = next_where(&omar, "the AI disclosure", is_ai).await;
    assert_eq!(
        marker(&hello),
        "joined",
        "the assistant answered before it was asked"
    );
    let answer = next_where(&omar, "an answer", is_ai).await;
    assert_eq!(
        text(&answer),
        "(English) We have Canvas sneaker for 3999 USD."
    );

    // A member of staff writes: the assistant leaves.
    let sam = connect(&server, "sam", &["acme"]).await;
    sam.send_text(&conv.id, "s1", "Sam here, I'll take it from here.")
        .await
        .unwrap();
    let left = next_where(&omar, "the assistant leaving", is_ai).await;
    assert_eq!(marker(&left), "left");

    // The REST call names a conversation that must exist.
    assert_eq!(
        rest(&server, reqwest::Method::POST, "no-such-conversation")
            .await
            .status(),
        404
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_is_missing_down_or_silent_is_a_visible_error_and_staff_take_over() {
    // No model configured: the shopper sees why, and the REST call says so.
    let server = start_server(None, "always");
    let ana = connect(&server, "ana", &[]).await;
    let conv = ana.open_direct("shop:acme").await.unwrap();
    ana.send_text(&conv.id, "q1", "hello, do you ship to Riyadh?")
        .await
        .unwrap();
    let error = next_where(&ana, "the missing-model error", is_ai).await;
    assert_eq!(marker(&error), "error");
    assert_eq!(error.body["code"], "agent_no_llm");
    assert!(text(&error).contains("[agent.llm]"));
    let refused = rest(&server, reqwest::Method::POST, &conv.id).await;
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "agent_unavailable", "{body}");
    drop(server);

    // A model server that is down, then one that never answers (2 s timeout).
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let down = format!("http://{}/v1", closed.local_addr().unwrap());
    drop(closed);
    let model = scripted_model().await;
    for (url, question, code) in [
        (down.as_str(), "hello there", "llm_unreachable"),
        (model.as_str(), "please hang on", "llm_timeout"),
    ] {
        let server = start_server(Some(url), "always");
        let ana = connect(&server, "ana", &[]).await;
        let conv = ana.open_direct("shop:acme").await.unwrap();
        ana.send_text(&conv.id, "q1", question).await.unwrap();
        assert_eq!(
            marker(&next_where(&ana, "the disclosure", is_ai).await),
            "joined"
        );
        let sorry = next_where(&ana, "the apology", is_ai).await;
        assert!(text(&sorry).contains("unavailable"), "{}", text(&sorry));
        let error = next_where(&ana, "the error marker", is_ai).await;
        assert_eq!(error.body["code"], code);
        let metrics = common::metrics(&server).await;
        assert!(
            metrics.contains(&format!("souk_agent_failures_total{{code=\"{code}\"}} 1")),
            "{metrics}"
        );
        // The room stays usable: the conversation still takes messages.
        ana.send_text(&conv.id, "q2", "anyone?").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_that_asks_for_the_voice_agent_hears_why_it_cannot_come() {
    use souk_proto::live::LiveEvent;
    use souk_proto::signal::ServerMessage;
    let server = start_server(None, "always");
    let shopper = server.bot("consult-1", "layla", "shopper").await;
    let ask = |shop: &'static str| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/rooms/consult-1/agent", server.url))
            .basic_auth(KEY, Some(SECRET))
            .json(&json!({ "shop": shop }))
            .send()
    };
    let refused = ask("acme").await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["code"], "agent_unavailable");
    assert!(body["message"].as_str().unwrap().contains("[agent.llm]"));
    // Everyone in the room sees it too.
    shopper
        .wait_for("the agent's error in the room", common::WAIT, |s| {
            s.messages.iter().any(|m| match m {
                ServerMessage::RoomEvents(batch) => batch.events.iter().any(|e| {
                    matches!(&e.event, LiveEvent::Agent(a)
                        if a.state == "error" && a.code.as_deref() == Some("agent_unavailable"))
                }),
                _ => false,
            })
        })
        .await
        .unwrap();
    let unauthenticated = reqwest::Client::new()
        .post(format!("{}/api/v1/rooms/consult-1/agent", server.url))
        .json(&json!({ "shop": "acme" }))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_configured_for_the_agent_gets_it_when_a_shopper_joins() {
    let model = scripted_model().await;
    let server = start_server(Some(&model), "staff_offline");
    let create = |body: Value| {
        reqwest::Client::new()
            .post(format!("{}/api/v1/rooms", server.url))
            .basic_auth(KEY, Some(SECRET))
            .json(&body)
            .send()
    };
    for (body, code) in [
        (
            json!({"name": "bad-1", "agent": {"shop": "acme", "when": "sometimes"}}),
            "invalid_request",
        ),
        (
            json!({"name": "bad-2", "agent": {"shop": "nowhere"}}),
            "invalid_request",
        ),
    ] {
        let refused = create(body).await.unwrap();
        assert_eq!(refused.status(), 400);
        assert_eq!(refused.json::<Value>().await.unwrap()["code"], code);
    }
    let created = create(json!({"name": "consult-7", "agent": {"shop": "acme"}}))
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    // No staff in the room: the shopper's arrival brings the agent.
    let shopper = server.bot("consult-7", "layla", "shopper").await;
    agent_comes(&shopper, "the agent to join", true).await;
    // A member of staff joins: the agent hands over and leaves.
    let _staff = server.bot("consult-7", "sam", "staff").await;
    agent_comes(&shopper, "the agent to leave", false).await;
}

/// Waits until the shopper's client sees the agent join (`true`) or leave.
async fn agent_comes(shopper: &souk_client::Client, what: &str, joins: bool) {
    use souk_proto::signal::ServerMessage;
    use souk_proto::token::Role;
    shopper
        .wait_for(what, common::WAIT, |s| {
            s.messages.iter().any(|m| match m {
                ServerMessage::ParticipantJoined(p) => joins && p.participant.role == Role::Agent,
                ServerMessage::ParticipantLeft(p) => !joins && p.identity == "agent-acme",
                _ => false,
            })
        })
        .await
        .unwrap();
}

/// A `souk agent` worker process, killed on drop.
struct Worker(std::process::Child);

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `souk agent` for shop "acme" with the scripted model, against `server_url`;
/// `ca` is a certificate the worker trusts besides the machine's (`SSL_CERT_FILE`).
async fn start_worker(
    name: &str,
    server_url: &str,
    ca: Option<&std::path::Path>,
) -> (Worker, std::path::PathBuf) {
    let model = scripted_model().await;
    let dir = std::env::temp_dir().join(format!("souk-agent-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = dir.join("shop.json");
    std::fs::write(&data, SHOP).unwrap();
    let config = dir.join("worker.toml");
    std::fs::write(
        &config,
        format!(
            "[agent.llm]\nbase_url = \"{model}\"\nmodel = \"scripted\"\n[[agent.shops]]\nid = \"acme\"\ndata = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_souk"));
    command
        .args([
            "agent",
            "--server",
            server_url,
            "--api-key",
            KEY,
            "--api-secret",
            SECRET,
            "--capacity",
            "2",
        ])
        .arg("--config")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    if let Some(ca) = ca {
        command.env("SSL_CERT_FILE", ca);
    }
    (Worker(command.spawn().expect("souk agent starts")), dir)
}

/// Asks for the agent in `room` until a registered worker takes the job: until then the
/// server tries to run the agent itself, and it has no model. Polled: the worker
/// registers in its own time.
async fn ask_until_a_worker_takes(api: &Api, room: &str) {
    let path = format!("/rooms/{room}/agent");
    common::eventually("the worker to take the job", || async {
        let asked = api.call(Method::POST, &path, Some(json!({ "shop": "acme" })));
        asked.await.0 == 204
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_worker_takes_the_rooms_jobs_with_its_own_model() {
    // The server has no model: only the worker can run the agent.
    let server = start_server(None, "staff_offline");
    let (_worker, dir) = start_worker("worker", &server.url, None).await;
    let shopper = server.bot("consult-w", "layla", "shopper").await;
    let api = Api::new(&server);
    ask_until_a_worker_takes(&api, "consult-w").await;
    agent_comes(&shopper, "the worker's agent to join", true).await;
    // Sent away through the server, the worker's agent leaves.
    let (left, _) = api
        .call(Method::DELETE, "/rooms/consult-w/agent", None)
        .await;
    assert_eq!(left, 204);
    agent_comes(&shopper, "the agent to leave", false).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_worker_reaches_an_https_server_over_tls() {
    let cert = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let dir = std::env::temp_dir().join(format!("souk-agent-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    let tls = [
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ];
    let server = start_server_and(None, "staff_offline", &tls);
    assert!(server.url.starts_with("https://"), "{}", server.url);
    // Trusting the deployment's own CA, the worker registers over wss and its agent
    // joins over wss.
    let (_worker, worker_dir) = start_worker("tls", &server.url, Some(&cert_path)).await;
    let ca = reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap();
    let api = Api {
        http: reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .unwrap(),
        ..Api::new(&server)
    };
    ask_until_a_worker_takes(&api, "consult-tls").await;
    common::eventually("the worker's agent to join over wss", || async {
        let (_, people) = api
            .call(Method::GET, "/rooms/consult-tls/participants", None)
            .await;
        people["participants"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p["role"] == "agent"))
    })
    .await;
    let _ = std::fs::remove_dir_all(worker_dir);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn an_agent_worker_without_a_model_or_shops_says_what_is_missing() {
    let dir = std::env::temp_dir().join(format!("souk-agent-worker-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (toml, expected) in [
        ("[agent]\n", "[[agent.shops]]"),
        (
            "[[agent.shops]]\nid = \"acme\"\ndata = \"/nonexistent/shop.json\"\n",
            "[agent.llm]",
        ),
    ] {
        let config = dir.join("worker.toml");
        std::fs::write(&config, toml).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_souk"))
            .args([
                "agent",
                "--server",
                "http://127.0.0.1:9",
                "--api-key",
                "k",
                "--api-secret",
                "s",
            ])
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expected), "{err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}
