//! A real Chromium (Debian's `chromium`, installed by `cargo xtask
//! setup`), headless, driven over the DevTools protocol: pages are loaded,
//! read back from the rendered DOM with JavaScript, and photographed.
//! The protocol is JSON over a WebSocket, spoken here with
//! tokio-tungstenite.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A headless Chromium with a profile of its own, killed on drop.
pub struct Browser {
    child: Child,
    port: u16,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromium` (or `$CORRAL_CHROMIUM`); panics with the command
    /// that installs it when it is missing.
    pub fn start() -> Browser {
        let program = std::env::var("CORRAL_CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let profile = tempfile::tempdir().expect("a profile directory");
        let child = Command::new(&program)
            .args([
                "--headless=new",
                // Tests run as root in CI, where Chromium's own sandbox
                // cannot start; the pages are the test's own.
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start {program}: {e}; run `cargo xtask setup` (it installs Debian's chromium)")
            });
        // Chromium writes the port it chose here once it listens.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break port;
            }
            assert!(
                Instant::now() < deadline,
                "chromium did not start its DevTools endpoint in 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        Browser {
            child,
            port,
            _profile: profile,
        }
    }

    /// A new tab.
    pub fn page(&self) -> Page {
        let target = http(self.port, "PUT", "/json/new?about:blank");
        let target: Value = serde_json::from_str(&target).expect("a target as JSON");
        let url = target["webSocketDebuggerUrl"]
            .as_str()
            .expect("the tab's DevTools URL")
            .to_string();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let (socket, _) = rt
            .block_on(tokio_tungstenite::connect_async(url))
            .expect("connect to the tab");
        Page {
            rt,
            socket,
            next_id: 0,
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One plain HTTP/1.1 request to the DevTools endpoint; the body, read
/// to its length (Chromium keeps the connection open whatever it is asked).
fn http(port: u16, method: &str, path: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("DevTools endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a read timeout");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-length: 0\r\n\r\n"
    )
    .expect("send");
    let mut reader = BufReader::new(stream);
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a response header");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a length");
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).expect("the response body");
    String::from_utf8_lossy(&body).into_owned()
}

/// One tab, driven by DevTools commands.
pub struct Page {
    rt: tokio::runtime::Runtime,
    socket: Socket,
    next_id: u64,
}

impl Page {
    /// Sends `method` and waits for its answer (events in between are
    /// dropped); panics on a protocol error.
    pub fn command(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let message = json!({ "id": id, "method": method, "params": params }).to_string();
        let (rt, socket) = (&self.rt, &mut self.socket);
        rt.block_on(async {
            socket
                .send(Message::text(message))
                .await
                .expect("send a command");
            loop {
                let frame = tokio::time::timeout(Duration::from_secs(30), socket.next())
                    .await
                    .unwrap_or_else(|_| panic!("{method}: no answer in 30 s"))
                    .expect("the tab closed")
                    .expect("a frame");
                let Message::Text(text) = frame else { continue };
                let answer: Value = serde_json::from_str(text.as_str()).expect("JSON");
                if answer["id"] == id {
                    assert!(answer["error"].is_null(), "{method}: {answer}");
                    return answer["result"].clone();
                }
            }
        })
    }

    /// The value of `expression` in the page (a promise is awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.command(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true, "awaitPromise": true }),
        );
        assert!(
            result["exceptionDetails"].is_null(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy; panics after `timeout`.
    pub fn wait_for(&mut self, expression: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.eval(expression);
            if !(value.is_null() || value == false || value == "" || value == 0) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "still false after {timeout:?}: {expression}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Loads `url` and waits until the document has loaded.
    pub fn open(&mut self, url: &str) {
        self.command("Page.navigate", json!({ "url": url }));
        let check = format!(
            "document.readyState === 'complete' && location.href === {}",
            Value::String(url.to_string())
        );
        self.wait_for(&check, Duration::from_secs(30));
    }

    /// The rendered page as a PNG, written to `path`.
    pub fn screenshot(&mut self, path: &Path) {
        let shot = self.command("Page.captureScreenshot", json!({ "format": "png" }));
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().expect("image data"))
            .expect("base64");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }
}

/// Where tests save screenshots: `target/screenshots/NAME.png`.
pub fn screenshot_path(name: &str) -> PathBuf {
    crate::target_dir()
        .join("screenshots")
        .join(format!("{name}.png"))
}
