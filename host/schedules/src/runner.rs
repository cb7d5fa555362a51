//! The running schedules: a task that sleeps until the next run is due,
//! sends its message through the router, and carries the reply to where
//! the schedule says.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_audit::{AuditLog, Entry, Kind};
use corral_channels::{DeliveryError, Origin, Poster, Reply, Router, ScheduledRun, Sender};
use corral_policy::uid;
use jiff::{Timestamp, Zoned};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::ScheduleError;
use crate::section::{Missed, ReplyTo, Schedule};
use crate::state::RunBook;

/// The longest the loop sleeps before it reads the clock again, so a
/// wall clock that is set back or forward is noticed.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// What the scheduler needs from the host.
pub struct SchedulerParts {
    /// The checked entries.
    pub schedules: Vec<Schedule>,
    /// Where messages go, and the `invoke` decision on them.
    pub router: Arc<Router>,
    /// Where skipped runs are recorded.
    pub audit: AuditLog,
    /// The running channels that can post unasked, by name (`slack`).
    pub posters: BTreeMap<String, Arc<dyn Poster>>,
    /// The file of runs handled ([`RunBook`]).
    pub state_file: PathBuf,
}

struct Shared {
    schedules: Vec<Schedule>,
    router: Arc<Router>,
    audit: AuditLog,
    posters: BTreeMap<String, Arc<dyn Poster>>,
    book: Mutex<RunBook>,
    /// Schedule name → its run's message, while the agent has not answered.
    unanswered: Mutex<BTreeMap<String, u64>>,
}

/// Running schedules; [`Scheduler::stop`] ends them.
pub struct Scheduler {
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// What started a run, as its record says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Cron,
    Missed,
    Operator,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Cron => "cron",
            Trigger::Missed => "missed",
            Trigger::Operator => "operator",
        }
    }
}

impl Scheduler {
    /// Checks every destination against the running channels, handles the
    /// runs missed while the host was down, then starts the clock.
    pub async fn start(parts: SchedulerParts) -> Result<Scheduler, ScheduleError> {
        for s in &parts.schedules {
            if let ReplyTo::Room { channel, .. } = &s.reply_to
                && !parts.posters.contains_key(channel)
            {
                return Err(ScheduleError::Config {
                    schedule: s.name.clone(),
                    field: "reply_to".into(),
                    message: format!(
                        "`{}` needs the `{channel}` channel, which this host does not run; configure [{channel}] in corral.toml, or reply to `log`",
                        s.reply_to
                    ),
                });
            }
        }
        let book = RunBook::open(&parts.state_file)?;
        let shared = Arc::new(Shared {
            schedules: parts.schedules,
            router: parts.router,
            audit: parts.audit,
            posters: parts.posters,
            book: Mutex::new(book),
            unanswered: Mutex::new(BTreeMap::new()),
        });
        let started = Timestamp::now();
        for index in 0..shared.schedules.len() {
            shared.catch_up(index, started).await?;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(shared.clone(), stopped, started));
        Ok(Scheduler { shared, stop, task })
    }

    /// Sends schedule `name`'s message now, for an operator; it does not
    /// change when the schedule is next due. The answer says what
    /// happened, or why not.
    pub fn run_now(&self, name: &str) -> Result<String, String> {
        let Some(index) = self.shared.schedules.iter().position(|s| s.name == name) else {
            let known: Vec<&str> = self
                .shared
                .schedules
                .iter()
                .map(|s| s.name.as_str())
                .collect();
            return Err(if known.is_empty() {
                format!("there is no schedule `{name}`: corral.toml has no [[schedules]]")
            } else {
                format!(
                    "there is no schedule `{name}`; configured schedules: {}",
                    known.join(", ")
                )
            });
        };
        let now = self.shared.schedules[index].local(Timestamp::now());
        let schedule = &self.shared.schedules[index];
        self.shared
            .send(index, &now, Trigger::Operator)
            .map(|id| {
                format!(
                    "schedule `{name}` sent its message to agent `{}` (message {id}); the reply goes to {}",
                    schedule.agent,
                    match &schedule.reply_to {
                        ReplyTo::Log => "the host's log".to_string(),
                        room => format!("`{room}`"),
                    }
                )
            })
    }

