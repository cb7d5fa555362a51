//! Builds that cargo alone cannot do. Run as `cargo xtask <command>`.
//!
//! - `setup`: installs what the project needs on a fresh machine (rustup
//!   targets, Debian packages). Idempotent; every other command runs it.
//! - `build-tools`: builds the example tool components for wasm32-wasip2
//!   into `target/tools/`.
//! - `up`: the main job: builds the tools, the agent image's binary and the
//!   CLI, then runs `corral up` with `examples/quickstart/corral.toml`
//!   (which builds the agent image); `corral chat assistant` talks to it.
//! - `demo`: a scripted tour: tools with explicit grants, the broker, an
//!   agent container and the audit log.
//! - `ci`: the whole test suite, exactly what `.ci/run` runs.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "xtask", about = "Corral's build and test automation")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install rustup targets and Debian packages the project needs.
    Setup,
    /// Build the example tools (wasm32-wasip2) into target/tools/.
    BuildTools,
    /// Build the static in-container agent binary (x86_64-unknown-linux-musl).
    BuildAgent,
    /// Build everything and run `corral up` with the quickstart
    /// configuration (the main job).
    Up {
        /// Another configuration instead of examples/quickstart/corral.toml.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Build everything and run a scripted tour of tools, broker, container
    /// and audit log.
    Demo,
    /// Run the whole test suite: setup, tool build, fmt, clippy, tests.
    Ci,
}

/// Targets the project builds for: guests, and the static in-container
/// agent binary.
const RUST_TARGETS: &[&str] = &["wasm32-wasip2", "x86_64-unknown-linux-musl"];
/// Debian packages: sqlite3 for audit-log tamper tests, musl-tools for the
/// static agent binary, e2fsprogs and mount (`mkfs.ext4`, `mount`,
/// `losetup`) for each agent's own disk, docker-registry (the CNCF
/// distribution registry) and apache2-utils (`htpasswd`) for the tests of
/// tool distribution against a real registry, cvc5, the SMT solver
/// `corral policy prove` and `policy diff` run Cedar's symbolic compiler on,
/// and chromium, the headless browser the audit dashboard is tested in.
const DEBIAN_PACKAGES: &[&str] = &[
    "sqlite3",
    "musl-tools",
    "e2fsprogs",
    "mount",
    "docker-registry",
    "apache2-utils",
    "cvc5",
    "chromium",
];
/// The guest crates whose components land in target/tools/.
const TOOL_CRATES: &[&str] = &[
    "echo",
    "files",
    "http-get",
    "misbehave",
    "not-a-tool",
    "sneaky",
];
/// The Python tools (`examples/tools/python/NAME/app.py`), built with
/// componentize-py into target/tools/NAME.wasm. A tool with a `probe.wit`
/// of its own is built for that world, beside `wit/`.
const PYTHON_TOOLS: &[&str] = &["py-echo", "py-probe", "csv-query"];

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Setup => setup(),
        Cmd::BuildTools => setup().and_then(|()| build_tools()),
        Cmd::BuildAgent => setup().and_then(|()| build_agent().map(|_| ())),
        Cmd::Up { config } => up(config),
        Cmd::Demo => demo(),
        Cmd::Ci => ci(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
}

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if !status.success() {
        bail!("`{}` failed with {status}", show(cmd));
    }
    Ok(())
}

fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn setup() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    let missing: Vec<&str> = RUST_TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if !missing.is_empty() {
        run(Command::new("rustup")
            .args(["target", "add"])
            .args(&missing))?;
    }
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if !missing.is_empty() {
        let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
        let apt = |args: &[&str]| {
            let mut c = Command::new(sudo.first().copied().unwrap_or("apt-get"));
            if !sudo.is_empty() {
                c.arg("apt-get");
            }
            c.args(args).env("DEBIAN_FRONTEND", "noninteractive");
            c
        };
        run(&mut apt(&["update", "-qq"]))?;
        run(apt(&["install", "-y", "-qq", "--no-install-recommends"]).args(&missing))?;
    }
    python_sdk()
}

/// PyPI packages, pinned, in a venv under `target/py`: the official MCP
/// Python SDK, which the interop test drives the broker with as a real
/// third-party client, and componentize-py, which builds Python tools.
const PYTHON_PACKAGES: &[(&str, &str)] = &[("mcp", "2.3.0"), ("componentize-py", "0.25.1")];

