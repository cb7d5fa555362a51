//! `[web]`: the address the host's HTTP endpoint (the audit dashboard and
//! `/metrics`) listens on and the token it requires; and the adapters that
//! let the broker count into the host's metrics and the dashboard read the
//! policy set in force.
//!
//! Its own section, not `[http]`'s: `[http]` says what tools may reach,
//! and mixing what the host serves into it would put an inbound listener
//! beside the outbound allow list.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use corral_channels::SecretSource;
use corral_policy::PolicyStore;
use corral_web::{Metrics, PolicyText, PolicyView, Token, WebConfig};
use serde::Deserialize;

use crate::error::ConfigError;
use crate::secrets::Secrets;

/// `[web]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebSection {
    /// `ADDRESS:PORT`; loopback unless a token is set (`127.0.0.1:8787`).
    pub listen: String,
    /// A file holding the token, mode 0600; relative to corral.toml.
    pub token_file: Option<PathBuf>,
    /// An environment variable (or secrets-file entry) holding the token.
    pub token_env: Option<String>,
}

impl WebSection {
    /// The checked configuration: the address parses, at most one token
    /// source is named and it holds a usable token, and a non-loopback
    /// address has one.
    pub(crate) fn resolve(&self, file: &Path, secrets: &Secrets) -> Result<WebConfig, ConfigError> {
        let shown = file.display();
        let listen: SocketAddr = self.listen.parse().map_err(|e| {
            ConfigError(format!(
                "{shown}: web.listen = \"{}\": {e}; write ADDRESS:PORT, e.g. \"127.0.0.1:8787\"",
                self.listen
            ))
        })?;
        let token = match (&self.token_file, &self.token_env) {
            (Some(_), Some(_)) => {
                return Err(ConfigError(format!(
                    "{shown}: [web] names both token_file and token_env; keep one"
                )));
            }
            (Some(path), None) => {
                Some(Token::from_file(path).map_err(|e| ConfigError(format!("{shown}: web.{e}")))?)
            }
            (None, Some(var)) => {
                let value = secrets
                    .require(var, "web.token_env")
                    .map_err(|e| ConfigError(format!("{shown}: {e}")))?;
                Some(
                    Token::new(&value, &format!("web.token_env ({var})"))
                        .map_err(|e| ConfigError(format!("{shown}: {e}")))?,
                )
            }
            (None, None) => None,
        };
        if token.is_none() && !listen.ip().is_loopback() {
            return Err(ConfigError(format!(
                "{shown}: web.listen = \"{listen}\" is not loopback, so [web] needs token_file (mode 0600) or token_env; or listen on 127.0.0.1"
            )));
        }
        Ok(WebConfig { listen, token })
    }

    /// Makes `token_file` absolute against corral.toml's directory.
    pub(crate) fn resolve_paths(&mut self, at: impl Fn(&mut PathBuf)) {
        if let Some(p) = &mut self.token_file {
            at(p);
        }
    }
}

/// The broker's refusals and decision times, counted in the host's
/// metrics (the broker itself knows nothing of Prometheus).
pub(crate) struct BrokerMetrics(pub Arc<Metrics>);

impl corral_broker::CallObserver for BrokerMetrics {
    fn refused(&self, reason: &'static str) {
        self.0.call_refused(reason);
    }

    fn decided(&self, took: Duration) {
        self.0.call_decided(took);
    }
}

/// The policy set in force, as the dashboard shows it: read from the
/// store on each page, so a hot reload shows at once.
pub(crate) struct StorePolicies(pub Arc<PolicyStore>);

impl PolicyView for StorePolicies {
    fn hash(&self) -> String {
        self.0.current().policy_set_hash().to_string()
    }

    fn policies(&self) -> Vec<PolicyText> {
        let engine = self.0.current();
        let loaded = engine.policies();
        let mut out: Vec<PolicyText> = [(&loaded.set, false), (&loaded.shadow, true)]
            .into_iter()
            .flat_map(|(set, shadow)| set.policies().map(move |p| (p, shadow)))
            .map(|(p, shadow)| {
                let id = p.id().to_string();
                PolicyText {
                    location: engine.policy_location(&id).unwrap_or_default(),
                    text: p.to_string(),
                    id,
                    shadow,
                }
            })
            .collect();
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn secrets(pairs: &[(&str, &str)]) -> Secrets {
        Secrets {
            file: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            file_path: None,
        }
    }

    fn section(listen: &str, env: Option<&str>) -> WebSection {
        WebSection {
            listen: listen.into(),
            token_file: None,
            token_env: env.map(str::to_string),
        }
    }

    #[test]
    fn anything_but_loopback_needs_a_token() {
        let file = Path::new("corral.toml");
        let none = secrets(&[]);
        assert!(section("127.0.0.1:0", None).resolve(file, &none).is_ok());
        assert!(section("[::1]:8787", None).resolve(file, &none).is_ok());
        let e = section("0.0.0.0:8787", None)
            .resolve(file, &none)
            .unwrap_err()
            .0;
        assert!(e.contains("not loopback") && e.contains("token_env"), "{e}");
        let with = secrets(&[("CORRAL_WEB_TOKEN_T", "0123456789abcdef0123")]);
        let ok = section("0.0.0.0:8787", Some("CORRAL_WEB_TOKEN_T"))
            .resolve(file, &with)
            .unwrap();
        assert!(ok.token.is_some_and(|t| t.matches("0123456789abcdef0123")));
        let e = section("localhost:8787", None)
            .resolve(file, &none)
            .unwrap_err()
            .0;
        assert!(
            e.contains("web.listen") && e.contains("127.0.0.1:8787"),
            "{e}"
        );
        let short = secrets(&[("CORRAL_WEB_TOKEN_T", "short")]);
        let e = section("0.0.0.0:8787", Some("CORRAL_WEB_TOKEN_T"))
            .resolve(file, &short)
            .unwrap_err()
            .0;
        assert!(e.contains("at least 16"), "{e}");
    }
}
