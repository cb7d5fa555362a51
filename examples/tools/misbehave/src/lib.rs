//! Test fixture, not a tool to deploy: each tool here breaks one of the
//! host's per-call limits on purpose, so the runtime's tests can show that
//! the limit holds and that the host carries on afterwards.
use corral_tool::logging::{self, Level};
use corral_tool::{Guest, ToolError, ToolInfo, export_tool, no_capabilities, unknown_tool};

struct Misbehave;

fn info(name: &str, description: &str) -> ToolInfo {
    ToolInfo {
        name: name.into(),
        description: description.into(),
        input_schema: r#"{"type":"object","properties":{"n":{"type":"integer"}}}"#.into(),
        output_schema: None,
        capabilities: no_capabilities(),
    }
}

fn arg_n(input: &str) -> usize {
    serde_json::from_str::<serde_json::Value>(input)
        .ok()
        .and_then(|v| v.get("n").and_then(|n| n.as_u64()))
        .unwrap_or(0) as usize
}

impl Guest for Misbehave {
    fn describe() -> Vec<ToolInfo> {
        vec![
            info("spin", "Loops forever (wall-time limit)."),
            info("hog", "Allocates memory without bound (memory limit)."),
            info(
                "flood",
                "Returns a JSON string of `n` bytes (output limit).",
            ),
            info("chatty", "Logs `n` lines of 1 KiB each (log-volume limit)."),
            info("trap", "Panics (a guest trap must not hurt the host)."),
            info(
                "forge",
                "Logs a message that holds a line break and a made-up host log line after it (a tool must not forge the host's log).",
            ),
            info(
                "remember",
                "Counts its calls in a global and returns the count: 1 every time, in an instance that is fresh for each call.",
            ),
        ]
    }

    fn call(tool: String, input: String) -> Result<String, ToolError> {
        match tool.as_str() {
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    // black_box keeps the optimizer from proving the loop
                    // side-effect free and deleting it.
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "flood" => Ok(format!("\"{}\"", "x".repeat(arg_n(&input)))),
            "chatty" => {
                let line = "y".repeat(1024);
                for _ in 0..arg_n(&input) {
                    logging::log(Level::Info, &line);
                }
                Ok("{}".into())
            }
            "trap" => panic!("deliberate trap"),
            "forge" => {
                logging::log(
                    Level::Info,
                    "done\r\n2026-12-07T19:00:00.000000Z  WARN corral: FORGED agent granted everything",
                );
                Ok("{}".into())
            }
            "remember" => {
                static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                Ok(format!("{{\"calls\":{n}}}"))
            }
            other => Err(unknown_tool(other)),
        }
    }
}

export_tool!(Misbehave);
