//! Keeping each agent's container in the state it should be in: started
//! on demand, stopped when idle, restarted with backoff after a crash, and
//! reconciled with what the engine already runs after a host restart.
//!
//! The supervisor takes `now` as an argument and touches the engine only
//! through [`ContainerBackend`], so its decisions are tested with a fake
//! engine and exact clocks; the Docker backend is tested on its own.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::backend::ContainerBackend;
use crate::backend::SandboxError;
use crate::spec::ContainerSpec;

/// Timings, with defaults for interactive agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifecyclePolicy {
    /// A running agent unused this long is stopped.
    pub idle_timeout: Duration,
    /// The wait before the first restart after a crash; doubled on each
    /// further crash, up to `backoff_max`.
    pub backoff_initial: Duration,
    /// The longest wait before a restart.
    pub backoff_max: Duration,
    /// A container that ran this long since its last start counts as
    /// healthy again: its crash count starts over.
    pub healthy_after: Duration,
    /// How long `docker stop` waits before it kills.
    pub stop_grace_secs: i32,
}

impl Default for LifecyclePolicy {
    fn default() -> Self {
        LifecyclePolicy {
            idle_timeout: Duration::from_secs(15 * 60),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
            healthy_after: Duration::from_secs(10 * 60),
            stop_grace_secs: 5,
        }
    }
}

/// What the supervisor did, for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A running container from before this supervisor was taken over.
    Adopted {
        /// The agent.
        agent: String,
        /// The container.
        id: String,
    },
    /// A container no agent expects was removed.
    Removed {
        /// The container.
        id: String,
        /// Why it was not expected.
        why: String,
    },
    /// A container was created and started.
    Started {
        /// The agent.
        agent: String,
        /// The container.
        id: String,
    },
    /// An idle agent's container was stopped.
    StoppedIdle {
        /// The agent.
        agent: String,
    },
    /// A container exited cleanly.
    Exited {
        /// The agent.
        agent: String,
    },
    /// A container exited with an error or was killed.
    Crashed {
        /// The agent.
        agent: String,
        /// Its exit code, if it has one.
        exit_code: Option<i64>,
        /// Whether the kernel killed it for memory.
        oom_killed: bool,
        /// When it will be restarted.
        restart_in: Duration,
    },
    /// A crashed container was replaced.
    Restarted {
        /// The agent.
        agent: String,
        /// The new container.
        id: String,
    },
}

struct Managed {
    spec: ContainerSpec,
    /// This agent's own idle timeout, over the policy's.
    idle_timeout: Option<Duration>,
    id: Option<String>,
    started: Option<Instant>,
    last_used: Instant,
    crashes: u32,
    restart_at: Option<Instant>,
}

/// Keeps each agent's container as the policy says: started on demand,
/// stopped when idle, restarted after a crash with a doubling backoff, and
/// reconciled with what the engine runs.
pub struct Supervisor<B> {
    backend: B,
    policy: LifecyclePolicy,
    agents: BTreeMap<String, Managed>,
}

impl<B: ContainerBackend> Supervisor<B> {
    /// A supervisor of `specs` on `backend`; nothing is started yet.
    pub fn new(
        backend: B,
        policy: LifecyclePolicy,
        specs: Vec<ContainerSpec>,
        now: Instant,
    ) -> Self {
        let agents = specs
            .into_iter()
            .map(|spec| {
                (
                    spec.agent.clone(),
                    Managed {
                        spec,
                        idle_timeout: None,
                        id: None,
                        started: None,
                        last_used: now,
                        crashes: 0,
                        restart_at: None,
                    },
                )
            })
            .collect();
        Supervisor {
            backend,
            policy,
            agents,
        }
    }

