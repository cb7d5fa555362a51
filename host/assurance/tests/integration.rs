//! Proofs and diffs against the real solver (cvc5, installed by `cargo
//! xtask setup`), each counterexample checked by Corral's own engine.

use std::path::Path;

use corral_assurance::{Change, ProofResult, PropertyKind, Prover, Subject};
use corral_policy::{EngineSources, PolicyEngine};
use serde_json::{Value, json};

const SCHEMA: &str = r#"
entity Team in [Team];
entity Workspace;
entity Agent in [Team] = { workspace: Workspace };
entity Model;
entity Tool = { source: String };
type Common = { request_time: Long };
action call_tool;
action write_file appliesTo {
  principal: Agent, resource: Workspace,
  context: { common: Common, path: String },
};
action use_model appliesTo {
  principal: Agent, resource: Model,
  context: { common: Common, tokens: Long },
};
action echo in [Action::"call_tool"] appliesTo {
  principal: Agent, resource: Tool,
  context: { common: Common, input: { message: String } },
};
"#;

const POLICIES: &str = r#"
@id("own-workspace")
permit (principal, action == Action::"write_file", resource)
when { resource == principal.workspace };

@id("no-dotfiles")
forbid (principal, action == Action::"write_file", resource)
when { context.path like ".*" };

@id("assistants-use-models")
permit (principal in Team::"assistants", action == Action::"use_model", resource);

@id("echo-any-tool")
permit (principal, action in Action::"call_tool", resource);
"#;

fn dir_with(policies: &str, properties: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("schema.cedarschema"), SCHEMA).expect("schema");
    std::fs::write(dir.path().join("p.cedar"), policies).expect("policies");
    std::fs::create_dir(dir.path().join("properties")).expect("properties dir");
    std::fs::write(dir.path().join("properties/p.cedar"), properties).expect("properties");
    dir
}

fn engine(dir: &Path) -> PolicyEngine {
    PolicyEngine::load(&EngineSources {
        schema_file: dir.join("schema.cedarschema"),
        policy_dir: dir.to_path_buf(),
        tools: Vec::new(),
        entities: json!([]),
    })
    .expect("policies load")
}

/// Decides a counterexample's test case with Corral's engine, over the
/// case's own entities, as `corral policy test` does.
fn corral_verdict(dir: &Path, case: &Value) -> String {
    let sources = EngineSources {
        schema_file: dir.join("schema.cedarschema"),
        policy_dir: dir.to_path_buf(),
        tools: Vec::new(),
        entities: case["entities"].clone(),
    };
    let engine = PolicyEngine::load(&sources).expect("the case's entities load");
    let uid = |k: &str| case["request"][k].as_str().expect(k).parse().expect("uid");
    let request = engine
        .request(
            uid("principal"),
            uid("action"),
            uid("resource"),
            case["request"]["context"].clone(),
        )
        .expect("the case's request is valid for the schema");
    engine.authorize(&request).verdict().to_string()
}

fn prove_all(dir: &Path) -> Vec<corral_assurance::Proof> {
    let engine = engine(dir);
    let schema = &engine.schema().schema;
    let properties =
        corral_assurance::load_properties(&dir.join("properties"), schema).expect("properties");
    let mut prover = Prover::start().expect("cvc5 (cargo xtask setup installs it)");
    let subject = Subject::compile(&prover, schema, engine.policies(), false).expect("compile");
    properties
        .iter()
        .map(|p| corral_assurance::prove(&mut prover, &subject, p))
        .collect()
}

#[test]
fn a_property_that_holds_and_one_that_fails_with_a_real_counterexample() {
    let dir = dir_with(
        POLICIES,
        r#"
@id("no-dotfile-writes") @never
permit (principal, action == Action::"write_file", resource) when { context.path like ".*" };

@id("batch-never-uses-models") @never
permit (principal in Team::"batch", action == Action::"use_model", resource);

@id("own-workspace-always-writable") @always
permit (principal, action == Action::"write_file", resource)
when { resource == principal.workspace && context.path like "notes/*" };
"#,
    );
    let proofs = prove_all(dir.path());
    let by_id = |id: &str| proofs.iter().find(|p| p.property == id).expect(id);

    let dotfiles = by_id("no-dotfile-writes");
    assert!(
        matches!(dotfiles.result, Ok(ProofResult::Holds)),
        "{dotfiles:?}"
    );
    assert_eq!(dotfiles.request_types, 1);
    let always = by_id("own-workspace-always-writable");
    assert_eq!(always.kind, PropertyKind::Always);
    assert!(
        matches!(always.result, Ok(ProofResult::Holds)),
        "{always:?}"
    );

    // An agent can be in both teams: the solver finds one, and Corral's
    // engine really allows its request.
    let batch = by_id("batch-never-uses-models");
    let Ok(ProofResult::Fails(cex)) = &batch.result else {
        panic!("expected a counterexample: {batch:?}");
    };
    let case = cex.test_case("batch: counterexample", "deny");
    assert_eq!(case["decision"], "deny");
    assert_eq!(case["request"]["action"], "Action::\"use_model\"");
    let entities = case["entities"].as_array().expect("entities");
    assert!(
        entities.iter().all(|e| e["uid"]["type"] != "Action"),
        "action entities come from the schema: {case}"
    );
    assert_eq!(corral_verdict(dir.path(), &case), "allow", "{case}");
}

