//! `[[schedules]]`: checked when `corral.toml` loads, started once the
//! channels that carry their replies are running, and reached by the
//! operator's `corral schedules run` through the control socket.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use corral_audit::AuditLog;
use corral_channels::{Channel, Router};
use corral_schedules::{ReplyTo, ScheduleSection, Scheduler, SchedulerParts};

use crate::error::HostError;

/// The running scheduler, once it has started and until it stops; the
/// control socket's `run-schedule` requests reach it through this.
pub(crate) type SchedulerSlot = Arc<Mutex<Option<Scheduler>>>;

/// Each entry is well formed, names one of `agents`, and replies through
/// one of the `channels` `corral.toml` configures.
pub(crate) fn check(
    sections: &[ScheduleSection],
    agents: &BTreeSet<&String>,
    channels: &[&str],
) -> Result<(), String> {
    let schedules = corral_schedules::check_all(sections).map_err(|e| e.to_string())?;
    for s in &schedules {
        if !agents.contains(&s.agent) {
            return Err(format!(
                "[[schedules]] `{}`: agent `{}` is not in [[agents]]; name one of them, or add it",
                s.name, s.agent
            ));
        }
        if let ReplyTo::Room { channel, .. } = &s.reply_to
            && !channels.contains(&channel.as_str())
        {
            return Err(format!(
                "[[schedules]] `{}`: reply_to `{}` needs a [{channel}] section; configure it, or reply to `log`",
                s.name, s.reply_to
            ));
        }
    }
    Ok(())
}

/// Starts the schedules, with the running channels that can post their
/// replies.
pub(crate) async fn start(
    (sections, state_file): (&[ScheduleSection], std::path::PathBuf),
    router: &Arc<Router>,
    audit: &AuditLog,
    channels: &[Box<dyn Channel>],
    slot: &SchedulerSlot,
) -> Result<(), HostError> {
    if sections.is_empty() {
        return Ok(());
    }
    let schedules =
        corral_schedules::check_all(sections).map_err(|e| HostError::Setup(e.to_string()))?;
    let posters: BTreeMap<String, _> = channels
        .iter()
        .filter_map(|c| c.poster().map(|p| (c.name().to_string(), p)))
        .collect();
    let scheduler = Scheduler::start(SchedulerParts {
        schedules,
        router: router.clone(),
        audit: audit.clone(),
        posters,
        state_file,
    })
    .await
    .map_err(|e| HostError::Setup(e.to_string()))?;
    *lock(slot) = Some(scheduler);
    Ok(())
}

fn lock(slot: &SchedulerSlot) -> std::sync::MutexGuard<'_, Option<Scheduler>> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

/// Stops the clock, first at shutdown: no run starts while the router
/// drains.
pub(crate) async fn stop(slot: &SchedulerSlot) {
    let scheduler = lock(slot).take();
    if let Some(scheduler) = scheduler {
        scheduler.stop().await;
    }
}

/// Runs schedule `name` now, for the operator.
pub(crate) fn run_now(slot: &SchedulerSlot, name: &str) -> Result<String, String> {
    match &*lock(slot) {
        Some(scheduler) => scheduler.run_now(name),
        None => Err(format!(
            "schedule `{name}` cannot run now: this host's schedules are not running (it is starting or stopping, or its corral.toml has no [[schedules]])"
        )),
    }
}
