//! Loopback stand-ins for what this machine cannot reach: model providers
//! and Slack. Each speaks the real wire format, so that Corral's real
//! client code (corral-models, slack-morphism) is what the tests exercise.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// One HTTP request as a stand-in saw it.
#[derive(Debug, Clone)]
pub struct HttpRequest {
    pub method: String,
    pub path: String,
    /// Names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

type Handler = Arc<dyn Fn(&HttpRequest) -> (u16, Value) + Send + Sync>;

/// An HTTP/1.1 server on 127.0.0.1 answering JSON from a handler, one
/// request per connection, recording every request.
pub struct HttpStandIn {
    pub addr: SocketAddr,
    requests: Arc<Mutex<Vec<HttpRequest>>>,
}

impl HttpStandIn {
    pub fn start(handler: impl Fn(&HttpRequest) -> (u16, Value) + Send + Sync + 'static) -> Self {
        let handler: Handler = Arc::new(handler);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let addr = listener.local_addr().expect("local addr");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (seen, handler) = (seen.clone(), handler.clone());
                thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    let Ok(clone) = stream.try_clone() else {
                        return;
                    };
                    let mut reader = BufReader::new(clone);
                    let mut line = String::new();
                    if reader.read_line(&mut line).is_err() || line.is_empty() {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let mut headers = Vec::new();
                    let mut length = 0usize;
                    loop {
                        let mut h = String::new();
                        if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                            break;
                        }
                        if let Some((n, v)) = h.trim_end().split_once(':') {
                            let (n, v) = (n.trim().to_ascii_lowercase(), v.trim().to_string());
                            if n == "content-length" {
                                length = v.parse().unwrap_or(0);
                            }
                            headers.push((n, v));
                        }
                    }
                    let mut body = vec![0; length];
                    let _ = reader.read_exact(&mut body);
                    let request = HttpRequest {
                        method,
                        path,
                        headers,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    };
                    let (status, answer) = handler(&request);
                    seen.lock().expect("lock").push(request);
                    let answer = answer.to_string();
                    let response = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                        answer.len()
                    );
                    let _ = stream.write_all(response.as_bytes());
                });
            }
        });
        HttpStandIn { addr, requests }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn requests(&self) -> Vec<HttpRequest> {
        self.requests.lock().expect("lock").clone()
    }
}

