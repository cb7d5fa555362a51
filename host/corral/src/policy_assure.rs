//! `corral policy prove` and `corral policy diff`: facts over every request
//! the schema admits, through `corral-assurance`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use corral_assurance::{Change, Counterexample, ProofResult, PropertyKind, Prover, Subject};
use corral_policy::{LoadedPolicies, load_policies, read_policy_dir};

use crate::exit;
use crate::policy_sources::Sources;

fn prover() -> Result<Prover> {
    Prover::start().map_err(|e| anyhow!("{e}"))
}

/// Prints a counterexample: the request in one line, then the case to
/// paste into a test file.
fn show(cex: &Counterexample, verdict: &str, case_name: &str, expect: &str) -> Result<()> {
    let (principal, action, resource) = cex.triple();
    println!("    counterexample ({}): {verdict}", cex.env);
    println!(
        "      {principal} {action} {resource} with context {}",
        cex.context()
    );
    println!("    as a test case (paste into policies/tests/*.json; it expects `{expect}`):");
    let case = serde_json::to_string_pretty(&cex.test_case(case_name, expect))?;
    for line in case.lines() {
        println!("      {line}");
    }
    Ok(())
}

/// `corral policy prove`.
pub fn prove(src: &Sources, properties: Option<&Path>, with_shadow: bool) -> Result<u8> {
    let engine = src.engine()?;
    let schema = &engine.schema().schema;
    let dir = properties
        .map(Path::to_path_buf)
        .unwrap_or_else(|| src.home().join("properties"));
    let props = corral_assurance::load_properties(&dir, schema).map_err(|e| {
        anyhow!(
            "{e}\n{} problem(s) in {}; fix them and run `corral policy prove` again",
            e.0.len(),
            dir.display()
        )
    })?;
    if props.is_empty() {
        bail!(
            "no properties in {}: write one as a permit annotated @never or @always (README, \"Proving properties\")",
            dir.display()
        );
    }
    let mut prover = prover()?;
    let subject = Subject::compile(&prover, schema, engine.policies(), with_shadow)
        .map_err(|e| anyhow!("{e}"))?;
    println!(
        "proving {} properties from {} over {} (policy set {}{}; compiled in {} ms)",
        props.len(),
        dir.display(),
        src.dir.display(),
        engine.policy_set_hash(),
        if with_shadow {
            ", shadow policies enforced"
        } else {
            ""
        },
        subject.compile_time.as_millis()
    );
    let (mut held, mut failed, mut errors) = (0, 0, 0);
    for property in &props {
        let proof = corral_assurance::prove(&mut prover, &subject, property);
        let took = format!(
            "@{}, {} request type(s), {:.1} ms",
            proof.kind.as_str(),
            proof.request_types,
            proof.elapsed.as_secs_f64() * 1000.0
        );
        match &proof.result {
            Ok(ProofResult::Holds) => {
                held += 1;
                println!("  HOLDS  {} ({took})", proof.property);
            }
            Ok(ProofResult::Fails(cex)) => {
                failed += 1;
                println!("  FAILS  {} ({took})", proof.property);
                let (verdict, expect) = match proof.kind {
                    PropertyKind::Never => ("the policies allow it", "deny"),
                    PropertyKind::Always => {
                        ("the policies do not allow it without asking", "allow")
                    }
                };
                show(
                    cex,
                    verdict,
                    &format!("{}: counterexample", proof.property),
                    expect,
                )?;
            }
            Err(e) => {
                errors += 1;
                println!("  ERROR  {} ({took}): {e}", proof.property);
            }
        }
    }
    println!("{held} hold, {failed} fail, {errors} could not be proven");
    if failed + errors > 0 {
        eprintln!(
            "fix the policies (or the property), then run `corral policy prove` again; `corral policy check` explains a single request"
        );
        return Ok(exit::FAILED);
    }
    Ok(0)
}

fn load_set(dir: &Path, schema: &cedar_policy::Schema, which: &str) -> Result<LoadedPolicies> {
    let files = read_policy_dir(dir).map_err(|e| anyhow!("{e}"))?;
    load_policies(&files, schema).map_err(|e| {
        anyhow!(
            "the {which} policy set in {} does not load against the new schema:\n{e}",
            dir.display()
        )
    })
}

/// `corral policy diff OLD NEW`.
pub fn diff(old: &Path, new: &Path, src: &Sources) -> Result<u8> {
    let mut new_src = src.clone();
    new_src.dir = PathBuf::from(new);
    let engine = new_src.engine()?;
    let schema = &engine.schema().schema;
    let old_set = load_set(old, schema, "old")
        .with_context(|| "`corral policy diff` compares both sets under the new schema")?;
    let new_set = engine.policies();
    let mut prover = prover()?;
    let started = std::time::Instant::now();
    let diffs = corral_assurance::diff(&mut prover, schema, &old_set, new_set)
        .map_err(|e| anyhow!("{e}"))?;
    println!(
        "{} → {} ({} request types compared in {} ms)",
        old.display(),
        new.display(),
        schema.request_envs().count(),
        started.elapsed().as_millis()
    );
    let mut widens = false;
    let mut equivalent = 0;
    // A request the new set allows and the old denied, or the reverse.
    let newly = |cex: &Counterexample, env: &str, allowed: bool| {
        if allowed {
            show(
                cex,
                "the new set allows it, the old one denied it",
                &format!("{env}: newly allowed"),
                "allow",
            )
        } else {
            show(
                cex,
                "the new set denies it, the old one allowed it",
                &format!("{env}: newly denied"),
                "deny",
            )
        }
    };
    for d in &diffs {
        let label = format!("{} ({})", d.env, d.view);
        match &d.change {
            Change::Equivalent => equivalent += 1,
            Change::AllowsMore(more) => {
                println!("  MORE  {label}: the new set allows more");
                newly(more, &d.env, true)?;
            }
            Change::AllowsLess(less) => {
                println!("  LESS  {label}: the new set allows less");
                newly(less, &d.env, false)?;
            }
            Change::Both { more, less } => {
                println!(
                    "  BOTH  {label}: the new set allows some requests it did not and denies some it allowed"
                );
                newly(more, &d.env, true)?;
                newly(less, &d.env, false)?;
            }
        }
        widens |= d.change.widens();
    }
    println!("{equivalent} of {} comparisons equivalent", diffs.len());
    if widens {
        eprintln!(
            "the new set allows requests the old one denied: review each MORE above; `corral policy replay --candidate {}` shows which recorded calls change",
            new.display()
        );
        return Ok(exit::FAILED);
    }
    Ok(0)
}
