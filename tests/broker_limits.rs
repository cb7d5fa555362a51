//! Hostile and careless clients against the broker's limits. Each test
//! checks that the offender is contained and that another agent is not
//! slowed down.

use std::time::{Duration, Instant};

use corral_broker::BrokerLimits;
use corral_tests::broker::{BrokerOptions, TestBroker};
use corral_tests::mcp::{McpClient, is_error, result_text};
use serde_json::json;

fn echo_ok(c: &mut McpClient) {
    let r = c.call_tool("echo", json!({"message": "still here"}));
    assert!(!is_error(&r), "{r}");
}

/// Another agent's calls complete promptly while `offender` misbehaves.
fn bystander_is_fine(b: &TestBroker) {
    let mut c = b.client("assistant");
    let started = Instant::now();
    for _ in 0..20 {
        echo_ok(&mut c);
    }
    // 20 echo calls take a few ms; a stalled broker would take seconds.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bystander slowed to {:?}",
        started.elapsed()
    );
}

#[test]
fn malformed_frames_get_json_rpc_errors_and_the_session_survives() {
    let b = TestBroker::start(BrokerOptions::default());
    let mut c = b.client("reporter");
    c.send_raw(b"{this is not json\n").unwrap();
    let e = c.read_message().unwrap();
    assert_eq!(e["error"]["code"], -32700, "{e}");
    assert_eq!(e["id"], json!(null));
    c.send_raw(b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"ping\"}]\n")
        .unwrap();
    let e = c.read_message().unwrap();
    assert_eq!(e["error"]["code"], -32600, "{e}");
    assert!(e["error"]["message"].as_str().unwrap().contains("batches"));
    c.send_raw(b"{\"jsonrpc\":\"1.0\",\"id\":42,\"method\":\"ping\"}\n")
        .unwrap();
    let e = c.read_message().unwrap();
    assert_eq!(
        (e["id"].clone(), e["error"]["code"].clone()),
        (json!(42), json!(-32600)),
        "{e}"
    );
    c.send_raw(b"\"just a string\"\n").unwrap();
    assert_eq!(c.read_message().unwrap()["error"]["code"], -32600);
    let unknown = c.request("no/such/method", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    echo_ok(&mut c);
}

#[test]
fn an_oversized_frame_is_refused_without_buffering_it() {
    let b = TestBroker::start(BrokerOptions {
        limits: BrokerLimits {
            max_frame_bytes: 64 * 1024,
            ..BrokerLimits::default()
        },
        ..BrokerOptions::default()
    });
    let mut c = b.client("reporter");
    let big = "x".repeat(4 << 20);
    let frame = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"message\":\"{big}\"}}}}}}\n"
    );
    c.send_raw(frame.as_bytes()).unwrap();
    let e = c.read_message().unwrap();
    assert_eq!(e["error"]["code"], -32600, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536 bytes"),
        "{e}"
    );
    echo_ok(&mut c);
    bystander_is_fine(&b);
}

#[test]
fn a_slowloris_client_is_cut_off_and_stalls_no_one() {
    let b = TestBroker::start(BrokerOptions {
        limits: BrokerLimits {
            frame_timeout: Duration::from_millis(500),
            ..BrokerLimits::default()
        },
        ..BrokerOptions::default()
    });
    let mut slow = b.client("reporter");
    slow.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":1,").unwrap();
    bystander_is_fine(&b);
    let started = Instant::now();
    slow.set_read_timeout(Duration::from_secs(10));
    // The broker closes the connection: a read returns end of stream.
    assert!(slow.read_message().is_none());
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(5), "closed after {waited:?}");
}

#[test]
fn an_idle_connection_is_closed() {
    let b = TestBroker::start(BrokerOptions {
        limits: BrokerLimits {
            idle_timeout: Duration::from_millis(300),
            ..BrokerLimits::default()
        },
        ..BrokerOptions::default()
    });
    let mut c = b.client("reporter");
    std::thread::sleep(Duration::from_millis(800));
    let _ = c.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":5,\"method\":\"ping\"}\n");
    assert!(
        c.read_message().is_none(),
        "an idle connection should have been closed"
    );
}

#[test]
fn a_flood_is_rate_limited_and_stalls_no_one() {
    let b = TestBroker::start(BrokerOptions {
        limits: BrokerLimits {
            rate_per_second: 20.0,
            rate_burst: 20.0,
            ..BrokerLimits::default()
        },
        ..BrokerOptions::default()
    });
    let mut flood = b.client("reporter");
    // Fire 400 calls without reading; the broker reads only as fast as it
    // answers, so the flood fills the flooder's own socket buffer.
    let ids: Vec<i64> = (0..400)
        .map(|_| {
            flood.start(
                "tools/call",
                json!({"name": "echo", "arguments": {"message": "x"}}),
            )
        })
        .collect();
    bystander_is_fine(&b);
    let mut limited = 0;
    for id in ids {
        let r = flood.response(id);
        let result = &r["result"];
        if is_error(result) {
            assert_eq!(result["structuredContent"]["error"], "rate-limited", "{r}");
            assert!(result_text(result).contains("rate limit of 20/s"), "{r}");
            limited += 1;
        }
    }
    assert!(limited >= 300, "only {limited} of 400 were rate-limited");
}

#[test]
fn connections_per_agent_are_capped() {
    let b = TestBroker::start(BrokerOptions {
        limits: BrokerLimits {
            max_connections: 2,
            ..BrokerLimits::default()
        },
        ..BrokerOptions::default()
    });
    let _one = b.client("reporter");
    let _two = b.client("reporter");
    let mut third = McpClient::connect(&b.socket("reporter")).unwrap();
    let e = third.read_message().expect("a refusal");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already has 2 connections"),
        "{e}"
    );
    assert!(third.read_message().is_none());
    bystander_is_fine(&b);
}

