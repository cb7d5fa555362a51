//! Authorization with 10,000 policies: the indexed engine against Cedar's
//! plain `is_authorized` over the same set, in the same run; and the cost
//! of building a request (typed tool input → schema-checked request).
//!
//! Also the broker's path for a tool call, `decide_tool_call` (context-free
//! policies decided once per agent and tool), against request + authorize
//! on the same calls. Every policy here reads the context, so this is that
//! path's worst case: nothing can be decided ahead.
//!
//! Run: `cargo bench -p corral-policy --bench authorize`
//!
//! The policy set is Corral-shaped: 1,000 agents in 20 teams, each with
//! grants on some of 10 tools (`==` on principal and action, conditions on
//! `context.input`), team-wide permits (`in`), and forbids. Prints p50/p99
//! over individually timed decisions and the speed-up ratio.
#![allow(missing_docs, reason = "criterion_group! generates a public function")]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use cedar_policy::Request;
use corral_policy::{CombinedSchema, Common, PolicyEngine, ToolAction};
use criterion::{Criterion, criterion_group};
use serde_json::{Value, json};

const AGENTS: usize = 1_000;
const TEAMS: usize = 20;
const TOOLS: usize = 10;
const BASE_SCHEMA: &str = include_str!("../../../policies/schema.cedarschema");

fn tool_schema() -> Value {
    json!({"type": "object", "properties": {"path": {"type": "string"}, "count": {"type": "integer"}}, "required": ["path"]})
}

