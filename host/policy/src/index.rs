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
//! `tests/differential.rs` checks this against plain `is_authorized` over
//! random policy sets and requests.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use cedar_policy::{
    ActionConstraint, Entities, EntityTypeName, EntityUid, Policy, PolicySet, PrincipalConstraint,
    ResourceConstraint,
};

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Any,
    Eq(EntityUid),
    In(EntityUid),
    Is(EntityTypeName),
}

/// action key → principal key → resource key → policies.
type Buckets = HashMap<Key, HashMap<Key, HashMap<Key, Vec<u32>>>>;

/// Cached subsets stop growing here and are rebuilt from scratch; a bound
/// keeps a stream of unusual requests from growing memory without limit.
const MAX_CACHED_SUBSETS: usize = 4096;

pub struct PolicyIndex {
    policies: Vec<Policy>,
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
            policies,
            full: set.clone(),
            buckets,
            subsets: RwLock::new(HashMap::new()),
        }
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

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

    /// The policy set Cedar should evaluate for these candidates.
    pub fn subset(&self, candidates: &[u32]) -> Result<Arc<PolicySet>, String> {
        if let Ok(cache) = self.subsets.read()
            && let Some(s) = cache.get(candidates)
        {
            return Ok(s.clone());
        }
        let mut set = PolicySet::new();
        for &i in candidates {
            let p = &self.policies[i as usize];
            if p.is_static() {
                set.add(p.clone()).map_err(|e| e.to_string())?;
            } else {
                let tid = p.template_id().ok_or("linked policy without template")?;
                if set.template(tid).is_none() {
                    let t = self
                        .full
                        .template(tid)
                        .ok_or("template missing from the set")?;
                    set.add_template(t.clone()).map_err(|e| e.to_string())?;
                }
                let links = p.template_links().ok_or("linked policy without links")?;
                set.link(tid.clone(), p.id().clone(), links)
                    .map_err(|e| e.to_string())?;
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
