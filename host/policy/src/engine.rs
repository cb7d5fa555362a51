//! The policy engine: schema, validated policies, entities and the index
//! held together, and fail-closed decisions over them.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use cedar_policy::{Authorizer, Context, Entities, EntityUid, PolicySet, Request, Response};
use serde_json::{Value, json};

use crate::approval::Approvers;
use crate::decision::{Decision, RequestError};
use crate::index::{IndexError, PolicyIndex, Scoped};
use crate::load::{CombinedSchema, LoadErrors, Problem};
use crate::loaded::{LoadedPolicies, PolicyIds, load_policies_with, read_policy_dir};
use crate::request::{Common, RequestEntity, uid};
use crate::schema::ToolAction;

mod outcome;

/// The `approve` action's request: a person answering an agent's call.
#[derive(Debug, Clone)]
pub struct ApproveRequest<'a> {
    /// The person answering, as a `User` (with `channel_kind`).
    pub user: &'a RequestEntity,
    /// The agent whose call asks.
    pub agent: &'a str,
    /// The tool it called.
    pub tool: &'a str,
    /// The call's arguments, as JSON text.
    pub arguments: &'a str,
    /// The person who sent the message the agent was working on, if one.
    pub requested_by: Option<&'a str>,
    /// The approval permits that asked.
    pub asked_by: &'a [String],
    /// The request's common context.
    pub common: &'a Common,
}

/// Everything needed to decide: schema, policies, entities, index.
pub struct PolicyEngine {
    schema: CombinedSchema,
    policies: LoadedPolicies,
    index: PolicyIndex,
    entities: Entities,
    tools: BTreeMap<String, ToolAction>,
    authorizer: Authorizer,
    /// The set with its `@shadow` policies enforced; `None` when there are
    /// none, so that a set without them pays nothing.
    with_shadow: Option<PolicySet>,
    /// The policies prepared to explain denials, on the first one.
    explainer: std::sync::OnceLock<crate::explain::Explainer>,
    /// agent → tool → its call's candidates, context-free ones decided:
    /// built on an agent's first call of a tool, valid for this engine's
    /// life (a reload builds a new engine).
    tool_calls: RwLock<HashMap<String, HashMap<String, Arc<Scoped>>>>,
}

/// `tool_calls` is cleared when it holds this many entries; agents and
/// tools are both bounded by configuration, so only a misconfiguration
/// (or a test) reaches it.
const MAX_SCOPED_TOOL_CALLS: usize = 1 << 16;

impl std::fmt::Debug for PolicyEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyEngine")
            .field("policies", &self.index.len())
            .field("hash", &self.policies.hash)
            .finish()
    }
}

/// Inputs to build an engine from disk.
#[derive(Debug, Clone)]
pub struct EngineSources {
    /// The base schema file (`schema.cedarschema`).
    pub schema_file: PathBuf,
    /// The directory of `.cedar` files.
    pub policy_dir: PathBuf,
    /// Each loaded tool's typed action.
    pub tools: Vec<ToolAction>,
    /// Cedar entities JSON (an array of entities); actions come from the
    /// schema.
    pub entities: Value,
}

impl PolicyEngine {
    /// Builds an engine; every problem in the schema, the policies or the
    /// entities is reported with its location.
    pub fn load(sources: &EngineSources) -> Result<Self, LoadErrors> {
        Self::load_with(sources, PolicyIds::Required)
    }

    /// [`Self::load`], naming policies as `ids` says: `Positional` only for
    /// sets written for plain Cedar, in `corral policy test`.
    pub fn load_with(sources: &EngineSources, ids: PolicyIds) -> Result<Self, LoadErrors> {
        let schema = CombinedSchema::build(&sources.schema_file, &sources.tools)?;
        let files = read_policy_dir(&sources.policy_dir)?;
        let policies = load_policies_with(&files, &schema.schema, ids)?;
        Self::from_loaded(
            schema,
            policies,
            sources.tools.clone(),
            sources.entities.clone(),
        )
    }

    /// An engine from a schema and policy texts already read, each with the file it came from (for locations in errors).
    pub fn from_parts(
        schema: CombinedSchema,
        files: &[(PathBuf, String)],
        tools: Vec<ToolAction>,
        entities: Value,
    ) -> Result<Self, LoadErrors> {
        let policies = load_policies_with(files, &schema.schema, PolicyIds::Required)?;
        Self::from_loaded(schema, policies, tools, entities)
    }