#[test]
fn an_always_property_fails_when_a_forbid_takes_some_requests() {
    let dir = dir_with(
        POLICIES,
        r#"
@id("workspace-always-writable") @always
permit (principal, action == Action::"write_file", resource)
when { resource == principal.workspace };
"#,
    );
    let proofs = prove_all(dir.path());
    let Ok(ProofResult::Fails(cex)) = &proofs[0].result else {
        panic!("expected a counterexample: {:?}", proofs[0]);
    };
    let case = cex.test_case("dotfile", "allow");
    let path = case["request"]["context"]["path"].as_str().expect("path");
    assert!(
        path.starts_with('.'),
        "the forbid is what denies it: {case}"
    );
    assert_eq!(corral_verdict(dir.path(), &case), "deny", "{case}");
}

#[test]
fn a_tool_call_pairs_its_action_with_its_own_tool() {
    // `echo-any-tool` allows echo with any Tool resource; the broker only
    // ever asks with Tool::"echo", so a property about that pairing holds.
    let dir = dir_with(
        POLICIES,
        r#"
@id("echo-only-on-echo") @never
permit (principal, action == Action::"echo", resource)
unless { resource == Tool::"echo" };
"#,
    );
    let proofs = prove_all(dir.path());
    assert!(
        matches!(proofs[0].result, Ok(ProofResult::Holds)),
        "{:?}",
        proofs[0]
    );
}

#[test]
fn properties_are_checked_before_anything_is_proven() {
    let dir = dir_with(POLICIES, "");
    let engine = engine(dir.path());
    let schema = &engine.schema().schema;
    for (text, expected) in [
        (
            "permit (principal, action, resource);",
            "property has no @id",
        ),
        (
            "@id(\"x\") permit (principal, action, resource);",
            "needs @never or @always",
        ),
        (
            "@id(\"x\") @never @always permit (principal, action, resource);",
            "not both",
        ),
        (
            "@id(\"x\") @never forbid (principal, action, resource);",
            "written as a permit",
        ),
        (
            "@id(\"x\") @never permit (principal, action == Action::\"use_model\", resource) when { context.nope };",
            "nope",
        ),
    ] {
        std::fs::write(dir.path().join("properties/p.cedar"), text).expect("write");
        let err = corral_assurance::load_properties(&dir.path().join("properties"), schema)
            .expect_err(text)
            .to_string();
        assert!(err.contains(expected), "{text}: {err}");
    }
}

#[test]
fn a_property_in_the_policy_directory_is_refused() {
    let dir = dir_with(
        &format!(
            "{POLICIES}\n@id(\"oops\") @never permit (principal, action == Action::\"use_model\", resource);"
        ),
        "",
    );
    let err = PolicyEngine::load(&EngineSources {
        schema_file: dir.path().join("schema.cedarschema"),
        policy_dir: dir.path().to_path_buf(),
        tools: Vec::new(),
        entities: json!([]),
    })
    .expect_err("a property must not be enforced")
    .to_string();
    assert!(err.contains("properties are proven, not enforced"), "{err}");
}

fn diff(old: &str, new: &str) -> Vec<corral_assurance::EnvDiff> {
    let old_dir = dir_with(old, "");
    let new_dir = dir_with(new, "");
    let old = engine(old_dir.path());
    let new = engine(new_dir.path());
    let mut prover = Prover::start().expect("cvc5");
    corral_assurance::diff(
        &mut prover,
        &new.schema().schema,
        old.policies(),
        new.policies(),
    )
    .expect("diff")
}

#[test]
fn the_diff_says_more_less_both_and_equivalent_with_requests_that_show_it() {
    let same = diff(POLICIES, POLICIES);
    assert!(same.iter().all(|d| matches!(d.change, Change::Equivalent)));
    assert_eq!(same.len(), 3, "one comparison per request type");

    // Wider: batch may use models too.
    let wider = POLICIES.replace(
        "permit (principal in Team::\"assistants\", action == Action::\"use_model\", resource);",
        "permit (principal, action == Action::\"use_model\", resource);",
    );
    let more = diff(POLICIES, &wider);
    let models = more
        .iter()
        .find(|d| d.env.contains("use_model"))
        .expect("use_model");
    let Change::AllowsMore(cex) = &models.change else {
        panic!("expected more: {:?}", models.change);
    };
    assert!(models.change.widens());
    let case = cex.test_case("newly allowed", "allow");
    let (wider_dir, old_dir) = (dir_with(&wider, ""), dir_with(POLICIES, ""));
    assert_eq!(corral_verdict(wider_dir.path(), &case), "allow", "{case}");
    assert_eq!(corral_verdict(old_dir.path(), &case), "deny", "{case}");

    // Narrower, in the other direction.
    let less = diff(&wider, POLICIES);
    let models = less
        .iter()
        .find(|d| d.env.contains("use_model"))
        .expect("use_model");
    assert!(matches!(models.change, Change::AllowsLess(_)));
    assert!(!models.change.widens());

    // Both: own-workspace writes only under notes/ (less), and anyone's
    // workspace under shared/ (more).
    let moved = format!(
        "{}\n@id(\"shared\") permit (principal, action == Action::\"write_file\", resource) when {{ context.path like \"shared/*\" }};",
        POLICIES.replace(
            "when { resource == principal.workspace };",
            "when { resource == principal.workspace && context.path like \"notes/*\" };",
        )
    );
    let both = diff(POLICIES, &moved);
    let writes = both
        .iter()
        .find(|d| d.env.contains("write_file"))
        .expect("write_file");
    assert!(
        matches!(writes.change, Change::Both { .. }),
        "{:?}",
        writes.change
    );
}
