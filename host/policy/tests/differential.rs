//! Differential test: the indexed authorizer against Cedar's plain
//! `is_authorized`, over random policy sets and random requests.
//!
//! Decisions, deciding policies and errors must be identical, for the
//! indexed subset and for `Scoped` (context-free policies decided once,
//! the rest per request). The
//! generator covers `==`, `in` over nested groups and folders, `is`,
//! `is … in`, templates with links, action groups, `like`, `when`/`unless`,
//! and conditions that raise evaluation errors (missing attributes, type
//! mismatches), which is where a fail-open bug would hide.
//!
//! Deterministic: the seed of a failing case is printed; set
//! `CORRAL_DIFF_SEED` to replay one policy set.

use std::collections::{BTreeSet, HashMap};
use std::str::FromStr;

use cedar_policy::{
    Authorizer, Context, Entities, EntityUid, PolicyId, PolicySet, Request, Response, SlotId,
};
use corral_policy::PolicyIndex;
use serde_json::json;

/// SplitMix64: tiny, fast, good enough to drive a generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const USERS: &[&str] = &["u0", "u1", "u2", "u3", "u4", "u5"];
const GROUPS: &[&str] = &["g0", "g1", "g2", "g3"];
const DOCS: &[&str] = &["d0", "d1", "d2", "d3", "d4", "d5"];
const FOLDERS: &[&str] = &["f0", "f1", "f2"];
const ACTIONS: &[&str] = &["read", "write", "delete", "share"];
const ACTION_GROUPS: &[&str] = &["edit", "all"];

/// The fixed universe: nested groups and folders, action groups, and
/// attributes that are sometimes missing or of the wrong type.
fn entities() -> Entities {
    let mut v = Vec::new();
    // g1 in g0, g3 in g2 (nested), users spread over groups.
    v.push(json!({"uid": {"type": "Group", "id": "g0"}, "attrs": {}, "parents": []}));
    v.push(json!({"uid": {"type": "Group", "id": "g1"}, "attrs": {}, "parents": [{"type": "Group", "id": "g0"}]}));
    v.push(json!({"uid": {"type": "Group", "id": "g2"}, "attrs": {}, "parents": []}));
    v.push(json!({"uid": {"type": "Group", "id": "g3"}, "attrs": {}, "parents": [{"type": "Group", "id": "g2"}]}));
    for (i, u) in USERS.iter().enumerate() {
        let group = GROUPS[i % GROUPS.len()];
        // `level` is a Long for most users and a String for u5: comparing
        // it raises a type error.
        let level = if i == 5 { json!("high") } else { json!(i) };
        v.push(json!({"uid": {"type": "User", "id": u}, "attrs": {"name": u, "level": level}, "parents": [{"type": "Group", "id": group}]}));
    }
    v.push(json!({"uid": {"type": "Folder", "id": "f0"}, "attrs": {}, "parents": []}));
    v.push(json!({"uid": {"type": "Folder", "id": "f1"}, "attrs": {}, "parents": [{"type": "Folder", "id": "f0"}]}));
    v.push(json!({"uid": {"type": "Folder", "id": "f2"}, "attrs": {}, "parents": []}));
    for (i, d) in DOCS.iter().enumerate() {
        let folder = FOLDERS[i % FOLDERS.len()];
        // Odd documents have no owner: `resource.owner` raises an error.
        let attrs = if i % 2 == 0 {
            json!({"owner": {"__entity": {"type": "User", "id": USERS[i % USERS.len()]}}})
        } else {
            json!({})
        };
        v.push(json!({"uid": {"type": "Doc", "id": d}, "attrs": attrs, "parents": [{"type": "Folder", "id": folder}]}));
    }
    // Actions: read, write in `edit`; edit and delete in `all`.
    v.push(json!({"uid": {"type": "Action", "id": "all"}, "attrs": {}, "parents": []}));
    v.push(json!({"uid": {"type": "Action", "id": "edit"}, "attrs": {}, "parents": [{"type": "Action", "id": "all"}]}));
    v.push(json!({"uid": {"type": "Action", "id": "read"}, "attrs": {}, "parents": [{"type": "Action", "id": "edit"}]}));
    v.push(json!({"uid": {"type": "Action", "id": "write"}, "attrs": {}, "parents": [{"type": "Action", "id": "edit"}]}));
    v.push(json!({"uid": {"type": "Action", "id": "delete"}, "attrs": {}, "parents": [{"type": "Action", "id": "all"}]}));
    v.push(json!({"uid": {"type": "Action", "id": "share"}, "attrs": {}, "parents": []}));
    Entities::from_json_value(json!(v), None).expect("entities")
}