    /// An engine from policies already loaded.
    fn from_loaded(
        schema: CombinedSchema,
        policies: LoadedPolicies,
        tools: Vec<ToolAction>,
        entities: Value,
    ) -> Result<Self, LoadErrors> {
        let entities = crate::provenance::with_tool_provenance(
            entities,
            tools
                .iter()
                .map(|t| (t.name.as_str(), t.provenance.as_ref())),
        );
        let entities = Entities::from_json_value(entities, Some(&schema.schema)).map_err(|e| {
            LoadErrors(vec![Problem {
                location: None,
                policy_id: None,
                message: format!("entities: {e}"),
                help: None,
            }])
        })?;
        let index = PolicyIndex::new(&policies.set);
        let with_shadow = (!policies.shadow.is_empty()).then(|| policies.with_shadow());
        Ok(PolicyEngine {
            with_shadow,
            explainer: std::sync::OnceLock::new(),
            schema,
            index,
            policies,
            entities,
            tools: tools.into_iter().map(|t| (t.name.clone(), t)).collect(),
            authorizer: Authorizer::new(),
            tool_calls: Default::default(),
        })
    }

    /// The schema, base and tools together.
    pub fn schema(&self) -> &CombinedSchema {
        &self.schema
    }

    /// The validated policies and their hash.
    pub fn policies(&self) -> &LoadedPolicies {
        &self.policies
    }

    /// The entities decisions see.
    pub fn entities(&self) -> &Entities {
        &self.entities
    }

    /// The hash that names this policy set in every record it decides.
    pub fn policy_set_hash(&self) -> &str {
        &self.policies.hash
    }

    /// How many policies the set holds.
    pub fn policy_count(&self) -> usize {
        self.index.len()
    }

    /// Where a policy came from, for explanations.
    pub fn policy_location(&self, id: &str) -> Option<String> {
        self.policies.origins.get(id).map(|o| o.start().to_string())
    }

    /// Builds a request validated against the schema.
    pub fn request(
        &self,
        principal: EntityUid,
        action: EntityUid,
        resource: EntityUid,
        context: Value,
    ) -> Result<Request, RequestError> {
        // Parsed without the schema: `Request::new` below validates the
        // context against the action's declared type (and is the check that
        // rejects wrong types), so validating here too only doubled the cost
        // of building a request. The context holds only strings, longs,
        // booleans, sets and records, which parse the same either way.
        let context = Context::from_json_value(context, None)
            .map_err(|e| RequestError::Invalid(e.to_string()))?;
        Request::new(
            principal,
            action,
            resource,
            context,
            Some(&self.schema.schema),
        )
        .map_err(|e| RequestError::Invalid(e.to_string()))
    }

    /// The request for `agent` calling `tool` with `input`.
    ///
    /// Every part is built here with the types the schema declares for the
    /// tool's action: `Agent`, `Tool`, `common` from `Common`, and `input`
    /// converted against the derived Cedar type (which refuses any
    /// mismatch). So the request is not validated against the schema
    /// again: that cost about twice the indexed decision itself.
    /// `tool_requests_agree_with_schema_validation` checks, through
    /// [`Self::tool_request_checked`], that the schema accepts what this
    /// builds.
    pub fn tool_request(
        &self,
        agent: &str,
        tool: &str,
        input: &Value,
        common: &Common,
    ) -> Result<Request, RequestError> {
        self.build_tool_request(agent, tool, input, common, None)
    }

    /// [`Self::tool_request`], validated against the schema.
    pub fn tool_request_checked(
        &self,
        agent: &str,
        tool: &str,
        input: &Value,
        common: &Common,
    ) -> Result<Request, RequestError> {
        self.build_tool_request(agent, tool, input, common, Some(&self.schema.schema))
    }

    fn build_tool_request(
        &self,
        agent: &str,
        tool: &str,
        input: &Value,
        common: &Common,
        schema: Option<&cedar_policy::Schema>,
    ) -> Result<Request, RequestError> {
        let action = self
            .tools
            .get(tool)
            .ok_or_else(|| RequestError::UnknownTool(tool.to_string()))?;
        let typed =
            action
                .input
                .to_expr(input, "input")
                .map_err(|problem| RequestError::InvalidInput {
                    tool: tool.to_string(),
                    problem: problem.to_string(),
                })?;
        let context = Context::from_pairs([
            ("common".to_string(), common.expr()),
            ("input".to_string(), typed),
        ])
        .map_err(|e| RequestError::Invalid(e.to_string()))?;
        Request::new(
            uid("Agent", agent),
            uid("Action", tool),
            uid("Tool", tool),
            context,
            schema,
        )
        .map_err(|e| RequestError::Invalid(e.to_string()))
    }

