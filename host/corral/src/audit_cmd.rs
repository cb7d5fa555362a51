//! `corral audit …`: read, follow, export and verify the decision log.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use corral_audit::{
    AuditReader, Filter, Kind, Record, Verdict, format_micros, now_micros, parse_age,
};

use crate::exit;
use crate::shown::inline;

mod dashboard;

#[derive(Args, Clone)]
pub struct AuditPath {
    /// The audit log (SQLite).
    #[arg(
        long = "audit",
        env = "CORRAL_AUDIT",
        default_value = ".corral/audit.db"
    )]
    pub path: PathBuf,
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Print the newest records; with -f, keep printing new ones.
    Tail {
        /// How many records to start with.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: usize,
        /// Follow: poll for new records until interrupted.
        #[arg(short, long)]
        follow: bool,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        log: AuditPath,
    },
    /// Select records.
    Query {
        #[arg(long)]
        agent: Option<String>,
        /// The tool (or built-in action such as `read_file`).
        #[arg(long)]
        tool: Option<String>,
        #[arg(long, value_enum)]
        decision: Option<DecisionArg>,
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        /// Only the records that belong to record N: a call's capability
        /// uses, approvals and outcome.
        #[arg(long, value_name = "N")]
        parent: Option<i64>,
        /// Only records younger than this: 90s, 15m, 1h, 7d.
        #[arg(long)]
        since: Option<String>,
        /// Only decisions that enforcing the @shadow policies would have
        /// changed.
        #[arg(long)]
        shadow_differs: bool,
        #[arg(long)]
        limit: Option<usize>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        log: AuditPath,
    },
    /// Write every record as JSON Lines to stdout.
    Export {
        /// The format (JSON Lines is the only one).
        #[arg(long, required = true)]
        jsonl: bool,
        #[command(flatten)]
        log: AuditPath,
    },
    /// Check the hash chain; name the first record that breaks it.
    Verify {
        #[command(flatten)]
        log: AuditPath,
    },
    /// Serve the audit dashboard over a log, read-only (a copy an auditor
    /// was given, say); a running `corral up` serves its own under [web].
    Dashboard(dashboard::DashboardArgs),
}