fn principal_scope(r: &mut Rng, template: bool) -> String {
    if template && r.chance(50) {
        return if r.chance(50) {
            "principal == ?principal".into()
        } else {
            "principal in ?principal".into()
        };
    }
    match r.below(6) {
        0 => "principal".into(),
        1 => format!("principal == User::\"{}\"", r.pick(USERS)),
        2 => format!("principal in Group::\"{}\"", r.pick(GROUPS)),
        3 => "principal is User".into(),
        4 => format!("principal is User in Group::\"{}\"", r.pick(GROUPS)),
        _ => format!("principal in User::\"{}\"", r.pick(USERS)),
    }
}

fn action_scope(r: &mut Rng) -> String {
    match r.below(4) {
        0 => "action".into(),
        1 => format!("action == Action::\"{}\"", r.pick(ACTIONS)),
        2 => format!("action in Action::\"{}\"", r.pick(ACTION_GROUPS)),
        _ => {
            let a = r.pick(ACTIONS);
            let b = if r.chance(50) {
                r.pick(ACTION_GROUPS)
            } else {
                r.pick(ACTIONS)
            };
            format!("action in [Action::\"{a}\", Action::\"{b}\"]")
        }
    }
}

fn resource_scope(r: &mut Rng, template: bool) -> String {
    if template && r.chance(50) {
        return if r.chance(50) {
            "resource == ?resource".into()
        } else {
            "resource in ?resource".into()
        };
    }
    match r.below(6) {
        0 => "resource".into(),
        1 => format!("resource == Doc::\"{}\"", r.pick(DOCS)),
        2 => format!("resource in Folder::\"{}\"", r.pick(FOLDERS)),
        3 => "resource is Doc".into(),
        4 => format!("resource is Doc in Folder::\"{}\"", r.pick(FOLDERS)),
        _ => "resource is Folder".into(),
    }
}

fn condition(r: &mut Rng) -> String {
    let n = r.below(10);
    let clause = match r.below(10) {
        0 => "true".to_string(),
        1 => format!("context.n > {n}"),
        2 => "context.flag".into(),
        // Errors for documents without an owner.
        3 => "resource.owner == principal".into(),
        4 => format!("principal.name like \"u*{}\"", n % 6),
        5 => format!(
            "resource has owner && resource.owner in Group::\"{}\"",
            r.pick(GROUPS)
        ),
        // Errors for u5, whose level is a string.
        6 => format!("principal.level < {n}"),
        // Errors always: the attribute does not exist.
        7 => "context.missing".into(),
        8 => format!("context.n == {n}"),
        _ => "principal.name == \"u1\" || context.flag".into(),
    };
    if r.chance(50) {
        format!(" when {{ {clause} }}")
    } else {
        format!(" unless {{ {clause} }}")
    }
}

/// A random policy set: static policies and templates with 1–3 links.
fn policy_set(r: &mut Rng) -> PolicySet {
    let mut set = PolicySet::new();
    let count = 1 + r.below(40);
    for i in 0..count {
        let template = r.chance(20);
        let effect = if r.chance(70) { "permit" } else { "forbid" };
        let mut text = format!(
            "{effect}({}, {}, {})",
            principal_scope(r, template),
            action_scope(r),
            resource_scope(r, template)
        );
        for _ in 0..r.below(3) {
            text.push_str(&condition(r));
        }
        text.push(';');
        let id = format!("p{i}");
        if text.contains('?') {
            let t = cedar_policy::Template::parse(Some(PolicyId::new(&id)), &text)
                .unwrap_or_else(|e| panic!("generated template does not parse: {e}\n{text}"));
            let has_p = text.contains("?principal");
            let has_r = text.contains("?resource");
            set.add_template(t).expect("add template");
            for l in 0..1 + r.below(3) {
                let mut vals = HashMap::new();
                if has_p {
                    let u = if r.chance(60) {
                        uid("User", r.pick(USERS))
                    } else {
                        uid("Group", r.pick(GROUPS))
                    };
                    vals.insert(SlotId::principal(), u);
                }
                if has_r {
                    let d = if r.chance(60) {
                        uid("Doc", r.pick(DOCS))
                    } else {
                        uid("Folder", r.pick(FOLDERS))
                    };
                    vals.insert(SlotId::resource(), d);
                }
                set.link(
                    PolicyId::new(&id),
                    PolicyId::new(format!("{id}-link{l}")),
                    vals,
                )
                .expect("link");
            }
        } else {
            let p = cedar_policy::Policy::parse(Some(PolicyId::new(&id)), &text)
                .unwrap_or_else(|e| panic!("generated policy does not parse: {e}\n{text}"));
            set.add(p).expect("add");
        }
    }
    set
}

