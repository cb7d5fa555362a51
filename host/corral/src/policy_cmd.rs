//! `corral policy …`: validate, fmt, test, check, schema.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use corral_policy::{CombinedSchema, Common, PolicyEngine, PolicyIds};
use serde_json::Value;

use crate::exit;
use crate::policy_sources::{Sources, parse_uid};

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate every policy in the directory against the combined schema.
    Validate {
        #[command(flatten)]
        src: Sources,
    },
    /// Format the directory's .cedar files, and its properties/, with the
    /// Cedar formatter.
    Fmt {
        /// Report files that would change, and change nothing.
        #[arg(long)]
        check: bool,
        #[command(flatten)]
        src: Sources,
    },
    /// Run test files in the Cedar CLI's `run-tests` JSON format.
    Test {
        /// Test files (each a JSON array of cases).
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[command(flatten)]
        src: Sources,
    },
    /// Dry-run one request and say why it is allowed or denied.
    Check {
        /// The agent (principal `Agent::"A"`).
        #[arg(long)]
        agent: String,
        /// The action: a tool name, or a built-in action such as http_request.
        #[arg(long)]
        action: String,
        /// The resource as a Cedar uid (`Host::"api.github.com"`); defaults
        /// to `Tool::"ACTION"` for tool actions.
        #[arg(long)]
        resource: Option<String>,
        /// The context as JSON; `common` is filled in when missing.
        #[arg(long, default_value = "{}")]
        context: String,
        /// For a denial, show each policy's condition that decided it and
        /// the values it compared.
        #[arg(long)]
        explain: bool,
        #[command(flatten)]
        src: Sources,
    },
    /// Re-decide recorded requests under a candidate policy directory and
    /// list every decision that would flip.
    Replay {
        /// The candidate policy directory (its schema and entities are used
        /// when present, else the current ones).
        #[arg(long)]
        candidate: PathBuf,
        /// Only records younger than this: 90s, 15m, 1h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// One JSON object per flip; the summary goes to stderr.
        #[arg(long)]
        json: bool,
        /// Exit 1 when anything would flip (for CI).
        #[arg(long)]
        fail_on_flip: bool,
        #[command(flatten)]
        log: crate::audit_cmd::AuditPath,
        #[command(flatten)]
        src: Sources,
    },
    /// Prove the @never/@always properties for every request the schema
    /// admits (cvc5); a failure prints a counterexample as a test case.
    Prove {
        /// The properties directory [default: DIR/properties].
        #[arg(long)]
        properties: Option<PathBuf>,
        /// Prove as if the @shadow policies were enforced.
        #[arg(long)]
        with_shadow: bool,
        #[command(flatten)]
        src: Sources,
    },
    /// Compare two policy directories for every request the schema admits:
    /// equivalent, or the new one allows more, less, or both. Exits 1 when
    /// it allows more.
    Diff {
        /// The policy directory (or file) as it is.
        old: PathBuf,
        /// The policy directory (or file) as proposed; its schema is used
        /// unless --schema says otherwise.
        new: PathBuf,
        #[command(flatten)]
        src: Sources,
    },
    /// Suggest the permits that allow what an agent was seen doing
    /// (allowed, or let through in observe mode), checked by replay.
    Suggest {
        /// The agent.
        #[arg(long)]
        agent: String,
        /// Only records younger than this: 90s, 15m, 1h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Write the suggestion here instead of to stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Suggest only what the policies in this directory do not already
        /// allow.
        #[arg(long, value_name = "DIR")]
        merge: Option<PathBuf>,
        /// Suggest from the calls policy denied at the time too, not only
        /// from those that ran. A forbid still wins over what is suggested.
        #[arg(long)]
        include_denied: bool,
        #[command(flatten)]
        log: crate::audit_cmd::AuditPath,
        #[command(flatten)]
        src: Sources,
    },
    /// Print the combined schema: the base file plus every tool's action.
    Schema {
        #[command(flatten)]
        src: Sources,
    },
}

pub fn run(cmd: PolicyCmd) -> Result<u8> {
    match cmd {
        PolicyCmd::Validate { src } => {
            let engine = src.engine()?;
            println!(
                "{} policies in {} are valid (policy set {})",
                engine.policy_count(),
                src.dir.display(),
                engine.policy_set_hash()
            );
            Ok(0)
        }
        PolicyCmd::Schema { src } => {
            let schema = CombinedSchema::build(&src.schema_file(), &src.tool_actions()?)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!("{}", schema.text);
            Ok(0)
        }
        PolicyCmd::Fmt { check, src } => fmt(&src.dir, check),
        PolicyCmd::Prove {
            properties,
            with_shadow,
            src,
        } => crate::policy_assure::prove(&src, properties.as_deref(), with_shadow),
        PolicyCmd::Diff { old, new, src } => crate::policy_assure::diff(&old, &new, &src),
        PolicyCmd::Suggest {
            agent,
            since,
            out,
            merge,
            include_denied,
            log,
            src,
        } => crate::suggest::suggest(
            &src,
            &crate::suggest::SuggestRequest {
                agent: &agent,
                audit: &log.path,
                since_us: crate::audit_cmd::since_micros(since.as_deref())?,
                out: out.as_deref(),
                merge: merge.as_deref(),
                include_denied,
            },
        ),
        PolicyCmd::Replay {
            candidate,
            since,
            json,
            fail_on_flip,
            log,
            src,
        } => crate::replay::replay(
            &src.engine_sources()?,
            &candidate,
            &log.path,
            crate::audit_cmd::since_micros(since.as_deref())?,
            json,
            fail_on_flip,
        ),
        PolicyCmd::Check {
            agent,
            action,
            resource,
            context,
            explain,
            src,
        } => {
            let engine = src.engine()?;
            let request = CheckRequest {
                agent: &agent,
                action: &action,
                resource: resource.as_deref(),
                context: &context,
            };
            check(&engine, &request, explain)
        }
        PolicyCmd::Test { files, src } => {
            let engine = src.engine_with(PolicyIds::Positional)?;
            let mut failed = 0;
            let mut passed = 0;
            for file in &files {
                let (p, f) = crate::policy_test_cmd::run_test_file(&engine, &src, file)?;
                passed += p;
                failed += f;
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 { 0 } else { exit::FAILED })
        }
    }
}

