//! The crate's integration tests, one module per subject, in one binary
//! (each would otherwise link the crate and its dependencies again).

mod approvals;
mod assistant;
mod assistant_docker;
mod assurance;
mod broker_cli;
mod cli;
mod hardening;
mod operations;
mod publish;
mod schedules;
mod suggest;

/// Tests that start containers run one at a time, across modules: they
/// share the agent id `assistant`, and a host's start removes containers
/// it does not expect.
static DOCKER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn docker_lock() -> std::sync::MutexGuard<'static, ()> {
    DOCKER.lock().unwrap_or_else(|p| p.into_inner())
}
