//! A tool's OCI reference, `REGISTRY/REPOSITORY:TAG[@sha256:DIGEST]`, with
//! the registry always written out: Corral never guesses Docker Hub.

use std::fmt;
use std::net::IpAddr;

use oci_client::Reference;

use crate::error::DistributionError;

/// A parsed reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolReference {
    text: String,
    oci: Reference,
}

impl ToolReference {
    /// Parses `text`, which must name its registry (a host with a `.` or a
    /// port, or `localhost`).
    pub fn parse(text: &str) -> Result<Self, DistributionError> {
        let bad = |problem: String| DistributionError::BadReference {
            reference: text.to_string(),
            problem,
        };
        let first = text.split('/').next().unwrap_or_default();
        if !text.contains('/')
            || !(first.contains('.') || first.contains(':') || first == "localhost")
        {
            return Err(bad(format!(
                "it does not start with a registry (`{first}` is not a host name with a dot, a host:port, or localhost)"
            )));
        }
        let oci: Reference = text.parse().map_err(|e| bad(format!("{e}")))?;
        if let Some(d) = oci.digest()
            && !crate::layout::is_sha256_digest(d)
        {
            return Err(bad(format!("`{d}` is not a sha256 digest")));
        }
        Ok(ToolReference {
            text: text.to_string(),
            oci,
        })
    }

    /// The registry, `host[:port]`.
    pub fn registry(&self) -> &str {
        self.oci.registry()
    }

    /// The repository, without registry, tag or digest.
    pub fn repository(&self) -> &str {
        self.oci.repository()
    }

    /// `REGISTRY/REPOSITORY`: what a signature's identity names.
    pub fn repository_name(&self) -> String {
        format!("{}/{}", self.registry(), self.repository())
    }

    /// The pinned digest, if the reference has one.
    pub fn digest(&self) -> Option<&str> {
        self.oci.digest()
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.oci.tag()
    }

    /// The same reference pinned to `digest`, keeping the tag for display.
    pub fn pinned(&self, digest: &str) -> ToolReference {
        let tag = self.tag().map(|t| format!(":{t}")).unwrap_or_default();
        let text = format!("{}{tag}@{digest}", self.repository_name());
        ToolReference {
            oci: self.oci.clone_with_digest(digest.to_string()),
            text,
        }
    }

    /// Whether the registry is on this machine.
    pub fn is_loopback(&self) -> bool {
        let registry = self.registry();
        let host = match registry.strip_prefix('[') {
            Some(rest) => rest.split(']').next().unwrap_or(rest),
            None => registry
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(registry),
        };
        host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    }

    pub(crate) fn oci(&self) -> &Reference {
        &self.oci
    }
}

impl fmt::Display for ToolReference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    #[test]
    fn a_reference_names_its_registry() {
        let r = ToolReference::parse(&format!("127.0.0.1:5000/tools/echo:1.0@{D}")).unwrap();
        assert_eq!(r.registry(), "127.0.0.1:5000");
        assert_eq!(r.repository(), "tools/echo");
        assert_eq!(r.tag(), Some("1.0"));
        assert_eq!(r.digest(), Some(D));
        assert!(r.is_loopback());
        assert!(
            !ToolReference::parse("ghcr.io/acme/echo:1")
                .unwrap()
                .is_loopback()
        );
        assert!(ToolReference::parse("localhost/x:1").unwrap().is_loopback());
    }

    #[test]
    fn a_reference_without_a_registry_is_refused_not_sent_to_docker_hub() {
        for text in ["echo:1", "acme/echo:1", ""] {
            let err = ToolReference::parse(text).unwrap_err().to_string();
            assert!(err.contains("registry"), "{text}: {err}");
        }
    }

    #[test]
    fn pinning_keeps_the_tag_for_people() {
        let r = ToolReference::parse("ghcr.io/acme/echo:1")
            .unwrap()
            .pinned(D);
        assert_eq!(r.to_string(), format!("ghcr.io/acme/echo:1@{D}"));
        assert_eq!(r.digest(), Some(D));
    }
}