/// What the scripted model does with the newest message: a person's text
/// asking to "write a note" gets a `files_write` call, "fetch" gets an
/// `http_get` call to a host no policy allows, anything else an echo; a
/// tool result is reported back in words.
fn script(
    last_text: Option<&str>,
    tool_result: Option<(&str, bool)>,
) -> (String, Option<(&'static str, Value)>) {
    if let Some((content, is_error)) = tool_result {
        return if is_error {
            (format!("The tool call was refused: {content}"), None)
        } else {
            (format!("Done. Tool result: {content}"), None)
        };
    }
    let text = last_text.unwrap_or_default();
    if text.contains("write a note") {
        (
            String::new(),
            Some((
                "files_write",
                json!({"path": "notes/hello.md", "content": "hello from the model"}),
            )),
        )
    } else if text.contains("fetch") {
        (
            String::new(),
            Some(("http_get", json!({"url": "http://forbidden.invalid/"}))),
        )
    } else {
        (format!("You said: {text}"), None)
    }
}

/// The Anthropic Messages API, scripted.
pub fn anthropic_stand_in() -> HttpStandIn {
    HttpStandIn::start(|req| {
        if req.method != "POST" || req.path != "/v1/messages" {
            return (
                404,
                json!({"type": "error", "error": {"type": "not_found_error", "message": format!("no route {}", req.path)}}),
            );
        }
        if req.header("anthropic-version").is_none() {
            return (
                400,
                json!({"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}}),
            );
        }
        let body = req.json();
        let last = &body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        let blocks = last["content"].as_array().cloned().unwrap_or_default();
        let text = blocks
            .iter()
            .find(|b| b["type"] == "text")
            .and_then(|b| b["text"].as_str());
        let result = blocks.iter().find(|b| b["type"] == "tool_result").map(|b| {
            (
                b["content"].as_str().unwrap_or_default(),
                b["is_error"] == json!(true),
            )
        });
        let (say, call) = script(text, result);
        let mut content = Vec::new();
        if !say.is_empty() {
            content.push(json!({"type": "text", "text": say}));
        }
        let stop = if let Some((name, input)) = call {
            content
                .push(json!({"type": "tool_use", "id": "toolu_01", "name": name, "input": input}));
            "tool_use"
        } else {
            "end_turn"
        };
        (
            200,
            json!({
                "id": "msg_01", "type": "message", "role": "assistant", "model": body["model"],
                "content": content, "stop_reason": stop, "stop_sequence": null,
                "usage": {"input_tokens": 120, "output_tokens": 30},
            }),
        )
    })
}

/// OpenAI Chat Completions, scripted.
pub fn openai_stand_in() -> HttpStandIn {
    HttpStandIn::start(|req| {
        if req.method != "POST" || req.path != "/v1/chat/completions" {
            return (
                404,
                json!({"error": {"message": format!("no route {}", req.path), "type": "invalid_request_error"}}),
            );
        }
        let body = req.json();
        let last = body["messages"]
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default();
        let (say, call) = if last["role"] == "tool" {
            let content = last["content"].as_str().unwrap_or_default();
            let error = content.strip_prefix("error: ");
            script(None, Some((error.unwrap_or(content), error.is_some())))
        } else {
            script(last["content"].as_str(), None)
        };
        let mut message = json!({"role": "assistant", "content": if say.is_empty() { Value::Null } else { json!(say) }});
        let finish = if let Some((name, input)) = call {
            message["tool_calls"] = json!([{"id": "call_01", "type": "function", "function": {"name": name, "arguments": input.to_string()}}]);
            "tool_calls"
        } else {
            "stop"
        };
        (
            200,
            json!({
                "id": "chatcmpl-01", "object": "chat.completion", "created": 1764000000, "model": body["model"],
                "choices": [{"index": 0, "message": message, "finish_reason": finish}],
                "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120},
            }),
        )
    })
}

/// Slack: the Web API (`auth.test`, `apps.connections.open`,
/// `chat.postMessage`) over HTTP, and Socket Mode over a websocket.
pub struct SlackStandIn {
    pub web: HttpStandIn,
    events: tokio::sync::mpsc::UnboundedSender<Value>,
    acks: Arc<Mutex<Vec<String>>>,
    connected: Arc<tokio::sync::Notify>,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

pub const SLACK_BOT_USER: &str = "UBOT";

/// A press of a button in Slack, as [`SlackStandIn::press_button`] sends
/// it.
pub struct ButtonPress<'a> {
    pub envelope: &'a str,
    pub team: &'a str,
    pub channel: &'a str,
    pub user: &'a str,
    pub message_ts: &'a str,
    pub action_id: &'a str,
    pub value: &'a str,
}
pub const SLACK_TEAM: &str = "T0001";

impl SlackStandIn {
    /// Must be called inside a tokio runtime (the websocket side is async).
    pub async fn start() -> Self {
        let ws = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind ws");
        let ws_addr = ws.local_addr().expect("ws addr");
        let web = HttpStandIn::start(move |req| {
            let path = req.path.split('?').next().unwrap_or_default();
            let authorized = req
                .header("authorization")
                .is_some_and(|a| a.starts_with("Bearer x"));
            if !authorized {
                return (200, json!({"ok": false, "error": "not_authed"}));
            }
            match path {
                "/api/auth.test" => (
                    200,
                    json!({
                        "ok": true, "url": "https://corral-test.slack.com/", "team": "Corral Test",
                        "user": "corral", "team_id": SLACK_TEAM, "user_id": SLACK_BOT_USER, "bot_id": "BBOT",
                    }),
                ),
                "/api/apps.connections.open" => {
                    if !req
                        .header("authorization")
                        .is_some_and(|a| a.starts_with("Bearer xapp-"))
                    {
                        return (200, json!({"ok": false, "error": "invalid_auth"}));
                    }
                    (
                        200,
                        json!({"ok": true, "url": format!("ws://{ws_addr}/link/?ticket=t1&app_id=A0001")}),
                    )
                }
                "/api/chat.postMessage" => {
                    let body = req.json();
                    // A way for tests to see a post Slack refuses.
                    if body["text"]
                        .as_str()
                        .is_some_and(|t| t.contains("REFUSE-THIS-POST"))
                    {
                        return (200, json!({"ok": false, "error": "msg_too_long"}));
                    }
                    let ts = SlackStandIn::ts_of(&body);
                    (
                        200,
                        json!({
                            "ok": true, "channel": body["channel"], "ts": ts,
                            "message": {"type": "message", "ts": ts, "text": body["text"], "bot_id": "BBOT", "user": SLACK_BOT_USER},
                        }),
                    )
                }
                "/api/chat.update" => {
                    let body = req.json();
                    (
                        200,
                        json!({"ok": true, "channel": body["channel"], "ts": body["ts"], "text": body["text"]}),
                    )
                }
                other => (
                    200,
                    json!({"ok": false, "error": format!("unknown_method {other}")}),
                ),
            }
        });
        let (events, mut queue) = tokio::sync::mpsc::unbounded_channel::<Value>();
        let acks = Arc::new(Mutex::new(Vec::new()));
        let connected = Arc::new(tokio::sync::Notify::new());
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (a, c, n) = (acks.clone(), connected.clone(), connections.clone());
        tokio::spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            use tokio_tungstenite::tungstenite::Message;
            // One client at a time, as Corral configures Socket Mode; a new
            // connection (a reconnect) takes over the event queue.
            while let Ok((stream, _)) = ws.accept().await {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    continue;
                };
                let hello = json!({"type": "hello", "num_connections": 1, "debug_info": {"host": "stand-in"}, "connection_info": {"app_id": "A0001"}});
                if socket.send(Message::text(hello.to_string())).await.is_err() {
                    continue;
                }
                n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                c.notify_waiters();
                loop {
                    tokio::select! {
                        event = queue.recv() => {
                            let Some(event) = event else { return };
                            if socket.send(Message::text(event.to_string())).await.is_err() { break; }
                        }
                        frame = socket.next() => match frame {
                            Some(Ok(Message::Text(text))) => {
                                if let Ok(v) = serde_json::from_str::<Value>(&text)
                                    && let Some(id) = v["envelope_id"].as_str()
                                {
                                    a.lock().expect("lock").push(id.to_string());
                                }
                            }
                            Some(Ok(Message::Ping(p))) => { let _ = socket.send(Message::Pong(p)).await; }
                            Some(Ok(_)) => {}
                            _ => break,
                        }
                    }
                }
            }
        });
        SlackStandIn {
            web,
            events,
            acks,
            connected,
            connections,
        }
    }

    pub fn api_url(&self) -> String {
        self.web.url("/api")
    }

    /// Waits until a Socket Mode client has received `hello`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.connected.notified();
            if self.connections.load(std::sync::atomic::Ordering::SeqCst) > 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return false;
            }
        }
    }

    /// Sends an `app_mention` in `channel` from `user`, as an `events_api`
    /// envelope; returns the message's `ts` (its thread).
    pub fn mention(&self, envelope: &str, channel: &str, user: &str, text: &str, ts: &str) {
        let event = json!({
            "type": "events_api",
            "envelope_id": envelope,
            "accepts_response_payload": false,
            "retry_attempt": 0,
            "retry_reason": "",
            "payload": {
                "type": "event_callback",
                "token": "unused",
                "team_id": SLACK_TEAM,
                "api_app_id": "A0001",
                "event_id": format!("Ev{envelope}"),
                "event_time": 1_764_000_000,
                "event": {
                    "type": "app_mention",
                    "user": user,
                    "text": format!("<@{SLACK_BOT_USER}> {text}"),
                    "ts": ts,
                    "channel": channel,
                    "event_ts": ts,
                },
            },
        });
        let _ = self.events.send(event);
    }

    /// Sends a direct message (`message` event in an `im` channel).
    pub fn direct_message(&self, envelope: &str, channel: &str, user: &str, text: &str, ts: &str) {
        let event = json!({
            "type": "events_api",
            "envelope_id": envelope,
            "accepts_response_payload": false,
            "payload": {
                "type": "event_callback",
                "team_id": SLACK_TEAM,
                "api_app_id": "A0001",
                "event_id": format!("Ev{envelope}"),
                "event_time": 1_764_000_000,
                "event": {
                    "type": "message",
                    "channel_type": "im",
                    "user": user,
                    "text": text,
                    "ts": ts,
                    "channel": channel,
                    "event_ts": ts,
                },
            },
        });
        let _ = self.events.send(event);
    }

    /// Sends a `block_actions` interaction, as Slack does when `user`
    /// presses the button `action_id` (value `value`) on the message
    /// `message_ts` in `channel` of workspace `team`.
    pub fn press_button(&self, press: &ButtonPress<'_>) {
        let event = json!({
            "type": "interactive",
            "envelope_id": press.envelope,
            "accepts_response_payload": false,
            "payload": {
                "type": "block_actions",
                "team": {"id": press.team, "domain": "corral-test"},
                "user": {"id": press.user, "username": press.user, "team_id": press.team},
                "api_app_id": "A0001",
                "token": "unused",
                "trigger_id": format!("trigger-{}", press.envelope),
                "container": {"type": "message", "message_ts": press.message_ts, "channel_id": press.channel, "is_ephemeral": false},
                "channel": {"id": press.channel, "name": "corral"},
                "actions": [{
                    "type": "button",
                    "action_id": press.action_id,
                    "block_id": "approval",
                    "value": press.value,
                    "text": {"type": "plain_text", "text": "pressed"},
                    "action_ts": "1765000999.000001",
                }],
            },
        });
        let _ = self.events.send(event);
    }

    /// `chat.update` bodies sent so far.
    pub fn updates(&self) -> Vec<Value> {
        self.bodies("/api/chat.update")
    }

    /// The JSON bodies of the Web API calls to `path` so far.
    fn bodies(&self, path: &str) -> Vec<Value> {
        self.web
            .requests()
            .into_iter()
            .filter(|r| r.path.starts_with(path))
            .map(|r| r.json())
            .collect()
    }

    /// Waits for a `chat.postMessage` body that satisfies `matches`, with
    /// the `ts` the stand-in gave it.
    pub async fn wait_post_where(
        &self,
        timeout: Duration,
        matches: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(p) = self.posts().into_iter().find(|p| matches(p)) {
                return Some(p);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }

    /// The `ts` the stand-in gives a `chat.postMessage` with this body:
    /// distinct posts get distinct ones, as in Slack, since approval
    /// buttons are checked against the message they were posted on.
    pub fn ts_of(body: &Value) -> String {
        let hash = body
            .to_string()
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            });
        format!("1765000000.{:06}", hash % 1_000_000)
    }

    pub fn acked(&self) -> Vec<String> {
        self.acks.lock().expect("lock").clone()
    }

    /// `chat.postMessage` bodies posted so far.
    pub fn posts(&self) -> Vec<Value> {
        self.bodies("/api/chat.postMessage")
    }

    /// Waits for a post in `thread` whose text satisfies `matches`.
    pub async fn wait_post(
        &self,
        thread: &str,
        timeout: Duration,
        matches: impl Fn(&str) -> bool,
    ) -> Option<Value> {
        self.wait_post_where(timeout, |p| {
            p["thread_ts"] == thread && p["text"].as_str().is_some_and(&matches)
        })
        .await
    }
}