fn engine() -> PolicyEngine {
    let tools: Vec<ToolAction> = (0..TOOLS)
        .map(|t| ToolAction::new(&format!("tool{t}"), &tool_schema()).expect("tool"))
        .collect();
    let schema =
        CombinedSchema::from_text(&PathBuf::from("schema.cedarschema"), BASE_SCHEMA, &tools)
            .expect("schema");
    let mut text = String::new();
    let mut n = 0;
    // 9 grants per agent: 9,000 policies.
    for a in 0..AGENTS {
        for k in 0..9 {
            let t = (a + k) % TOOLS;
            text.push_str(&format!(
                "@id(\"grant-{n}\")\npermit(principal == Agent::\"agent{a}\", action == Action::\"tool{t}\", resource) when {{ context.input.path like \"notes/*\" && context.common.calls_in_session < {} }};\n",
                100 + k
            ));
            n += 1;
        }
    }
    // 900 team-wide permits and 100 forbids: 10,000 in all.
    for i in 0..900 {
        text.push_str(&format!(
            "@id(\"team-{i}\")\npermit(principal in Team::\"team{}\", action == Action::\"tool{}\", resource) when {{ context.input has count && context.input.count < {i} }};\n",
            i % TEAMS,
            i % TOOLS
        ));
    }
    for i in 0..100 {
        text.push_str(&format!(
            "@id(\"forbid-{i}\")\nforbid(principal == Agent::\"agent{}\", action in Action::\"call_tool\", resource) when {{ context.input.path like \"secret/*\" }};\n",
            i * 7
        ));
    }
    let mut entities = Vec::new();
    for t in 0..TEAMS {
        entities.push(
            json!({"uid": {"type": "Team", "id": format!("team{t}")}, "attrs": {}, "parents": []}),
        );
    }
    for a in 0..AGENTS {
        entities.push(json!({
            "uid": {"type": "Agent", "id": format!("agent{a}")},
            "attrs": {"workspace": {"__entity": {"type": "Workspace", "id": format!("agent{a}")}}},
            "parents": [{"type": "Team", "id": format!("team{}", a % TEAMS)}],
        }));
        entities.push(json!({"uid": {"type": "Workspace", "id": format!("agent{a}")}, "attrs": {}, "parents": []}));
    }
    for t in 0..TOOLS {
        entities.push(
            json!({"uid": {"type": "Tool", "id": format!("tool{t}")}, "attrs": {}, "parents": []}),
        );
    }
    let engine = PolicyEngine::from_parts(
        schema,
        &[(PathBuf::from("bench.cedar"), text)],
        tools,
        json!(entities),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(engine.policy_count(), 10_000);
    engine
}

fn requests(engine: &PolicyEngine) -> Vec<Request> {
    let common = Common::now("s1", 3);
    (0..256)
        .map(|i| {
            let agent = format!("agent{}", (i * 37) % AGENTS);
            let tool = format!("tool{}", i % TOOLS);
            let path = if i % 5 == 0 {
                "secret/x"
            } else {
                "notes/today.md"
            };
            engine
                .tool_request(&agent, &tool, &json!({"path": path, "count": i}), &common)
                .expect("request")
        })
        .collect()
}

fn percentiles(label: &str, mut f: impl FnMut(usize) -> bool, n: usize) -> Duration {
    let mut samples: Vec<Duration> = (0..n)
        .map(|i| {
            let t = Instant::now();
            std::hint::black_box(f(i));
            t.elapsed()
        })
        .collect();
    samples.sort_unstable();
    let p = |q: f64| samples[((n as f64 * q) as usize).min(n - 1)];
    println!(
        "{label:<34} p50 {:>10.2} µs   p99 {:>10.2} µs   ({n} decisions)",
        p(0.5).as_secs_f64() * 1e6,
        p(0.99).as_secs_f64() * 1e6
    );
    p(0.5)
}

fn report() {
    let engine = engine();
    let reqs = requests(&engine);
    // Same answers first: a fast wrong authorizer is worth nothing.
    for r in &reqs {
        let a = engine.authorize_raw(r).expect("indexed");
        let b = cedar_alone(&engine, r);
        assert_eq!(a.decision(), b.decision());
    }
    let allowed = reqs.iter().filter(|r| engine.authorize(r).allowed).count();
    println!(
        "authorize: 10,000 policies; {allowed}/{} sample requests allowed",
        reqs.len()
    );
    let plain = percentiles(
        "authorize/plain-cedar",
        |i| cedar_alone(&engine, &reqs[i % reqs.len()]).decision() == cedar_policy::Decision::Allow,
        300,
    );
    let indexed = percentiles(
        "authorize/indexed (fail-closed)",
        |i| engine.authorize(&reqs[i % reqs.len()]).allowed,
        50_000,
    );
    println!(
        "authorize: plain p50 / indexed p50 = {:.0}x",
        plain.as_secs_f64() / indexed.as_secs_f64()
    );
    let common = Common::now("s1", 3);
    let calls: Vec<(String, String, Value)> = (0..256)
        .map(|i| {
            let path = if i % 5 == 0 { "secret/x" } else { "notes/a.md" };
            (
                format!("agent{}", (i * 37) % AGENTS),
                format!("tool{}", i % TOOLS),
                json!({"path": path, "count": i}),
            )
        })
        .collect();
    for (agent, tool, input) in &calls {
        let full = engine
            .tool_request(agent, tool, input, &common)
            .map(|r| engine.authorize(&r));
        assert_eq!(engine.decide_tool_call(agent, tool, input, &common), full);
    }
    let full = percentiles(
        "tool call/request + authorize",
        |i| {
            let (agent, tool, input) = &calls[i % calls.len()];
            engine
                .tool_request(agent, tool, input, &common)
                .is_ok_and(|r| engine.authorize(&r).allowed)
        },
        50_000,
    );
    let scoped = percentiles(
        "tool call/decide_tool_call",
        |i| {
            let (agent, tool, input) = &calls[i % calls.len()];
            engine
                .decide_tool_call(agent, tool, input, &common)
                .is_ok_and(|d| d.allowed)
        },
        50_000,
    );
    println!(
        "tool call: request + authorize p50 / decide_tool_call p50 = {:.2}x (every policy reads the context)",
        full.as_secs_f64() / scoped.as_secs_f64()
    );
    let input = json!({"path": "notes/today.md", "count": 3});
    percentiles(
        "request/build (typed tool input)",
        |i| {
            engine
                .tool_request(&format!("agent{}", i % AGENTS), "tool3", &input, &common)
                .is_ok()
        },
        50_000,
    );
}

fn bench(c: &mut Criterion) {
    let engine = engine();
    let reqs = requests(&engine);
    let mut g = c.benchmark_group("authorize_10k");
    g.bench_function("indexed", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            engine.authorize(&reqs[i % reqs.len()])
        })
    });
    g.sample_size(10);
    g.bench_function("plain-cedar", |b| {
        let mut i = 0;
        b.iter(|| {
            i += 1;
            cedar_alone(&engine, &reqs[i % reqs.len()])
        })
    });
    g.finish();
    let common = Common::now("s1", 3);
    let input = json!({"path": "notes/today.md", "count": 3});
    c.bench_function("request_build", |b| {
        b.iter(|| engine.tool_request("agent42", "tool3", &input, &common))
    });
}

criterion_group!(benches, bench);

fn main() {
    if !std::env::args().any(|a| a == "--profile-time") {
        report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}

/// Cedar's plain answer over the whole set, without Corral's index or its
/// fail-closed rules: what Corral's decisions are compared with.
fn cedar_alone(
    engine: &corral_policy::PolicyEngine,
    request: &cedar_policy::Request,
) -> cedar_policy::Response {
    cedar_policy::Authorizer::new().is_authorized(
        request,
        &engine.policies().set,
        engine.entities(),
    )
}