    /// Stops the clock; runs already sent are answered as usual.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl Shared {
    /// At start: notes a schedule never seen before as handled up to now,
    /// or skips or runs once what fell due since it last ran.
    async fn catch_up(self: &Arc<Self>, index: usize, now: Timestamp) -> Result<(), ScheduleError> {
        let schedule = &self.schedules[index];
        let last = self.book().last(&schedule.name);
        let Some(last) = last else {
            return self.book().handled(&schedule.name, now);
        };
        let Some(missed) = schedule.missed_between(last, now) else {
            return Ok(());
        };
        tracing::warn!(
            schedule = %schedule.name,
            missed = %missed.describe(),
            action = ?schedule.missed,
            "runs fell due while the host was down"
        );
        match schedule.missed {
            Missed::Skip => {
                self.book()
                    .handled(&schedule.name, missed.latest.timestamp())?;
                self.record_skipped(
                    schedule,
                    &missed.latest,
                    "missed",
                    format!(
                        "{} while the host was down; not run, as `missed = \"skip\"` says",
                        missed.describe()
                    ),
                )
                .await;
            }
            Missed::RunOnce => {
                // `send` notes the run as handled before it sends.
                let _ = self.send(index, &missed.latest, Trigger::Missed);
            }
        }
        Ok(())
    }