    /// The decision on `agent` calling `tool` with `input`: the same as
    /// [`Self::authorize`] of [`Self::tool_request`], and refused with the
    /// same errors, but cheaper. The candidates that do not read the
    /// context are decided on an agent's first call of a tool; later calls
    /// evaluate only the policies that read the context (none, for a tool
    /// its policies grant outright), and build the Cedar request only if
    /// there are any. The input is checked against the tool's type either
    /// way.
    pub fn decide_tool_call(
        &self,
        agent: &str,
        tool: &str,
        input: &Value,
        common: &Common,
    ) -> Result<Decision, RequestError> {
        let action = self
            .tools
            .get(tool)
            .ok_or_else(|| RequestError::UnknownTool(tool.to_string()))?;
        let invalid = |problem: crate::SchemaError| RequestError::InvalidInput {
            tool: tool.to_string(),
            problem: problem.0,
        };
        let scoped = match self.scoped_tool_call(agent, tool) {
            Ok(s) => s,
            Err(refusal) => {
                action.input.check(input, "input").map_err(invalid)?;
                return Ok(*refusal);
            }
        };
        let (response, request) = if scoped.needs_context() {
            let request = self.tool_request(agent, tool, input, common)?;
            let response = scoped.decide(Some(&request), &self.authorizer, &self.entities);
            (response, Some(request))
        } else {
            action.input.check(input, "input").map_err(invalid)?;
            let response = scoped.decide(None, &self.authorizer, &self.entities);
            (response, None)
        };
        let decision = match response {
            Ok(r) => self.decision(&r),
            Err(e) => return Ok(self.refuse(e.to_string())),
        };
        if decision.verdict() != "deny" && self.with_shadow.is_none() {
            return Ok(decision);
        }
        // A denial, or a set with shadow policies: now, and only now, the
        // request is built if the fast path did without it.
        let request = match request {
            Some(r) => r,
            None => self.tool_request(agent, tool, input, common)?,
        };
        let decision = self.shadowed(decision, &request, &self.entities);
        Ok(self.explained(decision, &request, &self.entities))
    }

    /// `tool_calls`' entry for `agent` and `tool`, built if missing; a
    /// refusal for an unknown agent, as [`Self::authorize`] gives.
    fn scoped_tool_call(&self, agent: &str, tool: &str) -> Result<Arc<Scoped>, Box<Decision>> {
        if let Ok(cache) = self.tool_calls.read()
            && let Some(s) = cache.get(agent).and_then(|by_tool| by_tool.get(tool))
        {
            return Ok(s.clone());
        }
        let principal = uid("Agent", agent);
        if self.entities.ancestors(&principal).is_none() {
            return Err(Box::new(
                self.refuse(format!("unknown principal {principal}")),
            ));
        }
        let scoped = self
            .index
            .scoped(
                &principal,
                &uid("Action", tool),
                &uid("Tool", tool),
                &self.entities,
                &self.authorizer,
            )
            .map(Arc::new)
            .map_err(|e| Box::new(self.refuse(e.to_string())))?;
        if let Ok(mut cache) = self.tool_calls.write() {
            if cache.values().map(HashMap::len).sum::<usize>() >= MAX_SCOPED_TOOL_CALLS {
                cache.clear();
            }
            cache
                .entry(agent.to_string())
                .or_default()
                .insert(tool.to_string(), scoped.clone());
        }
        Ok(scoped)
    }

    /// Whether `agent` could be allowed to call `tool` for some input: a
    /// permit's scope covers the call, and no forbid without conditions
    /// does. Conditions are not evaluated (they depend on the input), so
    /// this over-approximates; every call is still authorized in full. It is
    /// what `tools/list` shows an agent.
    pub fn may_call(&self, agent: &str, tool: &str) -> bool {
        if !self.tools.contains_key(tool) {
            return false;
        }
        let principal = uid("Agent", agent);
        if self.entities.ancestors(&principal).is_none() {
            return false;
        }
        let candidates = self.index.candidates(
            &principal,
            &uid("Action", tool),
            &uid("Tool", tool),
            &self.entities,
        );
        let mut permitted = false;
        for i in candidates {
            let Some(policy) = self.index.policy(i) else {
                continue;
            };
            match policy.effect() {
                cedar_policy::Effect::Permit => permitted = true,
                cedar_policy::Effect::Forbid if !policy.has_non_scope_constraint() => {
                    return false;
                }
                cedar_policy::Effect::Forbid => {}
            }
        }
        permitted
    }