#[test]
fn a_slow_tool_times_out_and_holds_only_its_own_agent() {
    // One slot per agent and a short call timeout. `spin` loops forever:
    // the first call is stopped at the deadline, the second waits for the
    // slot and times out too, and the bystander never notices.
    let mut b = TestBroker::start(BrokerOptions {
        limits: BrokerLimits {
            max_in_flight: 1,
            call_timeout: Duration::from_millis(1000),
            ..BrokerLimits::default()
        },
        extra_policy: Some(
            r#"@id("reporter-may-spin")
permit (principal == Agent::"reporter", action == Action::"spin", resource);"#
                .into(),
        ),
        ..BrokerOptions::default()
    });
    let mut c = b.client("reporter");
    let first = c.start("tools/call", json!({"name": "spin", "arguments": {}}));
    let second = c.start("tools/call", json!({"name": "spin", "arguments": {}}));
    bystander_is_fine(&b);
    for id in [first, second] {
        let r = c.response(id);
        assert!(is_error(&r["result"]), "{r}");
        let text = result_text(&r["result"]);
        assert!(text.contains("spin") && text.contains("reporter"), "{text}");
    }
    echo_ok(&mut c);
    drop(c);
    b.stop();
    let timeouts = b
        .records()
        .iter()
        .filter(|r| r.outcome == Some(corral_audit::Outcome::Timeout))
        .count();
    assert_eq!(timeouts, 2);
}

#[test]
fn garbage_never_hurts_the_broker() {
    let b = TestBroker::start(BrokerOptions::default());
    let mut c = b.client("reporter");
    c.set_read_timeout(std::time::Duration::from_secs(10));
    // A fixed xorshift stream: random bytes, broken UTF-8, deep nesting,
    // half-valid JSON-RPC. Each line must get an answer or be a
    // notification; none may end the session.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let shapes: [&dyn Fn(u64) -> Vec<u8>; 5] = [
        &|n| {
            let noise = (0..(n % 200)).map(|i| ((n >> (i % 56)) as u8) | 1);
            std::iter::once(b'#')
                .chain(noise.filter(|b| *b != b'\n'))
                .collect()
        },
        &|_| vec![0xff, 0xfe, b'{', 0xc3, 0x28],
        &|n| {
            format!(
                "{}{}",
                "[".repeat(1 + (n % 5000) as usize),
                "]".repeat(1 + (n % 5000) as usize)
            )
            .into_bytes()
        },
        &|n| {
            format!(r#"{{"jsonrpc":"2.0","id":{n},"method":"tools/call","params":{{"name":{n}}}}}"#)
                .into_bytes()
        },
        &|n| {
            format!(r#"{{"jsonrpc":"2.0","id":"{n}","method":"tools/call","params":{{"name":"echo","arguments":[{n}]}}}}"#).into_bytes()
        },
    ];
    for _ in 0..300 {
        let n = next();
        let mut frame = shapes[(n % 5) as usize](n);
        frame.push(b'\n');
        c.send_raw(&frame).unwrap();
        let answer = c.read_message().unwrap_or_else(|| {
            panic!(
                "no answer to frame {:?}",
                String::from_utf8_lossy(&frame[..frame.len().min(300)])
            )
        });
        assert!(
            answer.get("error").is_some() || answer.get("result").is_some(),
            "{answer}"
        );
    }
    assert_eq!(c.request("ping", json!({}))["result"], json!({}));
    bystander_is_fine(&b);
}

/// A peer that sends calls and never reads its answers: no one else is
/// held up, and while the broker waits on it, each call that ran already
/// has its outcome record (outcome records are written once the kernel
/// holds an answer, or before waiting for a peer that does not take it,
/// so a broker killed during that wait loses none).
#[test]
fn a_client_that_never_reads_has_every_outcome_on_record_while_the_broker_waits() {
    let mut b = TestBroker::start(BrokerOptions {
        limits: BrokerLimits {
            frame_timeout: Duration::from_secs(3),
            ..BrokerLimits::default()
        },
        ..BrokerOptions::default()
    });
    let mut deaf = b.client("reporter");
    // Answers of about 100 KiB each (the message comes back as text and
    // as structured content): two or three fill the socket's buffer.
    let message = "x".repeat(48 << 10);
    let sender = std::thread::spawn(move || {
        let mut sent = 0;
        for id in 100..130 {
            let frame = json!({
                "jsonrpc": "2.0", "id": id, "method": "tools/call",
                "params": {"name": "echo", "arguments": {"message": message}},
            });
            // Fails once the broker has closed this connection.
            if deaf.send_raw(format!("{frame}\n").as_bytes()).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    bystander_is_fine(&b);
    // The broker is now blocked writing an answer (within its 3 s frame
    // timeout), and the records have had time to reach SQLite.
    std::thread::sleep(Duration::from_millis(1000));
    let records = b.records();
    let ran: Vec<i64> = records
        .iter()
        .filter(|r| r.agent == "reporter" && r.kind == corral_audit::Kind::Call)
        .map(|r| r.seq)
        .collect();
    assert!(!ran.is_empty(), "no call of the deaf client ran");
    for seq in &ran {
        assert!(
            records
                .iter()
                .any(|r| r.kind == corral_audit::Kind::Outcome && r.parent == Some(*seq)),
            "call record {seq} has no outcome record while the broker waits on its answer"
        );
    }
    b.stop();
    let sent = sender.join().unwrap();
    assert!(
        sent < 30,
        "the broker kept reading a peer that takes no answers"
    );
}