    /// Gives `agent` its own idle timeout instead of the policy's.
    pub fn set_idle_timeout(&mut self, agent: &str, timeout: Duration) {
        if let Some(m) = self.agents.get_mut(agent) {
            m.idle_timeout = Some(timeout);
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The container the agent runs in, if any.
    pub fn container(&self, agent: &str) -> Option<&str> {
        self.agents.get(agent).and_then(|m| m.id.as_deref())
    }

    fn backoff(&self, crashes: u32) -> Duration {
        let factor = 1u32
            .checked_shl(crashes.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.policy
            .backoff_initial
            .saturating_mul(factor)
            .min(self.policy.backoff_max)
    }

    /// After a host restart: adopt each labelled container that matches
    /// configuration (a configured agent, the same image, running), remove
    /// every other one.
    pub async fn reconcile(&mut self, now: Instant) -> Result<Vec<Event>, SandboxError> {
        let mut events = Vec::new();
        for found in self.backend.list().await? {
            let why = match self.agents.get_mut(&found.agent) {
                None => Some(format!(
                    "agent `{}` is not in the configuration",
                    found.agent
                )),
                Some(m) if m.id.is_some() => {
                    Some(format!("agent `{}` already has a container", found.agent))
                }
                Some(m) if found.image != m.spec.image => Some(format!(
                    "agent `{}` runs image {}, the configuration says {}",
                    found.agent, found.image, m.spec.image
                )),
                Some(_) if !found.running => Some("it is not running".to_string()),
                Some(m) => {
                    m.id = Some(found.id.clone());
                    m.started = Some(now);
                    m.last_used = now;
                    events.push(Event::Adopted {
                        agent: found.agent.clone(),
                        id: found.id.clone(),
                    });
                    None
                }
            };
            if let Some(why) = why {
                self.backend.remove(&found.agent, &found.id).await?;
                events.push(Event::Removed { id: found.id, why });
            }
        }
        Ok(events)
    }

    /// Starts the agent's container unless it runs; marks the agent used.
    pub async fn ensure_running(
        &mut self,
        agent: &str,
        now: Instant,
    ) -> Result<(String, Option<Event>), SandboxError> {
        let Some(m) = self.agents.get_mut(agent) else {
            return Err(SandboxError::Engine {
                agent: agent.to_string(),
                action: "start",
                message: "the agent is not in the configuration".into(),
            });
        };
        m.last_used = now;
        if let Some(id) = &m.id {
            return Ok((id.clone(), None));
        }
        let id = self.backend.create(&m.spec).await?;
        if let Err(e) = self.backend.start(agent, &id).await {
            let _ = self.backend.remove(agent, &id).await;
            return Err(e);
        }
        m.id = Some(id.clone());
        m.started = Some(now);
        m.restart_at = None;
        Ok((
            id.clone(),
            Some(Event::Started {
                agent: agent.to_string(),
                id,
            }),
        ))
    }

    /// Stops and removes every agent's container (host shutdown). Tries
    /// them all; returns the first error.
    pub async fn stop_all(&mut self) -> Result<(), SandboxError> {
        let mut first = None;
        let running: Vec<String> = self
            .agents
            .iter()
            .filter(|(_, m)| m.id.is_some())
            .map(|(a, _)| a.clone())
            .collect();
        for agent in running {
            if let Err(e) = self.stop(&agent).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Stops and removes `agent`'s container now (an operator's `corral
    /// agents stop`); the next message starts a fresh one. False if none
    /// was running.
    pub async fn stop(&mut self, agent: &str) -> Result<bool, SandboxError> {
        let Some(m) = self.agents.get(agent) else {
            return Err(SandboxError::Engine {
                agent: agent.to_string(),
                action: "stop",
                message: "the agent is not in the configuration".into(),
            });
        };
        let Some(id) = m.id.clone() else {
            return Ok(false);
        };
        // Removed even if the stop failed (it may have exited already), and
        // forgotten either way: the next message starts a fresh one.
        let stopped = self
            .backend
            .stop(agent, &id, self.policy.stop_grace_secs)
            .await;
        let removed = self.backend.remove(agent, &id).await;
        self.clear(agent);
        if let Some(m) = self.agents.get_mut(agent) {
            m.restart_at = None;
        }
        stopped.and(removed).map(|()| true)
    }

    /// Records activity, so the agent is not stopped as idle.
    pub fn touch(&mut self, agent: &str, now: Instant) {
        if let Some(m) = self.agents.get_mut(agent) {
            m.last_used = now;
        }
    }

    /// One pass: stop idle agents, notice exits and crashes, restart what
    /// is due. Call it periodically.
    pub async fn tick(&mut self, now: Instant) -> Result<Vec<Event>, SandboxError> {
        let mut events = Vec::new();
        let names: Vec<String> = self.agents.keys().cloned().collect();
        for agent in names {
            let (id, last_used, started, idle_timeout) = {
                let m = &self.agents[&agent];
                (
                    m.id.clone(),
                    m.last_used,
                    m.started,
                    m.idle_timeout.unwrap_or(self.policy.idle_timeout),
                )
            };
            if let Some(id) = id {
                let info = match self.backend.inspect(&agent, &id).await {
                    Ok(info) => info,
                    Err(e) => {
                        // Removed behind the supervisor's back (`docker rm`),
                        // or the engine lost it: forget it, so the next
                        // message starts a fresh one, and go on with the
                        // other agents.
                        let _ = self.backend.remove(&agent, &id).await;
                        self.clear(&agent);
                        events.push(Event::Removed {
                            id,
                            why: format!(
                                "agent `{agent}`'s container is gone from the engine ({e})"
                            ),
                        });
                        continue;
                    }
                };
                if info.running {
                    if started.is_some_and(|s| now.duration_since(s) >= self.policy.healthy_after)
                        && let Some(m) = self.agents.get_mut(&agent)
                    {
                        m.crashes = 0;
                    }
                    if now.duration_since(last_used) >= idle_timeout {
                        self.backend
                            .stop(&agent, &id, self.policy.stop_grace_secs)
                            .await?;
                        self.backend.remove(&agent, &id).await?;
                        self.clear(&agent);
                        events.push(Event::StoppedIdle {
                            agent: agent.clone(),
                        });
                    }
                    continue;
                }
                self.backend.remove(&agent, &id).await?;
                self.clear(&agent);
                if info.exit_code == Some(0) && !info.oom_killed {
                    events.push(Event::Exited {
                        agent: agent.clone(),
                    });
                    continue;
                }
                let crashes = {
                    let m = self.agents.get_mut(&agent).expect("configured");
                    m.crashes += 1;
                    m.crashes
                };
                let wait = self.backoff(crashes);
                self.agents.get_mut(&agent).expect("configured").restart_at = Some(now + wait);
                events.push(Event::Crashed {
                    agent: agent.clone(),
                    exit_code: info.exit_code,
                    oom_killed: info.oom_killed,
                    restart_in: wait,
                });
            } else if self.agents[&agent].restart_at.is_some_and(|at| at <= now) {
                let (id, _) = self.ensure_running(&agent, now).await?;
                events.push(Event::Restarted {
                    agent: agent.clone(),
                    id,
                });
            }
        }
        Ok(events)
    }

    fn clear(&mut self, agent: &str) {
        if let Some(m) = self.agents.get_mut(agent) {
            m.id = None;
            m.started = None;
        }
    }
}