    /// Whether `user` (a `User` id) is among `approvers` for a call made
    /// while its agent works on a message from `sender`. A group counts
    /// only the entities file's members: a person known only at request
    /// time is in no group.
    pub fn names_approver(&self, approvers: &Approvers, user: &str, sender: Option<&str>) -> bool {
        match approvers {
            Approvers::Sender => sender == Some(user),
            Approvers::Group(group) => {
                let group = uid("Group", group);
                self.entities
                    .ancestors(&uid("User", user))
                    .is_some_and(|mut a| a.any(|g| *g == group))
            }
        }
    }

    /// Decides the `approve` action: may `request.user` answer `agent`'s
    /// call of `tool`? Fail-closed like [`Self::decide`].
    pub fn decide_approve(&self, request: &ApproveRequest<'_>) -> Decision {
        let mut context = json!({
            "common": request.common.to_json(),
            "tool": request.tool,
            "arguments": request.arguments,
            "asked_by": request.asked_by,
        });
        if let Some(sender) = request.requested_by {
            context["requested_by"] = json!({ "__entity": { "type": "User", "id": sender } });
        }
        self.decide(
            uid("User", &request.user.id),
            "approve",
            uid("Agent", request.agent),
            context,
            std::slice::from_ref(request.user),
        )
    }

    /// Decides whether `agent`'s container may mount `host_path` (already
    /// canonicalized and screened by the sandbox), writable or not.
    pub fn decide_mount(
        &self,
        agent: &str,
        host_path: &str,
        writable: bool,
        common: &Common,
    ) -> Decision {
        self.decide(
            uid("Agent", agent),
            "mount",
            uid("HostPath", host_path),
            json!({ "common": common.to_json(), "writable": writable }),
            &[],
        )
    }

    /// Decides `action` for a principal and resource that may be known only
    /// now (a Slack user, a channel): `extra` entities join the store for
    /// this one decision and never replace an entity it already holds.
    /// Fail-closed like [`Self::authorize`].
    pub fn decide(
        &self,
        principal: EntityUid,
        action: &str,
        resource: EntityUid,
        context: Value,
        extra: &[RequestEntity],
    ) -> Decision {
        let request = match self.request(principal, uid("Action", action), resource, context) {
            Ok(r) => r,
            Err(e) => return self.refuse(e.to_string()),
        };
        let fresh: Vec<Value> = extra
            .iter()
            .filter(|e| self.entities.ancestors(&uid(&e.ty, &e.id)).is_none())
            .map(RequestEntity::to_json)
            .collect();
        if fresh.is_empty() {
            return self.authorize(&request);
        }
        let merged = Entities::from_json_value(Value::Array(fresh), Some(&self.schema.schema))
            .map_err(|e| e.to_string())
            .and_then(|new| {
                self.entities
                    .clone()
                    .add_entities(new, Some(&self.schema.schema))
                    .map_err(|e| e.to_string())
            });
        let entities = match merged {
            Ok(e) => e,
            Err(e) => return self.refuse(format!("request entities: {e}")),
        };
        self.authorize_in(&request, &entities)
    }

    /// Decides a request: indexed, and fail-closed.
    pub fn authorize(&self, request: &Request) -> Decision {
        self.authorize_in(request, &self.entities)
    }

    /// [`Self::authorize`] against `entities` (the store, or the store plus
    /// request-time entities).
    fn authorize_in(&self, request: &Request, entities: &Entities) -> Decision {
        // Cedar can allow a principal that is missing from the store when a
        // policy does not look at its attributes; an unknown agent must
        // never be allowed anything.
        if let Some(p) = request.principal()
            && entities.ancestors(p).is_none()
        {
            return self.refuse(format!("unknown principal {p}"));
        }
        match self.evaluate(request, entities) {
            Ok(response) => {
                let decision = self.shadowed(self.decision(&response), request, entities);
                self.explained(decision, request, entities)
            }
            Err(e) => self.refuse(e.to_string()),
        }
    }

    /// Cedar's own response over the indexed subset: identical to
    /// `is_authorized` over the whole set (see `tests/differential.rs`).
    pub fn authorize_raw(&self, request: &Request) -> Result<Response, IndexError> {
        self.evaluate(request, &self.entities)
    }

    fn evaluate(&self, request: &Request, entities: &Entities) -> Result<Response, IndexError> {
        let (Some(p), Some(a), Some(r)) =
            (request.principal(), request.action(), request.resource())
        else {
            return Err(IndexError(
                "request has an unknown principal, action or resource".into(),
            ));
        };
        let candidates = self.index.candidates(p, a, r, entities);
        let subset = self.index.subset(&candidates)?;
        Ok(self.authorizer.is_authorized(request, &subset, entities))
    }
}
