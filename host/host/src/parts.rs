//! What `corral.toml`'s sections become before anything starts: the
//! entities (with one `Agent` per configured agent), the model clients
//! (their keys resolved), the tool sources (see `tool_sources.rs`), the internal networks
//! tools may reach, and the broker's limits.

use std::sync::Arc;
use std::time::Duration;

use corral_audit::Durability;
use corral_broker::{BrokerLimits, Models};
use corral_models::{ApiKey, ModelClient, ModelEndpoint, Provider};
use corral_policy::read_entities;
use corral_tools::{Cidr, InternalNetworks};
use serde_json::{Value, json};

use crate::config::{DurabilityName, HostConfig, ProviderName};
use crate::error::HostError;
use corral_channels::SecretSource;

use crate::secrets::Secrets;

/// entities.json, plus an `Agent` (with its `Workspace` and `Team`) for each
/// configured agent the file does not already describe.
pub(crate) fn entities(config: &HostConfig) -> Result<Value, HostError> {
    let file = config.policies.join("entities.json");
    let mut list = match read_entities(&file).map_err(|e| HostError::Setup(e.to_string()))? {
        Value::Array(list) => list,
        _ => {
            return Err(HostError::Setup(format!(
                "{}: must be a JSON array of entities",
                file.display()
            )));
        }
    };
    let has = |list: &[Value], ty: &str, id: &str| {
        list.iter()
            .any(|e| e["uid"]["type"] == ty && e["uid"]["id"] == id)
    };
    for agent in &config.agents {
        if !has(&list, "Workspace", &agent.id) {
            list.push(json!({ "uid": { "type": "Workspace", "id": agent.id }, "attrs": {}, "parents": [] }));
        }
        if let Some(team) = &agent.team
            && !has(&list, "Team", team)
        {
            list.push(json!({ "uid": { "type": "Team", "id": team }, "attrs": {}, "parents": [] }));
        }
        if !has(&list, "Agent", &agent.id) {
            let parents: Vec<Value> = agent
                .team
                .iter()
                .map(|t| json!({ "type": "Team", "id": t }))
                .collect();
            list.push(json!({
                "uid": { "type": "Agent", "id": agent.id },
                "attrs": { "workspace": { "__entity": { "type": "Workspace", "id": agent.id } } },
                "parents": parents,
            }));
        }
    }
    Ok(Value::Array(list))
}

/// A client for each configured model, its API key resolved.
pub(crate) fn models(config: &HostConfig, secrets: &Secrets) -> Result<Models, HostError> {
    let mut out = Models::new();
    for (name, m) in &config.models {
        let (provider, default_url) = match m.provider {
            ProviderName::Anthropic => (Provider::Anthropic, "https://api.anthropic.com"),
            ProviderName::Openai => (Provider::OpenAi, "https://api.openai.com/v1"),
        };
        let api_key = match &m.api_key_env {
            Some(var) => Some(ApiKey::new(
                secrets.require(var, &format!("models.{name}.api_key_env"))?,
            )),
            None => None,
        };
        let client = ModelClient::new(ModelEndpoint {
            name: name.clone(),
            provider,
            base_url: m.base_url.clone().unwrap_or_else(|| default_url.into()),
            model: m.model.clone(),
            api_key,
            max_tokens: m.max_tokens,
            timeout: Duration::from_secs(m.timeout_secs),
        })?;
        out.insert(name.clone(), Arc::new(client));
    }
    Ok(out)
}

/// The secrets tools may place into requests, by name.
pub(crate) fn tool_secrets(
    config: &HostConfig,
    secrets: &Secrets,
) -> Result<corral_gate::StaticSecrets, HostError> {
    let mut out = corral_gate::StaticSecrets::new();
    for (name, var) in &config.secrets {
        out = out.with(name, secrets.require(var, &format!("secrets.{name}"))?);
    }
    Ok(out)
}

/// `[[http.internal]]`: each host group's ranges opened to the hosts in
/// it, as entities.json has them when the host starts (a later edit of
/// the file reaches policies, not these ranges, until a restart).
pub(crate) fn internal_networks(
    config: &HostConfig,
    entities: &Value,
) -> Result<InternalNetworks, HostError> {
    let mut networks = InternalNetworks::default();
    let list = entities.as_array().map(Vec::as_slice).unwrap_or_default();
    let parent_groups = |e: &Value| -> Vec<String> {
        e["parents"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .filter(|p| p["type"] == "HostGroup")
            .filter_map(|p| p["id"].as_str().map(str::to_string))
            .collect()
    };
    for internal in &config.http.internal {
        // The group and every group inside it, transitively.
        let mut groups = std::collections::BTreeSet::from([internal.host_group.clone()]);
        loop {
            let before = groups.len();
            for e in list.iter().filter(|e| e["uid"]["type"] == "HostGroup") {
                if parent_groups(e).iter().any(|g| groups.contains(g))
                    && let Some(id) = e["uid"]["id"].as_str()
                {
                    groups.insert(id.to_string());
                }
            }
            if groups.len() == before {
                break;
            }
        }
        let hosts: Vec<String> = list
            .iter()
            .filter(|e| e["uid"]["type"] == "Host")
            .filter(|e| parent_groups(e).iter().any(|g| groups.contains(g)))
            .filter_map(|e| e["uid"]["id"].as_str().map(str::to_string))
            .collect();
        if hosts.is_empty() {
            return Err(HostError::Setup(format!(
                "http.internal: host group `{}` has no hosts in {}; add Host entities with it as a parent, or remove the entry",
                internal.host_group,
                config.policies.join("entities.json").display()
            )));
        }
        let ranges = internal
            .ranges
            .iter()
            .map(|r| r.parse::<Cidr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                HostError::Setup(format!(
                    "http.internal (host_group `{}`): {e}",
                    internal.host_group
                ))
            })?;
        tracing::warn!(group = %internal.host_group, ?hosts, ranges = ?internal.ranges, "internal address ranges opened to tools");
        networks = networks.allow(hosts, ranges);
    }
    Ok(networks)
}

/// The audit log's durability, from `durability`.
pub(crate) fn durability(config: &HostConfig) -> Durability {
    match config.durability {
        DurabilityName::Strict => Durability::Strict,
        DurabilityName::Batched => Durability::Batched {
            window: Duration::from_millis(10),
        },
    }
}

/// The broker's limits, from `[broker]`.
pub(crate) fn broker_limits(config: &HostConfig) -> BrokerLimits {
    BrokerLimits {
        rate_per_second: config.broker.rate_per_second,
        rate_burst: config.broker.rate_burst,
        max_in_flight: config.broker.max_in_flight,
        max_connections: config.broker.max_connections,
        call_timeout: Duration::from_millis(config.broker.call_timeout_ms),
        ..BrokerLimits::default()
    }
}
