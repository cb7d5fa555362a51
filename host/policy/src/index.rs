//! Indexed authorization.
//!
//! Cedar's authorizer evaluates every policy of the set it is given. Yet a
//! policy whose scope (`principal`, `action`, `resource` constraints) does
//! not match a request can neither be satisfied nor produce an error: Cedar
//! evaluates the scope first and short-circuits. So evaluating only the
//! policies whose scope *may* match gives exactly the same decision,
//! reasons and errors.
//!
//! The index files each policy under one key per scope part — `==` uid,
//! `in` uid, `is` type, or any — and a request looks up the keys it could
//! match: its own uid, its ancestors (from the entity store, the same
//! source Cedar uses), its type, and "any". The result is a small superset
//! of the matching policies; Cedar then evaluates that subset exactly.
//! Subsets are built once per distinct candidate list and cached.
//!
//! Most policies never read the request's context (a tool's input, the
//! session counters): their outcome for a principal, action and resource
//! is fixed for as long as the policy set and entities are. [`Scoped`]
//! holds those outcomes, decided once, and the subset of policies that do
//! read the context, which is all a request still has to evaluate.
//!
//! `tests/differential.rs` checks both against plain `is_authorized` over
//! random policy sets and requests.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, AuthorizationError, Authorizer, Context, Decision, Effect, Entities,
    EntityTypeName, EntityUid, Policy, PolicyId, PolicySet, PrincipalConstraint, Request,
    ResourceConstraint, Response,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
}

/// The index could not put a request to its policies: an internal
/// inconsistency, reported as a deny.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IndexError(pub String);

/// action key → principal key → resource key → policies.
type Buckets = HashMap<Key, HashMap<Key, HashMap<Key, Vec<u32>>>>;

/// Cached subsets stop growing here and are rebuilt from scratch; a bound
/// keeps a stream of unusual requests from growing memory without limit.
const MAX_CACHED_SUBSETS: usize = 4096;

/// The policies of a set keyed by the scope they can match (action, then principal, then resource), so that a request is evaluated against the few that might apply and gets Cedar's own answer.
pub struct PolicyIndex {
    policies: Vec<Policy>,
    /// Per policy: whether a condition reads `context`.
    reads_context: Vec<bool>,
    /// The full set, for templates of linked policies.
    full: PolicySet,
    buckets: Buckets,
    subsets: RwLock<HashMap<Vec<u32>, Arc<PolicySet>>>,
}

impl std::fmt::Debug for PolicyIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyIndex")
            .field("policies", &self.policies.len())
            .finish()
    }
}

fn principal_key(c: PrincipalConstraint) -> Key {
    match c {
        PrincipalConstraint::Any => Key::Any,
        PrincipalConstraint::Eq(u) => Key::Eq(u),
        // `is T in X` is filed under `in X`: a superset is all the index
        // promises; Cedar checks the type.
        PrincipalConstraint::In(u) | PrincipalConstraint::IsIn(_, u) => Key::In(u),
        PrincipalConstraint::Is(t) => Key::Is(t),
    }
}

fn resource_key(c: ResourceConstraint) -> Key {
    match c {
        ResourceConstraint::Any => Key::Any,
        ResourceConstraint::Eq(u) => Key::Eq(u),
        ResourceConstraint::In(u) | ResourceConstraint::IsIn(_, u) => Key::In(u),
        ResourceConstraint::Is(t) => Key::Is(t),
    }
}

fn action_keys(c: ActionConstraint) -> Vec<Key> {
    match c {
        ActionConstraint::Any => vec![Key::Any],
        ActionConstraint::Eq(u) => vec![Key::Eq(u)],
        ActionConstraint::In(us) => us.into_iter().map(Key::In).collect(),
    }
}

/// Whether any part of `policy` reads `context`. Cedar's JSON form names
/// every variable as `{"Var": …}`; a policy without a JSON form counts as
/// reading it, so it is always evaluated in full.
fn reads_context(policy: &Policy) -> bool {
    fn walk(v: &serde_json::Value) -> bool {
        match v {
            serde_json::Value::Object(m) => {
                m.get("Var").and_then(serde_json::Value::as_str) == Some("context")
                    || m.values().any(walk)
            }
            serde_json::Value::Array(items) => items.iter().any(walk),
            _ => false,
        }
    }
    policy.to_json().map(|json| walk(&json)).unwrap_or(true)
}

