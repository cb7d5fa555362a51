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
    /// port, or `localhost`). The grammar is the distribution spec's, checked
    /// by hand: `oci-client`'s own parser compiles a large regex on first
    /// use, which slowed `corral up` (`ARCHITECTURE.md`, performance notes).
    pub fn parse(text: &str) -> Result<Self, DistributionError> {
        let bad = |problem: String| DistributionError::BadReference {
            reference: text.to_string(),
            problem,
        };
        let (rest, digest) = match text.rsplit_once('@') {
            Some((rest, d)) if crate::layout::is_sha256_digest(d) => (rest, Some(d)),
            Some((_, d)) => return Err(bad(format!("`{d}` is not a sha256 digest"))),
            None => (text, None),
        };
        let Some((registry, path)) = rest.split_once('/') else {
            return Err(bad("it does not start with a registry".into()));
        };
        if !(registry.contains('.') || registry.contains(':') || registry == "localhost") {
            return Err(bad(format!(
                "it does not start with a registry (`{registry}` is not a host name with a dot, a host:port, or localhost)"
            )));
        }
        if !valid_registry(registry) {
            return Err(bad(format!("`{registry}` is not a host or host:port")));
        }
        let last = path.rsplit('/').next().unwrap_or(path);
        let (repository, tag) = match last.rsplit_once(':') {
            Some((_, t)) => (&path[..path.len() - t.len() - 1], Some(t)),
            None => (path, None),
        };
        if !valid_repository(repository) {
            return Err(bad(format!(
                "`{repository}` is not a repository name: lowercase letters and digits, separated by `.`, `_`, `__`, `-` or `/`"
            )));
        }
        if let Some(t) = tag
            && !valid_tag(t)
        {
            return Err(bad(format!(
                "`{t}` is not a tag: up to 128 letters, digits, `_`, `.` and `-`, not starting with `.` or `-`"
            )));
        }
        let (registry, repository) = (registry.to_string(), repository.to_string());
        let oci = match (tag, digest) {
            (Some(t), Some(d)) => {
                Reference::with_tag_and_digest(registry, repository, t.into(), d.into())
            }
            (Some(t), None) => Reference::with_tag(registry, repository, t.into()),
            (None, Some(d)) => Reference::with_digest(registry, repository, d.into()),
            (None, None) => Reference::with_tag(registry, repository, "latest".into()),
        };
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

/// `host`, `host:port` or `[ipv6]:port`.
fn valid_registry(registry: &str) -> bool {
    let (host, port) = match registry.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((ip, after)) => {
                if ip.parse::<std::net::Ipv6Addr>().is_err() {
                    return false;
                }
                (None, after.strip_prefix(':'))
            }
            None => return false,
        },
        None => match registry.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(registry), None),
        },
    };
    let host_ok = host.is_none_or(|h| {
        !h.is_empty()
            && h.split('.').all(|label| {
                !label.is_empty()
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            })
    });
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// Path components of `[a-z0-9]+` joined by `.`, `_`, `__` or dashes.
fn valid_repository(repository: &str) -> bool {
    !repository.is_empty()
        && repository.len() <= 255
        && repository.split('/').all(|component| {
            let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
            let mut parts = component.split(|c: char| !alnum(c));
            let separators_ok = component.split(alnum).filter(|s| !s.is_empty()).all(|sep| {
                sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|b| b == b'-')
            });
            component.starts_with(alnum)
                && component.ends_with(alnum)
                && separators_ok
                && parts.all(|p| p.is_empty() || p.chars().all(alnum))
        })
}

/// `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`.
fn valid_tag(tag: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    !tag.is_empty()
        && tag.len() <= 128
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || b == b'.' || b == b'-')
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
    fn malformed_names_tags_and_digests_are_refused() {
        for text in [
            "ghcr.io/Acme/echo:1",
            "ghcr.io/acme//echo:1",
            "ghcr.io/acme/echo-:1",
            "ghcr.io/acme/echo:-1",
            "ghcr.io/acme/echo:1@sha256:short",
            "ghcr.io/acme/echo:1@md5:0000",
            "bad_host.io/acme/echo:1",
            "ghcr.io:port/acme/echo:1",
        ] {
            assert!(ToolReference::parse(text).is_err(), "{text}");
        }
        for text in [
            "ghcr.io/acme/my_tool.v2/echo-x:1.0_rc-1",
            "[::1]:5000/tools/echo",
            "localhost:5000/a__b/c",
        ] {
            assert!(ToolReference::parse(text).is_ok(), "{text}");
        }
        assert_eq!(
            ToolReference::parse("localhost/x").unwrap().tag(),
            Some("latest")
        );
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
