//! Agent containers on the Docker Engine API.
//!
//! [`AgentImage`] builds the default agent image from `agent-image/`
//! (a tar build context sent to the engine; no registry needed), tagged by
//! the context's digest. [`Docker`] wraps bollard with errors that say what
//! to do, and [`ContainerSpec`] is the hardened shape of every agent
//! container: no network, read-only root, no capabilities, no new
//! privileges, a non-root user, memory/CPU/pids limits, a small `/tmp`,
//! and exactly two mounts — the workspace and the broker-socket directory.
//!
//! [`ContainerBackend`] is what the rest of Corral needs from an engine;
//! [`Docker`] implements it. [`Supervisor`] keeps each agent's container
//! in the state it should be in (start on demand, stop when idle, restart
//! with backoff after a crash, reconcile by label after a host restart).
//! Extra mounts are screened here ([`screen_mount`]) and decided by Cedar's
//! `mount` action.

mod backend;
mod disk;
mod docker;
mod image;
mod lifecycle;
mod mounts;
mod spec;

pub use backend::{ContainerBackend, ContainerInfo, SandboxError};
pub use disk::{AgentDisk, DiskError, MountEntry, Mounted, mounts, parse_mountinfo, socket_tmpfs};
pub use docker::{Docker, Exited};
pub use image::{AgentImage, IMAGE_REPO};
pub use lifecycle::{Event, LifecyclePolicy, Supervisor};
pub use mounts::{BLOCKED_NAMES, ExtraMount, MountError, screen as screen_mount};
pub use spec::{ContainerSpec, Limits, SOCKET_DIR_IN_CONTAINER, WORKSPACE_IN_CONTAINER};

/// The label every Corral container carries, with the agent id as value.
pub const AGENT_LABEL: &str = "corral.agent";