/// The policies whose scope may match one principal, action and resource,
/// with the outcome of those that do not read the context decided once
/// (see the module's docs).
#[derive(Debug)]
pub struct Scoped {
    /// Context-free permits that are satisfied.
    permits: Vec<PolicyId>,
    /// Context-free forbids that are satisfied.
    forbids: Vec<PolicyId>,
    /// Context-free policies whose evaluation fails.
    errors: Vec<AuthorizationError>,
    /// The candidates that read the context, if any.
    dynamic: Option<Arc<PolicySet>>,
}

impl Scoped {
    /// Whether [`Self::decide`] needs the request, context and all.
    pub fn needs_context(&self) -> bool {
        self.dynamic.is_some()
    }

    /// Cedar's response over every candidate: the fixed outcomes, and
    /// those of the policies that read the context, evaluated now on
    /// `request` (which may be `None` when [`Self::needs_context`] is
    /// false). The response is the one `is_authorized` gives over the
    /// whole set.
    pub fn decide(
        &self,
        request: Option<&Request>,
        authorizer: &Authorizer,
        entities: &Entities,
    ) -> Result<Response, IndexError> {
        let mut permits = self.permits.clone();
        let mut forbids = self.forbids.clone();
        let mut errors = self.errors.clone();
        if let Some(set) = &self.dynamic {
            let request = request.ok_or_else(|| {
                IndexError(
                    "internal error: a context-dependent decision was asked without its request"
                        .into(),
                )
            })?;
            let response = authorizer.is_authorized(request, set, entities);
            errors.extend(response.diagnostics().errors().cloned());
            // Cedar's reasons are the satisfied forbids of a deny, or the
            // satisfied permits of an allow.
            let reasons = response.diagnostics().reason().cloned();
            match response.decision() {
                Decision::Allow => permits.extend(reasons),
                Decision::Deny => forbids.extend(reasons),
            }
        }
        let (decision, reasons) = if !forbids.is_empty() {
            (Decision::Deny, forbids)
        } else if !permits.is_empty() {
            (Decision::Allow, permits)
        } else {
            (Decision::Deny, Vec::new())
        };
        Ok(Response::new(
            decision,
            reasons.into_iter().collect(),
            errors,
        ))
    }
}

/// The keys under which a policy matching `uid` may be filed.
fn lookup_keys(uid: &EntityUid, entities: &Entities, with_type: bool) -> Vec<Key> {
    let mut keys = vec![Key::Any, Key::Eq(uid.clone()), Key::In(uid.clone())];
    if with_type {
        keys.push(Key::Is(uid.type_name().clone()));
    }
    if let Some(ancestors) = entities.ancestors(uid) {
        keys.extend(ancestors.map(|a| Key::In(a.clone())));
    }
    keys
}

impl PolicyIndex {
    /// The index of `set`.
    pub fn new(set: &PolicySet) -> Self {
        let policies: Vec<Policy> = set.policies().cloned().collect();
        let mut buckets: Buckets = HashMap::new();
        for (i, p) in policies.iter().enumerate() {
            let pk = principal_key(p.principal_constraint());
            let rk = resource_key(p.resource_constraint());
            let mut aks = action_keys(p.action_constraint());
            aks.dedup();
            for ak in aks {
                buckets
                    .entry(ak)
                    .or_default()
                    .entry(pk.clone())
                    .or_default()
                    .entry(rk.clone())
                    .or_default()
                    .push(i as u32);
            }
        }
        PolicyIndex {
            reads_context: policies.iter().map(reads_context).collect(),
            policies,
            full: set.clone(),
            buckets,
            subsets: RwLock::new(HashMap::new()),
        }
    }

    /// How many policies it indexes.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    /// Whether it indexes none.
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// The policy at a candidate index.
    pub fn policy(&self, index: u32) -> Option<&Policy> {
        self.policies.get(index as usize)
    }