#[derive(Clone, Copy, ValueEnum)]
pub enum DecisionArg {
    Allow,
    Deny,
    /// Calls that asked a person (`@approval`).
    Ask,
    /// Calls and uses no permit allowed, let through in observe mode.
    WouldDeny,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KindArg {
    Call,
    Capability,
    Outcome,
    /// A call put to people (`@approval`).
    ApprovalRequested,
    /// A person said yes.
    ApprovalGranted,
    /// A person said no.
    ApprovalDenied,
    /// Nobody answered in time, or the host shut down.
    ApprovalExpired,
    /// An answer that did not count (refused by `approve`, or too late).
    ApprovalRefused,
    /// A scheduled run that did not happen, and why.
    ScheduleSkipped,
}

impl KindArg {
    fn kind(self) -> Kind {
        match self {
            KindArg::Call => Kind::Call,
            KindArg::Capability => Kind::Capability,
            KindArg::Outcome => Kind::Outcome,
            KindArg::ApprovalRequested => Kind::ApprovalRequested,
            KindArg::ApprovalGranted => Kind::ApprovalGranted,
            KindArg::ApprovalDenied => Kind::ApprovalDenied,
            KindArg::ApprovalExpired => Kind::ApprovalExpired,
            KindArg::ApprovalRefused => Kind::ApprovalRefused,
            KindArg::ScheduleSkipped => Kind::ScheduleSkipped,
        }
    }
}

pub fn since_micros(since: Option<&str>) -> Result<Option<i64>> {
    let Some(text) = since else { return Ok(None) };
    let age = parse_age(text).map_err(|e| anyhow::anyhow!("--since: {e}"))?;
    Ok(Some(
        now_micros() - i64::try_from(age.as_micros()).unwrap_or(i64::MAX / 2),
    ))
}

pub fn run(cmd: AuditCmd) -> Result<u8> {
    match cmd {
        AuditCmd::Dashboard(args) => dashboard::run(args),
        AuditCmd::Verify { log } => {
            let reader = AuditReader::open(&log.path)?;
            let report = reader.verify()?;
            match report.first_bad {
                None => {
                    println!(
                        "ok: {} records, chain intact; head #{} {}",
                        report.records, report.head_seq, report.head_hash
                    );
                    if report.spooled > 0 {
                        println!(
                            "{} of them are in the spool ({}-spool), not yet in the database: the broker moves them in within milliseconds, or when it next starts after a crash",
                            report.spooled,
                            log.path.display()
                        );
                    }
                    Ok(0)
                }
                Some((seq, why)) => {
                    println!(
                        "TAMPERED: record #{seq}: {why}\n{} records before it verify; the last good one is #{} {}",
                        report.records, report.head_seq, report.head_hash
                    );
                    Ok(exit::FAILED)
                }
            }
        }
        AuditCmd::Export { jsonl: _, log } => {
            let reader = AuditReader::open(&log.path)?;
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            let mut after = 0;
            loop {
                let page = reader.query(&Filter {
                    after_seq: Some(after),
                    limit: Some(10_000),
                    ..Filter::default()
                })?;
                let Some(last) = page.last() else { break };
                after = last.seq;
                for r in &page {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                }
            }
            out.flush()?;
            Ok(0)
        }
        AuditCmd::Query {
            agent,
            tool,
            decision,
            kind,
            parent,
            since,
            shadow_differs,
            limit,
            json,
            log,
        } => {
            let reader = AuditReader::open(&log.path)?;
            let filter = Filter {
                shadow_differs,
                agent,
                action: tool,
                verdict: decision.map(|d| match d {
                    DecisionArg::Allow => Verdict::Allow,
                    DecisionArg::Deny => Verdict::Deny,
                    DecisionArg::Ask => Verdict::Ask,
                    DecisionArg::WouldDeny => Verdict::WouldDeny,
                }),
                parent,
                kind: kind.map(KindArg::kind),
                since_us: since_micros(since.as_deref())?,
                after_seq: None,
                limit,
                clip_arguments: None,
            };
            for r in reader.query(&filter)? {
                print_record(&r, json)?;
            }
            Ok(0)
        }
        AuditCmd::Tail {
            lines,
            follow,
            json,
            log,
        } => {
            let reader = AuditReader::open(&log.path)?;
            let mut head = 0;
            for r in reader.last(lines)? {
                head = r.seq;
                print_record(&r, json)?;
            }
            if !follow {
                return Ok(0);
            }
            loop {
                std::thread::sleep(Duration::from_millis(200));
                let new = reader.query(&Filter {
                    after_seq: Some(head),
                    ..Filter::default()
                })?;
                for r in new {
                    head = r.seq;
                    print_record(&r, json)?;
                }
            }
        }
    }
}

fn print_record(r: &Record, json: bool) -> Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
        return Ok(());
    }
    let time = format_micros(r.time_us);
    // Agents and tools chose much of a record (a resource's path, a
    // tool's error in `detail`): each field is shown on one line, with
    // terminal controls escaped, so no record can forge another.
    let (agent, action, resource) = (inline(&r.agent), inline(&r.action), inline(&r.resource));
    let detail = r.detail.as_deref().map(inline);
    match r.kind {
        Kind::Outcome => writeln!(
            out,
            "#{} {time} outcome    {} {} {} in {:.1} ms (call #{}){}{}",
            r.seq,
            agent,
            action,
            r.outcome.map(|o| o.as_str()).unwrap_or("?"),
            r.duration_us.unwrap_or(0) as f64 / 1000.0,
            r.parent.unwrap_or(0),
            r.usage
                .map(|u| format!(
                    ", {} input + {} output tokens",
                    u.input_tokens, u.output_tokens
                ))
                .unwrap_or_default(),
            detail.map(|d| format!(": {d}")).unwrap_or_default(),
        )?,
        kind => writeln!(
            out,
            "#{} {time} {:<10} {} {} {} {} [{}] {}{}{}{}",
            r.seq,
            kind.as_str(),
            agent,
            action,
            resource,
            inline(r.decision.as_deref().unwrap_or("?")),
            inline(&r.policy_ids.join(", ")),
            inline(&r.arguments.to_string()),
            r.parent
                .map(|p| format!(" (call #{p})"))
                .unwrap_or_default(),
            // A denial's reason, down to the condition that decided it.
            detail
                .map(|d| format!("\n    why: {d}"))
                .unwrap_or_default(),
            r.shadow
                .as_deref()
                .map(|s| format!("\n    shadow differs: {}", inline(s)))
                .unwrap_or_default(),
        )?,
    }
    Ok(())
}