fn fmt(dir: &Path, check: bool) -> Result<u8> {
    let config = cedar_policy_formatter::Config::default();
    let mut changed = Vec::new();
    // The policies, and the properties beside them; or one policies file.
    let mut entries: Vec<PathBuf> = if dir.is_file() {
        vec![dir.to_path_buf()]
    } else {
        std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .chain(
                std::fs::read_dir(dir.join("properties"))
                    .into_iter()
                    .flatten(),
            )
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "cedar"))
            .collect()
    };
    entries.sort();
    for path in entries {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let pretty = cedar_policy_formatter::policies_str_to_pretty(&text, &config)
            .map_err(|e| anyhow::anyhow!("{}: cannot format: {e:?}", path.display()))?;
        let pretty = if pretty.ends_with('\n') {
            pretty
        } else {
            format!("{pretty}\n")
        };
        if pretty != text {
            if !check {
                std::fs::write(&path, &pretty)
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            changed.push(path);
        }
    }
    for p in &changed {
        println!(
            "{} {}",
            if check {
                "would reformat"
            } else {
                "reformatted"
            },
            p.display()
        );
    }
    if check && !changed.is_empty() {
        eprintln!("run `corral policy fmt` to format them");
        return Ok(exit::FAILED);
    }
    Ok(0)
}

fn with_common(mut context: Value) -> Result<Value> {
    let Some(obj) = context.as_object_mut() else {
        bail!("--context must be a JSON object");
    };
    if !obj.contains_key("common") {
        obj.insert("common".into(), Common::now("cli", 0).to_json());
    }
    Ok(context)
}

/// The request `corral policy check` decides.
struct CheckRequest<'a> {
    agent: &'a str,
    action: &'a str,
    resource: Option<&'a str>,
    context: &'a str,
}

fn check(engine: &PolicyEngine, request: &CheckRequest<'_>, explain: bool) -> Result<u8> {
    let CheckRequest {
        agent,
        action,
        resource,
        context,
    } = *request;
    let context: Value = serde_json::from_str(context).context("--context is not valid JSON")?;
    let context = with_common(context)?;
    let resource = match resource {
        Some(r) => parse_uid(r, "--resource")?,
        None => corral_policy::uid("Tool", action),
    };
    let request = engine
        .request(
            corral_policy::uid("Agent", agent),
            corral_policy::uid("Action", action),
            resource.clone(),
            context,
        )
        .map_err(|e| anyhow::anyhow!("agent `{agent}`, action `{action}`: {e}"))?;
    let decision = engine.authorize(&request);
    println!("{}", decision.verdict().to_uppercase());
    println!("  request: Agent::\"{agent}\" {action} {resource}");
    if let Some(needed) = &decision.approval {
        println!("  allowed only once a person approves; asked by:");
        for asking in &needed.policies {
            let at = engine
                .policy_location(&asking.policy_id)
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            println!(
                "    {}{at}: approvers {}",
                asking.policy_id, asking.approvers
            );
        }
        println!(
            "  the answer is the `approve` action's decision; `corral approvals ls` shows waiting calls on a running host"
        );
    } else if !decision.errors.is_empty() {
        println!("  denied because evaluation failed (Corral fails closed):");
        for e in &decision.errors {
            let at = engine
                .policy_location(&e.policy_id)
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            println!(
                "    {}{at}: {}",
                if e.policy_id.is_empty() {
                    "<request>"
                } else {
                    &e.policy_id
                },
                e.message
            );
        }
    } else if decision.policy_ids.is_empty() {
        println!(
            "  no permit matched: add a permit for this agent and action, or check the entities"
        );
    } else {
        println!(
            "  {} by:",
            if decision.allowed {
                "permitted"
            } else {
                "forbidden"
            }
        );
        for id in &decision.policy_ids {
            let at = engine
                .policy_location(id)
                .map(|l| format!(" ({l})"))
                .unwrap_or_default();
            println!("    {id}{at}");
        }
    }
    if decision.verdict() == "deny" {
        if explain {
            println!("  why, condition by condition:");
            for f in &decision.findings {
                let at = engine
                    .policy_location(&f.policy_id)
                    .map(|l| format!("\n      at {l}"))
                    .unwrap_or_default();
                println!("    {f}{at}");
            }
        } else if !decision.findings.is_empty() {
            println!("  (--explain shows the condition of each policy that decided it)");
        }
    }
    println!("  policy set: {}", decision.policy_set_hash);
    Ok(match decision.verdict() {
        "allow" => 0,
        "ask" => exit::ASKS,
        _ => exit::DENIED,
    })
}