    /// Indices of the policies whose scope may match, sorted, unique.
    pub fn candidates(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
    ) -> Vec<u32> {
        let mut out = Vec::new();
        let action_keys = lookup_keys(action, entities, false);
        let mut principal_keys: Option<Vec<Key>> = None;
        let mut resource_keys: Option<Vec<Key>> = None;
        for ak in &action_keys {
            let Some(by_principal) = self.buckets.get(ak) else {
                continue;
            };
            let pks = principal_keys.get_or_insert_with(|| lookup_keys(principal, entities, true));
            for pk in pks.iter() {
                let Some(by_resource) = by_principal.get(pk) else {
                    continue;
                };
                let rks =
                    resource_keys.get_or_insert_with(|| lookup_keys(resource, entities, true));
                for rk in rks.iter() {
                    if let Some(ids) = by_resource.get(rk) {
                        out.extend_from_slice(ids);
                    }
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The candidates for `principal`, `action` and `resource`, with the
    /// context-free ones decided (on `entities`, which must be the ones
    /// later decisions use).
    pub fn scoped(
        &self,
        principal: &EntityUid,
        action: &EntityUid,
        resource: &EntityUid,
        entities: &Entities,
        authorizer: &Authorizer,
    ) -> Result<Scoped, IndexError> {
        let candidates = self.candidates(principal, action, resource, entities);
        let (dynamic, fixed): (Vec<u32>, Vec<u32>) = candidates
            .iter()
            .partition(|&&i| self.reads_context.get(i as usize).copied().unwrap_or(true));
        let (permits, forbids): (Vec<u32>, Vec<u32>) = fixed
            .iter()
            .partition(|&&i| self.policies[i as usize].effect() == Effect::Permit);
        // The context is never read by these policies; an empty one stands
        // in for any.
        let request = Request::new(
            principal.clone(),
            action.clone(),
            resource.clone(),
            Context::empty(),
            None,
        )
        .map_err(|e| IndexError(e.to_string()))?;
        let mut scoped = Scoped {
            permits: Vec::new(),
            forbids: Vec::new(),
            errors: Vec::new(),
            dynamic: None,
        };
        // Evaluated apart, so that each response's reasons are all of its
        // satisfied policies: over permits alone an allow names every
        // satisfied permit, and over forbids alone a deny every satisfied
        // forbid.
        for (ids, effect) in [(&permits, Effect::Permit), (&forbids, Effect::Forbid)] {
            if ids.is_empty() {
                continue;
            }
            let response = authorizer.is_authorized(&request, &*self.subset(ids)?, entities);
            scoped
                .errors
                .extend(response.diagnostics().errors().cloned());
            let satisfied = response.diagnostics().reason().cloned();
            match effect {
                Effect::Permit => scoped.permits.extend(satisfied),
                Effect::Forbid => scoped.forbids.extend(satisfied),
            }
        }
        if !dynamic.is_empty() {
            scoped.dynamic = Some(self.subset(&dynamic)?);
        }
        Ok(scoped)
    }

    /// The policy set Cedar should evaluate for these candidates.
    pub fn subset(&self, candidates: &[u32]) -> Result<Arc<PolicySet>, IndexError> {
        if let Ok(cache) = self.subsets.read()
            && let Some(s) = cache.get(candidates)
        {
            return Ok(s.clone());
        }
        let mut set = PolicySet::new();
        for &i in candidates {
            let p = &self.policies[i as usize];
            if p.is_static() {
                set.add(p.clone()).map_err(|e| IndexError(e.to_string()))?;
            } else {
                let missing = |what: &str| IndexError(format!("internal error: {what}"));
                let tid = p
                    .template_id()
                    .ok_or_else(|| missing("linked policy without template"))?;
                if set.template(tid).is_none() {
                    let t = self
                        .full
                        .template(tid)
                        .ok_or_else(|| missing("template missing from the set"))?;
                    set.add_template(t.clone())
                        .map_err(|e| IndexError(e.to_string()))?;
                }
                let links = p
                    .template_links()
                    .ok_or_else(|| missing("linked policy without links"))?;
                set.link(tid.clone(), p.id().clone(), links)
                    .map_err(|e| IndexError(e.to_string()))?;
            }
        }
        let set = Arc::new(set);
        if let Ok(mut cache) = self.subsets.write() {
            if cache.len() >= MAX_CACHED_SUBSETS {
                cache.clear();
            }
            cache.insert(candidates.to_vec(), set.clone());
        }
        Ok(set)
    }
}