fn python_venv() -> PathBuf {
    target_dir().join("py")
}

fn python_sdk() -> Result<()> {
    let venv = python_venv();
    let python = venv.join("bin").join("python");
    let missing: Vec<String> = PYTHON_PACKAGES
        .iter()
        .filter(|(name, version)| {
            let have = Command::new(&python)
                .args([
                    "-c",
                    &format!("import importlib.metadata as m; print(m.version('{name}'))"),
                ])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default();
            have != *version
        })
        .map(|(name, version)| format!("{name}=={version}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&missing))
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u"))
        .map(|s| s.trim() == "0")
        .unwrap_or(false)
}

fn build_tools() -> Result<()> {
    let guest_target = target_dir().join("guest");
    let examples = root().join("examples").join("tools");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&examples)
        .args([
            "build",
            "--release",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(&guest_target);
    run(&mut cmd)?;
    let out_dir = target_dir().join("tools");
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    for name in TOOL_CRATES {
        let file = format!("{}.wasm", name.replace('-', "_"));
        let built = guest_target.join("wasm32-wasip2/release").join(&file);
        // Binaries keep their dashes; libraries get underscores.
        let built = if built.exists() {
            built
        } else {
            guest_target
                .join("wasm32-wasip2/release")
                .join(format!("{name}.wasm"))
        };
        let dest = out_dir.join(format!("{name}.wasm"));
        std::fs::copy(&built, &dest)
            .with_context(|| format!("copying {} to {}", built.display(), dest.display()))?;
    }
    build_python_tools(&out_dir)?;
    eprintln!("xtask: tool components are in {}", out_dir.display());
    Ok(())
}

/// Builds each Python tool unless its component is newer than its source
/// and the WIT it was built against (componentize-py takes seconds a tool).
fn build_python_tools(out_dir: &Path) -> Result<()> {
    let componentize = python_venv().join("bin").join("componentize-py");
    let wit = root().join("wit");
    let wit_changed = newest_mtime(&wit)?;
    for name in PYTHON_TOOLS {
        let dir = root().join("examples/tools/python").join(name);
        let dest = out_dir.join(format!("{name}.wasm"));
        let built = std::fs::metadata(&dest).and_then(|m| m.modified()).ok();
        let source = newest_mtime(&dir)?.max(wit_changed);
        if built.is_some_and(|b| b > source) {
            continue;
        }
        let (wit_dir, world) = match own_world(&dir, &wit)? {
            Some(w) => w,
            None => (wit.clone(), "corral:tool/tool-component".to_string()),
        };
        run(Command::new(&componentize)
            .current_dir(&dir)
            .arg("-d")
            .arg(&wit_dir)
            .args(["-w", &world, "componentize", "-p", ".", "app", "-o"])
            .arg(&dest))?;
    }
    Ok(())
}

/// A tool's own world (`DIR/probe.wit`), put in a WIT directory of its
/// own under target/ with `wit/tool.wit` and `wit/deps` as its deps.
fn own_world(dir: &Path, wit: &Path) -> Result<Option<(PathBuf, String)>> {
    let file = dir.join("probe.wit");
    if !file.exists() {
        return Ok(None);
    }
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = target_dir().join("wit").join(name);
    let _ = std::fs::remove_dir_all(&out);
    let deps = out.join("deps");
    std::fs::create_dir_all(deps.join("corral-tool"))?;
    std::fs::copy(&file, out.join("probe.wit"))?;
    std::fs::copy(wit.join("tool.wit"), deps.join("corral-tool/tool.wit"))?;
    for entry in std::fs::read_dir(wit.join("deps"))? {
        let entry = entry?;
        let dest = deps.join(entry.file_name());
        std::fs::create_dir_all(&dest)?;
        for f in std::fs::read_dir(entry.path())? {
            let f = f?;
            std::fs::copy(f.path(), dest.join(f.file_name()))?;
        }
    }
    Ok(Some((out, "corral-test:probe/probe".to_string())))
}

/// The newest modification time of any file under `dir`, but for the
/// bytecode caches a build itself writes.
fn newest_mtime(dir: &Path) -> Result<std::time::SystemTime> {
    let mut newest = std::time::SystemTime::UNIX_EPOCH;
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_name() == "__pycache__" {
            continue;
        }
        let meta = entry.metadata()?;
        let time = if meta.is_dir() {
            newest_mtime(&entry.path())?
        } else {
            meta.modified()?
        };
        newest = newest.max(time);
    }
    Ok(newest)
}

const MUSL: &str = "x86_64-unknown-linux-musl";

/// Builds `corral-agent` for musl and checks that it is static: a `FROM
/// scratch` image has no dynamic loader to run anything else.
fn build_agent() -> Result<PathBuf> {
    run(Command::new("cargo").current_dir(root()).args([
        "build",
        "--locked",
        "--release",
        "-p",
        "corral-agent",
        "--target",
        MUSL,
    ]))?;
    let binary = target_dir().join(MUSL).join("release").join("corral-agent");
    let bytes = std::fs::read(&binary).with_context(|| format!("reading {}", binary.display()))?;
    if elf_interpreter(&bytes).context("the agent binary is not a 64-bit ELF")? {
        bail!(
            "{} asks for a dynamic loader (PT_INTERP); it must be static",
            binary.display()
        );
    }
    println!(
        "xtask: static agent binary: {} ({} bytes)",
        binary.display(),
        bytes.len()
    );
    Ok(binary)
}

/// Whether a little-endian ELF64 file has a PT_INTERP program header.
fn elf_interpreter(elf: &[u8]) -> Option<bool> {
    if elf.get(..5)? != b"\x7fELF\x02" {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?));
    let phoff = u64::from_le_bytes(elf.get(0x20..0x28)?.try_into().ok()?) as usize;
    let (size, count) = (u16_at(0x36)? as usize, u16_at(0x38)? as usize);
    const PT_INTERP: u32 = 3;
    for i in 0..count {
        let at = phoff + i * size;
        let kind = u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?);
        if kind == PT_INTERP {
            return Some(true);
        }
    }
    Some(false)
}

