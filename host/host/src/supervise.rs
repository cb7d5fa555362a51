//! The container supervisor's loop: starts an agent's container when a
//! message arrives for it or an operator asks, stops idle ones, restarts
//! crashed ones, and stops them all at shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant};

use corral_channels::Router;
use corral_channels::terminal::{OpError, Ops};
use corral_sandbox::{ContainerBackend, SandboxError, Supervisor};
use tokio::sync::{mpsc, oneshot};

/// What wakes the supervisor: a message queued for an agent, or an
/// operator's `corral agents start` or `stop`.
pub(crate) enum Wake {
    Message(String),
    Start(String, oneshot::Sender<Result<String, OpError>>),
    Stop(String, oneshot::Sender<Result<String, OpError>>),
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

/// Where container events are counted, and the agents whose containers
/// the running gauge counts.
pub(crate) struct Counted {
    pub metrics: Arc<corral_web::Metrics>,
    pub agents: Vec<String>,
}

impl Counted {
    fn event(&self, event: &corral_sandbox::Event) {
        use corral_sandbox::Event;
        match event {
            Event::Started { .. } => self.metrics.container("started"),
            Event::Crashed { .. } => self.metrics.container("crashed"),
            Event::Restarted { .. } => self.metrics.container("restarted"),
            _ => {}
        }
    }

    fn running<B: ContainerBackend>(&self, supervisor: &Supervisor<B>) {
        let running = self
            .agents
            .iter()
            .filter(|a| supervisor.container(a).is_some())
            .count();
        self.metrics.containers_running(running);
    }
}

/// Runs until `stop` fires or every waker is gone, then stops every
/// container.
pub(crate) async fn supervise<B: ContainerBackend>(
    mut supervisor: Supervisor<B>,
    mut wake: mpsc::UnboundedReceiver<Wake>,
    mut stop: oneshot::Receiver<()>,
    router: Arc<Router>,
    counted: Counted,
) -> Result<(), SandboxError> {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        counted.running(&supervisor);
        tokio::select! {
            _ = &mut stop => break,
            wake = wake.recv() => {
                let Some(wake) = wake else { break };
                let (agent, done) = match wake {
                    Wake::Message(agent) => (agent, None),
                    Wake::Start(agent, done) => (agent, Some(done)),
                    Wake::Stop(agent, done) => {
                        let answer = match supervisor.stop(&agent).await {
                            Ok(true) => Ok(format!("stopped and removed agent `{agent}`'s container; its next message starts a new one")),
                            Ok(false) => Ok(format!("agent `{agent}` has no running container")),
                            Err(e) => Err(OpError(format!("agent `{agent}`: {e}"))),
                        };
                        let _ = done.send(answer);
                        continue;
                    }
                };
                let result = supervisor.ensure_running(&agent, Instant::now()).await;
                let answer = match &result {
                    Ok((id, Some(event))) => {
                        counted.event(event);
                        tracing::info!(?event, "agent container");
                        Ok(format!("started agent `{agent}` in container {}", short(id)))
                    }
                    Ok((id, None)) => Ok(format!("agent `{agent}` is already running in container {}", short(id))),
                    Err(e) => {
                        tracing::error!(%agent, error = %e, "cannot start the agent's container");
                        router.fail_queued(&agent, &e.to_string());
                        Err(OpError(format!("agent `{agent}`: {e}")))
                    }
                };
                if let Some(done) = done {
                    let _ = done.send(answer);
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                for agent in router.busy() {
                    supervisor.touch(&agent, now);
                }
                match supervisor.tick(now).await {
                    Ok(events) => for event in events {
                        counted.event(&event);
                        tracing::info!(?event, "agent container");
                    },
                    Err(e) => tracing::warn!(error = %e, "supervisor pass failed"),
                }
            }
        }
    }
    let stopped = supervisor.stop_all().await;
    counted.running(&supervisor);
    stopped
}

/// The operator requests the terminal channel forwards: `start` and
/// `stop` an agent, answered by the supervisor through `wake`, and
/// `run-schedule`, answered by the scheduler.
pub(crate) fn operator_requests(
    wake: mpsc::UnboundedSender<Wake>,
    external_agents: bool,
    schedules: crate::schedules_config::SchedulerSlot,
) -> Ops {
    Arc::new(move |op: String, agent: String| {
        let wake = wake.clone();
        let schedules = schedules.clone();
        Box::pin(async move {
            if op == "run-schedule" {
                return crate::schedules_config::run_now(&schedules, &agent).map_err(OpError);
            }
            if op != "start" && op != "stop" {
                return Err(OpError(format!(
                    "unknown operation `{op}`; the host knows `start`, `stop` and `run-schedule`"
                )));
            }
            if external_agents {
                return Err(OpError(
                    "this `corral up` runs with --external-agents: it starts no containers".into(),
                ));
            }
            let gone = || OpError("the host is shutting down".into());
            let (done, result) = oneshot::channel();
            let request = if op == "start" {
                Wake::Start(agent, done)
            } else {
                Wake::Stop(agent, done)
            };
            wake.send(request).map_err(|_| gone())?;
            result.await.map_err(|_| gone())?
        })
    })
}