fn uid(ty: &str, id: &str) -> EntityUid {
    EntityUid::from_str(&format!("{ty}::\"{id}\"")).expect("uid")
}

fn request(r: &mut Rng) -> Request {
    // Sometimes an entity that is not in the store at all.
    let principal = if r.chance(10) {
        uid("User", "stranger")
    } else {
        uid("User", r.pick(USERS))
    };
    let action = uid("Action", r.pick(ACTIONS));
    let resource = match r.below(10) {
        0 => uid("Doc", "unknown"),
        1 => uid("Folder", r.pick(FOLDERS)),
        _ => uid("Doc", r.pick(DOCS)),
    };
    let context = Context::from_json_value(json!({"n": r.below(12), "flag": r.chance(50)}), None)
        .expect("context");
    Request::new(principal, action, resource, context, None).expect("request")
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    decision: cedar_policy::Decision,
    reasons: BTreeSet<String>,
    errors: Vec<String>,
}

fn outcome(r: &Response) -> Outcome {
    let mut errors: Vec<String> = r.diagnostics().errors().map(|e| format!("{e}")).collect();
    errors.sort();
    Outcome {
        decision: r.decision(),
        reasons: r.diagnostics().reason().map(|id| id.to_string()).collect(),
        errors,
    }
}

#[test]
fn indexed_authorization_matches_cedar_on_100k_random_requests() {
    const SETS: u64 = 250;
    const REQUESTS_PER_SET: usize = 400;
    let entities = entities();
    let authorizer = Authorizer::new();
    let only: Option<u64> = std::env::var("CORRAL_DIFF_SEED")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut compared = 0usize;
    let mut with_errors = 0usize;
    let mut allows = 0usize;
    let mut nonempty_subsets = 0usize;
    let mut fixed_only = 0usize;
    for seed in 0..SETS {
        if only.is_some_and(|o| o != seed) {
            continue;
        }
        let mut r = Rng(seed.wrapping_mul(0x2545_F491_4F6C_DD1D).wrapping_add(1));
        let set = policy_set(&mut r);
        let index = PolicyIndex::new(&set);
        for _ in 0..REQUESTS_PER_SET {
            let req = request(&mut r);
            let plain = outcome(&authorizer.is_authorized(&req, &set, &entities));
            let (Some(p), Some(a), Some(res)) = (req.principal(), req.action(), req.resource())
            else {
                panic!("request without scope entities")
            };
            let candidates = index.candidates(p, a, res, &entities);
            if !candidates.is_empty() {
                nonempty_subsets += 1;
            }
            let subset = index.subset(&candidates).expect("subset");
            let indexed = outcome(&authorizer.is_authorized(&req, &subset, &entities));
            assert_eq!(
                indexed, plain,
                "seed {seed}: indexed and plain Cedar disagree for {req}\npolicies:\n{set}"
            );
            let scoped = index
                .scoped(p, a, res, &entities, &authorizer)
                .expect("scoped");
            fixed_only += usize::from(!scoped.needs_context() && !candidates.is_empty());
            let split = outcome(
                &scoped
                    .decide(Some(&req), &authorizer, &entities)
                    .expect("decide"),
            );
            assert_eq!(
                split, plain,
                "seed {seed}: scoped and plain Cedar disagree for {req}\npolicies:\n{set}"
            );
            compared += 1;
            with_errors += usize::from(!plain.errors.is_empty());
            allows += usize::from(plain.decision == cedar_policy::Decision::Allow);
        }
    }
    if only.is_none() {
        assert!(compared >= 100_000, "compared {compared}");
        // The generator must exercise every interesting path, or the
        // comparison proves little.
        assert!(
            with_errors > compared / 50,
            "only {with_errors} requests raised errors"
        );
        assert!(
            allows > compared / 20 && allows < compared * 19 / 20,
            "allows: {allows}/{compared}"
        );
        assert!(
            nonempty_subsets > compared / 2,
            "non-empty subsets: {nonempty_subsets}"
        );
        // Both of `Scoped`'s paths: some requests decided without
        // evaluating anything.
        assert!(
            fixed_only > compared / 100,
            "decided without the context: {fixed_only}"
        );
    }
    println!(
        "compared {compared} requests: {allows} allowed, {with_errors} with evaluation errors, {fixed_only} decided without the context"
    );
}