fn cargo_build_cli() -> Result<PathBuf> {
    run(Command::new("cargo")
        .current_dir(root())
        .args(["build", "--locked", "-p", "corral"]))?;
    Ok(target_dir().join("debug").join("corral"))
}

fn up(config: Option<PathBuf>) -> Result<()> {
    setup()?;
    build_tools()?;
    build_agent()?;
    let corral = cargo_build_cli()?;
    let config = config.unwrap_or_else(|| root().join("examples/quickstart/corral.toml"));
    println!(
        "\n== corral up --config {}\n   In another terminal, talk to the assistant:\n     {} chat assistant --config {}\n   Ctrl-C stops it (containers are removed, the audit log is flushed).\n",
        config.display(),
        corral.display(),
        config.display()
    );
    run(Command::new(&corral)
        .args(["--log", "info", "up", "--config"])
        .arg(&config))
}

fn demo() -> Result<()> {
    setup()?;
    build_tools()?;
    let corral = cargo_build_cli()?;
    let tools = target_dir().join("tools");
    let workspace = target_dir().join("demo-workspace");
    std::fs::create_dir_all(&workspace)?;

    println!("\n== What does the files component offer?");
    run(Command::new(&corral)
        .args(["tool", "inspect"])
        .arg(tools.join("files.wasm")))?;

    println!("\n== echo: a call with no grants at all");
    run(Command::new(&corral)
        .args(["tool", "call"])
        .arg(tools.join("echo.wasm"))
        .args(["echo", r#"{"message":"hello from a fresh Wasm instance"}"#]))?;

    println!("\n== files: write and read back, granted this workspace only");
    run(Command::new(&corral)
        .args(["tool", "call"])
        .arg(tools.join("files.wasm"))
        .args([
            "files_write",
            r#"{"path":"notes/hello.txt","content":"written by a tool"}"#,
        ])
        .arg("--workspace")
        .arg(&workspace))?;
    run(Command::new(&corral)
        .args(["tool", "call"])
        .arg(tools.join("files.wasm"))
        .args(["files_read", r#"{"path":"notes/hello.txt"}"#])
        .arg("--workspace")
        .arg(&workspace))?;

    println!("\n== files: an attempt to leave the workspace is refused");
    expect_denied(
        Command::new(&corral)
            .args(["tool", "call"])
            .arg(tools.join("files.wasm"))
            .args(["files_read", r#"{"path":"../../Cargo.toml"}"#])
            .arg("--workspace")
            .arg(&workspace),
    )?;

    println!("\n== http_get: no host granted, so the request never leaves");
    expect_denied(
        Command::new(&corral)
            .args(["tool", "call"])
            .arg(tools.join("http-get.wasm"))
            .args(["http_get", r#"{"url":"https://example.com/"}"#]),
    )?;
    broker_demo(&corral, &tools)
}

/// The broker with the starter policies: two agents, allowed and denied
/// calls over their sockets, then the audit trail and its verification.
fn broker_demo(corral: &Path, tools: &Path) -> Result<()> {
    use std::io::BufRead;
    let dir = target_dir().join("demo-broker");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let audit = dir.join("audit.db");
    println!("\n== corral broker: one MCP socket per agent, policies from policies/");
    let mut cmd = Command::new(corral);
    cmd.arg("broker")
        .args([
            "--agent",
            "assistant=ws/assistant",
            "--agent",
            "reporter=ws/reporter",
        ])
        .arg("--policies")
        .arg(root().join("policies"))
        .args(["--socket-dir", "run", "--audit", "audit.db"])
        // The agent containers' user owns its socket directory.
        .args(["--socket-owner", "10001:10001"]);
    for t in ["echo", "files", "http-get"] {
        cmd.arg("--tool").arg(tools.join(format!("{t}.wasm")));
    }
    eprintln!("xtask: $ {}", show(&cmd));
    let mut child = cmd
        .current_dir(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("could not start `corral broker`")?;
    let stdout = child.stdout.take().context("broker stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    loop {
        match lines.next() {
            Some(Ok(line)) if line == "ready" => break,
            Some(Ok(line)) => println!("{line}"),
            _ => {
                let _ = child.kill();
                bail!("`corral broker` exited before it was ready");
            }
        }
    }
    let socket = |agent: &str| dir.join("run").join(agent).join("mcp.sock");
    let result = (|| -> Result<()> {
        println!("\n== reporter's tools (http_get is not listed: no policy permits it)");
        run(Command::new(corral)
            .args(["mcp", "tools", "--socket"])
            .arg(socket("reporter")))?;
        println!("\n== assistant: echo, and a note written inside its workspace");
        run(Command::new(corral)
            .args(["mcp", "call", "--socket"])
            .arg(socket("assistant"))
            .args(["echo", r#"{"message":"hello through the broker"}"#]))?;
        run(Command::new(corral)
            .args(["mcp", "call", "--socket"])
            .arg(socket("assistant"))
            .args([
                "files_write",
                r#"{"path":"notes/plan.md","content":"1. ship"}"#,
            ]))?;
        println!("\n== assistant: the call is permitted, the dotfile write inside it is not");
        expect_denied(
            Command::new(corral)
                .args(["mcp", "call", "--socket"])
                .arg(socket("assistant"))
                .args([
                    "files_write",
                    r#"{"path":"notes/.env","content":"TOKEN=1"}"#,
                ]),
        )?;
        println!("\n== reporter: http_get is refused before the tool runs");
        expect_denied(
            Command::new(corral)
                .args(["mcp", "call", "--socket"])
                .arg(socket("reporter"))
                .args(["http_get", r#"{"url":"https://api.github.com/"}"#]),
        )?;
        container_demo(corral, &dir)
    })();
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    result?;
    println!("\n== the audit trail: every decision, before anything ran");
    run(Command::new(corral)
        .args(["audit", "tail", "-n", "20", "--audit"])
        .arg(&audit))?;
    run(Command::new(corral)
        .args(["audit", "verify", "--audit"])
        .arg(&audit))?;
    Ok(())
}

/// The reporter agent in its own hardened container: the image, one tool
/// call through the broker from inside, and the container's self-test of
/// its confinement.
fn container_demo(corral: &Path, dir: &Path) -> Result<()> {
    println!("\n== the agent image: FROM scratch, one static binary, built through the Engine API");
    let binary = build_agent()?;
    let mut build = Command::new(corral);
    build
        .args(["image", "build", "--dir"])
        .arg(root().join("agent-image"))
        .arg("--binary")
        .arg(&binary);
    eprintln!("xtask: $ {}", show(&build));
    let out = build
        .output()
        .context("could not start `corral image build`")?;
    if !out.status.success() {
        bail!(
            "`corral image build` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tag = String::from_utf8_lossy(&out.stdout).trim().to_string();
    println!("{tag}");
    let agent_run = |args: &[&str]| {
        let mut c = Command::new(corral);
        c.args(["agents", "run", "reporter", "--workspace"])
            .arg(dir.join("ws/reporter"))
            .arg("--socket-dir")
            .arg(dir.join("run/reporter"))
            .args(["--image", &tag, "--"])
            .args(args);
        c
    };
    println!(
        "\n== reporter, inside its container (no network, read-only root, no capabilities): echo through the broker"
    );
    run(&mut agent_run(&[
        "call",
        "echo",
        r#"{"message":"from inside a container"}"#,
    ]))?;
    println!("\n== reporter's container tries to get out");
    run(&mut agent_run(&["selftest"]))
}

/// Runs a call that must be refused: exit code 3 is `corral`'s "denied".
fn expect_denied(cmd: &mut Command) -> Result<()> {
    eprintln!("xtask: $ {}", show(cmd));
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", show(cmd)))?;
    if status.code() != Some(3) {
        bail!("expected a denial (exit code 3), got {status}");
    }
    println!("(denied, exit code 3, as expected)");
    Ok(())
}

fn ci() -> Result<()> {
    setup()?;
    build_tools()?;
    let root = root();
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new("cargo")
        .current_dir(root.join("examples/tools"))
        .args(["fmt", "--all", "--", "--check"]))?;
    run(Command::new("cargo").current_dir(&root).args([
        "clippy",
        "--locked",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    // Guest code is held to the same bar as host code.
    run(Command::new("cargo")
        .current_dir(root.join("examples/tools"))
        .args([
            "clippy",
            "--locked",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--target-dir",
        ])
        .arg(target_dir().join("guest"))
        .args(["--", "-D", "warnings"]))?;
    // The agent image's binary must build static for musl; the sandbox
    // tests put it in a real image.
    build_agent()?;
    run(Command::new("cargo")
        .current_dir(&root)
        .args(["test", "--locked", "--workspace"]))?;
    // The policy author's view: the starter policies validate, are
    // formatted, and their tests pass, through the real CLI: the binary the
    // tests above ran, built in the same build graph (a `cargo build -p
    // corral` would resolve features for the CLI alone and compile Cedar
    // and its neighbours a second time).
    let corral = target_dir().join("debug").join("corral");
    if !corral.exists() {
        bail!(
            "{} is missing after `cargo test --workspace`, which builds it for the CLI's tests",
            corral.display()
        );
    }
    let tools: Vec<String> = ["echo", "files", "http-get", "csv-query"]
        .iter()
        .flat_map(|t| {
            let wasm = target_dir().join("tools").join(format!("{t}.wasm"));
            ["--tool".to_string(), wasm.display().to_string()]
        })
        .collect();
    run(Command::new(&corral)
        .current_dir(&root)
        .args(["policy", "validate"])
        .args(&tools))?;
    run(Command::new(&corral)
        .current_dir(&root)
        .args(["policy", "fmt", "--check"]))?;
    // The starter properties hold for every request the schema admits.
    run(Command::new(&corral)
        .current_dir(&root)
        .args(["policy", "prove"])
        .args(&tools))?;
    let mut test_files: Vec<PathBuf> = std::fs::read_dir(root.join("policies/tests"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    test_files.sort();
    run(Command::new(&corral)
        .current_dir(&root)
        .args(["policy", "test"])
        .args(&test_files)
        .args(&tools))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::elf_interpreter;

    #[test]
    fn a_dynamic_binary_has_an_interpreter() {
        // Every Debian system's ls is dynamically linked.
        let ls = std::fs::read("/bin/ls").expect("/bin/ls");
        assert_eq!(elf_interpreter(&ls), Some(true));
        assert_eq!(elf_interpreter(b"#!/bin/sh\n"), None);
    }
}