    fn book(&self) -> std::sync::MutexGuard<'_, RunBook> {
        self.book.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unanswered(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, u64>> {
        self.unanswered.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends schedule `index`'s message for the run due at `due`, unless
    /// its previous run is still unanswered. The message's id, or why it
    /// was not sent (a skip is recorded; a refusal by policy is recorded
    /// by the router).
    fn send(self: &Arc<Self>, index: usize, due: &Zoned, trigger: Trigger) -> Result<u64, String> {
        let schedule = &self.schedules[index];
        let name = &schedule.name;
        if trigger != Trigger::Operator {
            // Before sending: a crash after this point loses the run
            // rather than repeating it at the next start.
            if let Err(e) = self.book().handled(name, due.timestamp()) {
                tracing::error!(schedule = %name, error = %e, "cannot note the run as handled; a restart may report it as missed");
            }
        }
        if let Some(previous) = self.unanswered().get(name).copied() {
            let why = format!(
                "its previous run (message {previous}) has not been answered yet, so this one was skipped rather than piled up"
            );
            if trigger == Trigger::Operator {
                return Err(format!(
                    "schedule `{name}`: {why}; next step: wait for agent `{}` to answer it",
                    schedule.agent
                ));
            }
            tracing::warn!(schedule = %name, agent = %schedule.agent, %due, "{why}");
            let this = self.clone();
            let due = due.clone();
            tokio::spawn(async move {
                let schedule = &this.schedules[index];
                this.record_skipped(schedule, &due, "previous-run-unanswered", why)
                    .await;
            });
            return Err(format!("schedule `{name}`'s previous run is unanswered"));
        }
        let poster = match &schedule.reply_to {
            ReplyTo::Room { channel, .. } => self.posters.get(channel).cloned(),
            ReplyTo::Log => None,
        };
        let origin = Origin {
            sender: Sender::Schedule(ScheduledRun {
                name: name.clone(),
                scheduled_for: due.to_string(),
                trigger: trigger.as_str().to_string(),
            }),
            channel: schedule.reply_to.channel_id(),
            chat_workspace: poster.as_ref().and_then(|p| p.chat_workspace()),
            conversation: format!("schedule-{name}-{}", due.timestamp().as_second()),
        };
        let (delivery, replies) = mpsc::unbounded_channel();
        // Held while submitting, so the reply's task cannot finish (and
        // clear the entry) before it is made.
        let mut unanswered = self.unanswered();
        match self
            .router
            .submit(&schedule.agent, schedule.message.clone(), origin, delivery)
        {
            Ok(id) => {
                unanswered.insert(name.clone(), id);
                drop(unanswered);
                tracing::info!(schedule = %name, agent = %schedule.agent, message = id, %due, trigger = trigger.as_str(), "scheduled message sent");
                tokio::spawn(deliver(self.clone(), index, id, replies, poster));
                Ok(id)
            }
            Err(e) => {
                drop(unanswered);
                let text = e.to_string();
                tracing::warn!(schedule = %name, agent = %schedule.agent, %due, error = %text, "scheduled message not sent");
                if let (ReplyTo::Room { room, .. }, Some(poster)) = (&schedule.reply_to, poster) {
                    let (room, notice) = (room.clone(), format!("⚠ schedule `{name}`: {text}"));
                    tokio::spawn(async move {
                        let _ = poster.post(&room, notice).await;
                    });
                }
                Err(format!("schedule `{name}`: {text}"))
            }
        }
    }

    async fn record_skipped(&self, schedule: &Schedule, due: &Zoned, reason: &str, detail: String) {
        let mut entry = Entry::new(
            Kind::ScheduleSkipped,
            &schedule.agent,
            "invoke",
            uid("Agent", &schedule.agent).to_string(),
        );
        entry.arguments = json!({
            "schedule": uid("Schedule", &schedule.name).to_string(),
            "scheduled_for": due.to_string(),
            "reason": reason,
        });
        entry.detail = Some(detail);
        if let Err(e) = self.audit.append(entry).recorded().await {
            tracing::error!(schedule = %schedule.name, error = %e, "cannot record a skipped run");
        }
    }
}

/// Carries the replies to run `id` of schedule `index` to its destination,
/// then lets the schedule run again.
async fn deliver(
    shared: Arc<Shared>,
    index: usize,
    id: u64,
    mut replies: mpsc::UnboundedReceiver<Reply>,
    poster: Option<Arc<dyn Poster>>,
) {
    let schedule = &shared.schedules[index];
    while let Some(mut reply) = replies.recv().await {
        let text = std::mem::take(&mut reply.text);
        let delivered = match (&schedule.reply_to, &poster) {
            (ReplyTo::Room { room, .. }, Some(poster)) => poster.post(room, text).await,
            (ReplyTo::Room { channel, .. }, None) => Err(DeliveryError(format!(
                "the `{channel}` channel is not running"
            ))),
            (ReplyTo::Log, _) => {
                tracing::info!(schedule = %schedule.name, agent = %schedule.agent, message = id, last = reply.last, reply = %text, "schedule's reply");
                Ok(())
            }
        };
        reply.report(delivered);
        if reply.last {
            break;
        }
    }
    let mut unanswered = shared.unanswered();
    if unanswered.get(&schedule.name) == Some(&id) {
        unanswered.remove(&schedule.name);
    }
}

/// Sleeps until the next run of any schedule is due, sends it, and again.
async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>, started: Timestamp) {
    let mut next: Vec<Option<Zoned>> = shared
        .schedules
        .iter()
        .map(|s| s.next_after(started))
        .collect();
    loop {
        let soonest = next
            .iter()
            .enumerate()
            .filter_map(|(i, due)| due.as_ref().map(|due| (i, due.clone())))
            .min_by_key(|(_, due)| due.timestamp());
        let wait = match &soonest {
            Some((_, due)) => Duration::try_from(due.timestamp().duration_since(Timestamp::now()))
                .unwrap_or(Duration::ZERO)
                .min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped.changed() => return,
        }
        let Some((index, due)) = soonest else {
            continue;
        };
        let now = Timestamp::now();
        if now < due.timestamp() {
            continue;
        }
        let _ = shared.send(index, &due, Trigger::Cron);
        // From now, not from `due`: after the clock jumps forward, or a
        // long stall, a schedule runs once, not once per time it passed.
        next[index] = shared.schedules[index].next_after(now.max(due.timestamp()));
    }
}
