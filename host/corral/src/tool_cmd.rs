//! `corral tool`: inspect, call, scaffold, build, publish and fetch tool
//! components.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use corral_tools::{
    AllowList, CallContext, CallFailure, Caller, Limits, StaticSecrets, ToolRuntime,
};

use crate::exit;
use crate::shown;
use crate::tool_build::{Build, build};
use crate::tool_new::{Lang, NewTool, scaffold};
use crate::tool_oci::{
    RegistryArgs, TrustArgs, default_store, fetch_for_inspect, keygen, pull, push, sign,
};
use corral_distribution::ToolReference;

#[derive(Subcommand)]
// Parsed once per process: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub(crate) enum ToolCmd {
    /// Write a new tool project: manifest, source, README and a first test.
    New {
        /// The project's name, which (with `-` as `_`) is also its tool's.
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: Lang,
        /// Where to write it; default `./NAME`. Must not exist, or be empty.
        dir: Option<PathBuf>,
        /// Rust only: depend on the SDK in this directory (`wit/rust` of a
        /// Corral checkout) instead of the git repository.
        #[arg(long, value_name = "DIR")]
        sdk_path: Option<PathBuf>,
    },
    /// Build the tool project in DIR into a component and check it as
    /// loading would.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Where to write the component; default `DIR/NAME.wasm`.
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// The componentize-py program, for Python projects.
        #[arg(
            long,
            env = "CORRAL_COMPONENTIZE_PY",
            default_value = "componentize-py"
        )]
        componentize_py: PathBuf,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Show a component's publisher, digest, signature status, imports,
    /// tools, schemas and declared capabilities.
    Inspect {
        /// The component: a .wasm file, or a registry reference.
        target: String,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Push a component to a registry in the Wasm OCI layout.
    Push {
        /// The component (.wasm); it must pass the load check.
        file: PathBuf,
        /// REGISTRY/REPOSITORY:TAG.
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Pull a component into the tool store, checking its layout, digests,
    /// signature and world.
    Pull {
        /// REGISTRY/REPOSITORY:TAG[@sha256:DIGEST].
        reference: String,
        /// The tool store [default: .corral/tools, where `corral up` looks
        /// with the default state_dir].
        #[arg(long)]
        store: Option<PathBuf>,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        trust: TrustArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Sign what a reference names, in cosign's key-based format. The key's
    /// password comes from COSIGN_PASSWORD.
    Sign {
        /// A private key from `corral tool keygen` or `cosign generate-key-pair`.
        #[arg(long)]
        key: PathBuf,
        /// REGISTRY/REPOSITORY:TAG[@sha256:DIGEST], or a component file
        /// (its signature is written beside it, as FILE.sig).
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
    /// Write a cosign-compatible key pair, PREFIX.key (encrypted with
    /// COSIGN_PASSWORD) and PREFIX.pub.
    Keygen {
        /// The files' path without extension.
        #[arg(long, default_value = "cosign")]
        out: PathBuf,
    },
    /// Run one tool call with exactly the grants given here, and print its JSON output.
    ///
    /// Exit codes: 0 success, 1 failure, 3 denied, 4 invalid input, 5 a limit was exceeded.
    Call {
        /// The component (.wasm).
        file: PathBuf,
        /// The tool to call (see `corral tool inspect`).
        tool: String,
        /// The input, a JSON object.
        input: String,
        /// Grant read and write access to this directory as the workspace.
        #[arg(long)]
        workspace: Option<PathBuf>,
        /// Grant HTTP to HOST or HOST:PORT (repeatable).
        #[arg(long = "allow-host", value_name = "HOST")]
        allow_hosts: Vec<String>,
        /// Let the --allow-host hosts reach this internal address range,
        /// e.g. 127.0.0.0/8 for a server on this machine (repeatable).
        /// Without it, a host that resolves to a loopback, private,
        /// link-local or metadata address is refused.
        #[arg(long = "allow-internal", value_name = "CIDR")]
        allow_internal: Vec<String>,
        /// Make secret NAME available from environment variable ENVVAR, for the
        /// allowed hosts, or only for HOST with `NAME=ENVVAR@HOST` (repeatable).
        #[arg(long = "secret", value_name = "NAME=ENVVAR[@HOST]")]
        secrets: Vec<String>,
        /// The agent name recorded for the call.
        #[arg(long, default_value = "cli")]
        agent: String,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        runtime: RuntimeArgs,
    },
}

#[derive(Args)]
pub(crate) struct RuntimeArgs {
    /// Do not use the on-disk artifact cache.
    #[arg(long)]
    no_cache: bool,
}

#[derive(Args)]
pub(crate) struct LimitArgs {
    /// Wall-time limit in milliseconds.
    #[arg(long, value_name = "MS")]
    timeout_ms: Option<u64>,
    /// Linear-memory limit in MiB.
    #[arg(long, value_name = "MIB")]
    memory_mib: Option<u64>,
    /// Output limit in bytes.
    #[arg(long, value_name = "BYTES")]
    max_output: Option<u64>,
}

/// A runtime with the default limits and no internal network opened:
/// what every command but `call` runs components in.
fn default_runtime(args: &RuntimeArgs) -> Result<ToolRuntime> {
    runtime(
        args,
        Limits::default(),
        corral_tools::InternalNetworks::default(),
    )
}

fn runtime(
    args: &RuntimeArgs,
    limits: Limits,
    internal: corral_tools::InternalNetworks,
) -> Result<ToolRuntime> {
    if args.no_cache {
        return Ok(ToolRuntime::builder()
            .default_limits(limits)
            .internal_networks(internal)
            .build()?);
    }
    Ok(corral_host::runtime_with_cache(limits, internal)?)
}

fn load(rt: &ToolRuntime, file: &PathBuf) -> Result<corral_tools::LoadedComponent> {
    let bytes = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    rt.load(&bytes)
        .with_context(|| format!("cannot load {}", file.display()))
}

pub(crate) fn run(command: ToolCmd) -> Result<u8> {
    match command {
        ToolCmd::New {
            name,
            lang,
            dir,
            sdk_path,
        } => {
            let dir = scaffold(&NewTool {
                name: &name,
                lang,
                dir,
                sdk_path,
            })?;
            println!(
                "wrote {} ({lang:?} tool `{}`)",
                dir.display(),
                name.replace('-', "_")
            );
            println!(
                "next: cd {} && corral tool build && ./test.sh",
                dir.display()
            );
            Ok(0)
        }
        ToolCmd::Build {
            dir,
            out,
            componentize_py,
            runtime: rargs,
        } => {
            let rt = default_runtime(&rargs)?;
            let built = build(
                &rt,
                &Build {
                    dir: &dir,
                    out,
                    componentize_py: &componentize_py,
                },
            )?;
            print_inspect(&built.path, &built.component)?;
            println!();
            println!("pin it in corral.toml:");
            println!("  [[tools]]");
            println!("  path = {:?}", built.path.display().to_string());
            println!("  sha256 = \"{}\"", built.component.sha256());
            Ok(0)
        }
        ToolCmd::Inspect {
            target,
            json,
            registry,
            trust,
            runtime: rargs,
        } => {
            let rt = default_runtime(&rargs)?;
            let file = PathBuf::from(&target);
            let (origin, publisher, component) =
                if file.exists() || ToolReference::parse(&target).is_err() {
                    let component = load(&rt, &file)?;
                    let status = local_signature_status(&file, &component, &trust)?;
                    (file.display().to_string(), status, component)
                } else {
                    let facts = fetch_for_inspect(&rt, &target, &registry, &trust)?;
                    let component = rt.load(&facts.wasm)?;
                    (facts.reference, facts.publisher, component)
                };
            if json {
                let doc = serde_json::json!({
                    "component": origin,
                    "sha256": component.sha256(),
                    "publisher": publisher,
                    "imports": component.imports(),
                    "tools": component.tools(),
                });
                println!("{}", serde_json::to_string_pretty(&doc)?);
            } else {
                print_inspect(std::path::Path::new(&origin), &component)?;
                println!();
                println!("publisher: {publisher}");
                println!("imports:");
                for i in component.imports() {
                    println!("  {i}");
                }
            }
            Ok(0)
        }
        ToolCmd::Push {
            file,
            reference,
            registry,
            runtime: rargs,
        } => {
            let rt = default_runtime(&rargs)?;
            push(&rt, &file, &reference, &registry)
        }
        ToolCmd::Pull {
            reference,
            store,
            registry,
            trust,
            runtime: rargs,
        } => {
            let rt = default_runtime(&rargs)?;
            pull(
                &rt,
                &reference,
                &store.unwrap_or_else(default_store),
                &registry,
                &trust,
            )
        }
        ToolCmd::Sign {
            key,
            reference,
            registry,
            runtime: rargs,
        } => {
            let rt = default_runtime(&rargs)?;
            sign(&rt, &key, &reference, &registry)
        }
        ToolCmd::Keygen { out } => keygen(&out),
        ToolCmd::Call {
            file,
            tool,
            input,
            workspace,
            allow_hosts,
            allow_internal,
            secrets,
            agent,
            limits,
            runtime: rargs,
        } => {
            let ranges = allow_internal
                .iter()
                .map(|r| r.parse::<corral_tools::Cidr>())
                .collect::<Result<Vec<_>, _>>()
                .context("--allow-internal")?;
            let internal = corral_tools::InternalNetworks::default().allow(
                allow_hosts.iter().map(|h| match h.rsplit_once(':') {
                    Some((name, port)) if port.parse::<u16>().is_ok() => {
                        name.trim_matches(['[', ']']).to_string()
                    }
                    _ => h.trim_matches(['[', ']']).to_string(),
                }),
                ranges,
            );
            let mut l = Limits::default();
            if let Some(ms) = limits.timeout_ms {
                l.wall_time = Duration::from_millis(ms);
            }
            if let Some(mib) = limits.memory_mib {
                l.memory_bytes = mib << 20;
            }
            if let Some(b) = limits.max_output {
                l.output_bytes = b;
            }
            let rt = runtime(&rargs, l, internal)?;
            let component = load(&rt, &file)?;

            let workspace = match workspace {
                Some(dir) => Some(
                    dir.canonicalize()
                        .with_context(|| format!("workspace {} does not exist", dir.display()))?,
                ),
                None => None,
            };
            let mut gate = AllowList::new()
                .workspace_read(workspace.is_some())
                .workspace_write(workspace.is_some());
            for host in &allow_hosts {
                gate = gate.allow_host(host);
            }
            let mut store = StaticSecrets::new();
            for spec in &secrets {
                let (name, env, host) = parse_secret_spec(spec)?;
                let value = std::env::var(&env).with_context(|| {
                    format!("--secret {spec}: environment variable {env} is not set")
                })?;
                store = store.with(name.clone(), value);
                gate = gate.allow_secret(&name, host.as_deref());
            }
            let ctx = CallContext {
                caller: Caller {
                    agent,
                    tool: tool.clone(),
                },
                workspace,
                gate: Arc::new(gate),
                secrets: Arc::new(store),
                limits: None,
            };
            match rt.call(&component, &tool, &input, &ctx) {
                Ok(out) => {
                    for line in &out.logs {
                        eprintln!("[tool {}] {}", line.level, shown::inline(&line.message));
                    }
                    println!("{}", shown::block(&out.output));
                    Ok(0)
                }
                Err(report) => {
                    for line in &report.logs {
                        eprintln!("[tool {}] {}", line.level, shown::inline(&line.message));
                    }
                    eprintln!("error: {}", shown::block(&report.error.to_string()));
                    if matches!(report.error.failure, CallFailure::Denied(_)) {
                        eprintln!(
                            "hint: `corral tool call` grants only its flags: --workspace, --allow-host, --secret"
                        );
                    }
                    Ok(match report.error.failure {
                        CallFailure::Denied(_) => exit::DENIED,
                        CallFailure::InvalidInput(_) | CallFailure::UnknownTool => {
                            exit::INVALID_INPUT
                        }
                        CallFailure::LimitExceeded(_) => exit::LIMIT,
                        _ => exit::FAILED,
                    })
                }
            }
        }
    }
}

/// What `inspect` says of a local file's signatures (`FILE.sig`).
fn local_signature_status(
    file: &std::path::Path,
    component: &corral_tools::LoadedComponent,
    trust: &TrustArgs,
) -> Result<String> {
    let entries = corral_distribution::file_signatures(file)?;
    let digest = format!("sha256:{}", component.sha256());
    if entries.is_empty() {
        return Ok("unsigned (a local file, pinned by its sha256)".into());
    }
    Ok(
        match trust.publishers()?.signer(
            &file.display().to_string(),
            corral_distribution::FILE_IDENTITY,
            &digest,
            &entries,
        ) {
            Ok(name) => format!("signed by {name}"),
            Err(e) => format!("{} signature(s), not trusted here: {e}", entries.len()),
        },
    )
}

/// `NAME=ENVVAR` or `NAME=ENVVAR@HOST`.
fn parse_secret_spec(spec: &str) -> Result<(String, String, Option<String>)> {
    let Some((name, rest)) = spec.split_once('=') else {
        bail!("--secret {spec}: expected NAME=ENVVAR or NAME=ENVVAR@HOST");
    };
    let (env, host) = match rest.split_once('@') {
        Some((e, h)) => (e, Some(h.to_string())),
        None => (rest, None),
    };
    if name.is_empty() || env.is_empty() || host.as_deref() == Some("") {
        bail!("--secret {spec}: expected NAME=ENVVAR or NAME=ENVVAR@HOST");
    }
    Ok((name.to_string(), env.to_string(), host))
}

fn print_inspect(file: &std::path::Path, c: &corral_tools::LoadedComponent) -> Result<()> {
    println!("component {}", file.display());
    println!("  sha256  {}", c.sha256());
    for t in c.tools() {
        println!();
        println!("tool {}", shown::inline(&t.name));
        println!("  {}", shown::inline(&t.description));
        let caps = &t.capabilities;
        let mut declared = Vec::new();
        if caps.workspace_read {
            declared.push("workspace read".to_string());
        }
        if caps.workspace_write {
            declared.push("workspace write".to_string());
        }
        if !caps.http_hosts.is_empty() {
            declared.push(format!("http: {}", caps.http_hosts.join(", ")));
        }
        if !caps.secrets.is_empty() {
            declared.push(format!("secrets: {}", caps.secrets.join(", ")));
        }
        println!(
            "  capabilities: {}",
            if declared.is_empty() {
                "none".to_string()
            } else {
                declared.join("; ")
            }
        );
        println!(
            "  input schema: {}",
            serde_json::to_string(&t.input_schema)?
        );
        if let Some(o) = &t.output_schema {
            println!("  output schema: {}", serde_json::to_string(o)?);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_secret_spec;

    #[test]
    fn secret_specs() {
        assert_eq!(
            parse_secret_spec("TOKEN=MY_ENV").unwrap(),
            ("TOKEN".into(), "MY_ENV".into(), None)
        );
        assert_eq!(
            parse_secret_spec("TOKEN=MY_ENV@api.test").unwrap(),
            ("TOKEN".into(), "MY_ENV".into(), Some("api.test".into()))
        );
        for bad in ["TOKEN", "=X", "T=", "T=X@"] {
            assert!(parse_secret_spec(bad).is_err(), "{bad}");
        }
    }
}
