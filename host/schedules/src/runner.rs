//! The running schedules: a task that sleeps until the next run is due,
//! sends its message through the router, and carries the reply to where
//! the schedule says.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corral_audit::{AuditLog, Entry, Kind};
use corral_channels::{
    DeliveryError, Origin, Poster, Reply, Router, ScheduledRun, Sender, blocking,
};
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

/// How late a run may start and still be an ordinary one. Later (the host
/// was suspended, or its clock jumped forward), the runs passed meanwhile
/// are handled as missed, as at a restart.
const LATE: jiff::SignedDuration = jiff::SignedDuration::from_secs(60);

/// The longest reply text written to the host's log.
const MAX_LOGGED_REPLY: usize = 4096;

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
    /// Schedules whose last run was refused: their channel was told once,
    /// and is told again only after a run gets through.
    refused: Mutex<std::collections::BTreeSet<String>>,
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
            refused: Mutex::new(Default::default()),
        });
        let started = Timestamp::now();
        for index in 0..shared.schedules.len() {
            shared
                .catch_up(index, started, "while the host was down")
                .await?;
        }
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(shared.clone(), stopped));
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
    /// At start, or when a run comes late: notes a schedule never seen
    /// before as handled up to now, or skips or runs once what fell due
    /// since it last ran. `when` says when they fell due, for the record.
    async fn catch_up(
        self: &Arc<Self>,
        index: usize,
        now: Timestamp,
        when: &str,
    ) -> Result<(), ScheduleError> {
        let schedule = &self.schedules[index];
        let last = self.book().last(&schedule.name);
        let Some(last) = last else {
            return blocking(|| self.book().handled(&schedule.name, now));
        };
        let Some(missed) = schedule.missed_between(last, now) else {
            return Ok(());
        };
        tracing::warn!(
            schedule = %schedule.name,
            missed = %missed.describe(),
            action = ?schedule.missed,
            "runs fell due {when}"
        );
        match schedule.missed {
            Missed::Skip => {
                blocking(|| {
                    self.book()
                        .handled(&schedule.name, missed.latest.timestamp())
                })?;
                self.record_skipped(
                    schedule,
                    &missed.latest,
                    "missed",
                    format!(
                        "{} {when}; not run, as `missed = \"skip\"` says",
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

    /// Each schedule's next due time after `now`, or after the last run it
    /// handled if the clock now reads earlier than that (it was set back):
    /// a run handled is never due again.
    fn next_runs(&self, now: Timestamp) -> Vec<Option<Zoned>> {
        let book = self.book();
        self.schedules
            .iter()
            .map(|s| s.next_after(book.last(&s.name).map_or(now, |last| last.max(now))))
            .collect()
    }

    /// Records a skipped run on a task of its own, for callers that may
    /// not wait.
    fn skip_later(self: &Arc<Self>, index: usize, due: &Zoned, reason: &'static str, why: String) {
        let (this, due) = (self.clone(), due.clone());
        tokio::spawn(async move {
            let schedule = &this.schedules[index];
            this.record_skipped(schedule, &due, reason, why).await;
        });
    }

    /// Sends schedule `index`'s message for the run due at `due`, unless
    /// its previous run is still unanswered. The message's id, or why it
    /// was not sent (a skip is recorded; a refusal by policy is recorded
    /// by the router).
    fn send(self: &Arc<Self>, index: usize, due: &Zoned, trigger: Trigger) -> Result<u64, String> {
        let schedule = &self.schedules[index];
        let name = &schedule.name;
        // One guard from the check to the insert, so an operator's run and
        // a timed one cannot both pass the check; held while submitting,
        // so the reply's task cannot clear the entry before it is made.
        let mut unanswered = self.unanswered();
        if trigger != Trigger::Operator {
            // Before sending: a crash after this point loses the run
            // rather than repeating it at the next start. A run that
            // cannot be noted is not sent, for the same reason.
            if let Err(e) = blocking(|| self.book().handled(name, due.timestamp())) {
                tracing::error!(schedule = %name, error = %e, "run not sent: it cannot be noted as handled");
                self.skip_later(index, due, "state-unwritable", e.to_string());
                return Err(format!("schedule `{name}`: {e}"));
            }
        }
        if let Some(previous) = unanswered.get(name).copied() {
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
            self.skip_later(index, due, "previous-run-unanswered", why);
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
        let submitted =
            self.router
                .submit(&schedule.agent, schedule.message.clone(), origin, delivery);
        let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
        match submitted {
            Ok(id) => {
                unanswered.insert(name.clone(), id);
                drop(unanswered);
                refused.remove(name);
                tracing::info!(schedule = %name, agent = %schedule.agent, message = id, %due, trigger = trigger.as_str(), "scheduled message sent");
                tokio::spawn(deliver(self.clone(), index, id, replies, poster));
                Ok(id)
            }
            Err(e) => {
                drop(unanswered);
                let text = e.to_string();
                tracing::warn!(schedule = %name, agent = %schedule.agent, %due, error = %text, "scheduled message not sent");
                // The channel hears of a refusal once, not at every run.
                let first = refused.insert(name.clone());
                if let (true, ReplyTo::Room { room, .. }, Some(poster)) =
                    (first, &schedule.reply_to, poster)
                {
                    let (room, notice) = (
                        room.clone(),
                        format!(
                            "⚠ schedule `{name}`: {text} (said once, until a run gets through)"
                        ),
                    );
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
                // Quoted and cut: the agent wrote it, and a newline must not
                // pass for a log line of the host's own.
                let shown: String = text.chars().take(MAX_LOGGED_REPLY).collect();
                tracing::info!(schedule = %schedule.name, agent = %schedule.agent, message = id, last = reply.last, reply = ?shown, "schedule's reply");
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
async fn run(shared: Arc<Shared>, mut stopped: watch::Receiver<bool>) {
    let mut seen = Timestamp::now();
    let mut next = shared.next_runs(seen);
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
        let now = Timestamp::now();
        if now < seen {
            // The clock was set back: due times worked out from the later
            // reading would wait out the difference.
            tracing::warn!(from = %seen, to = %now, "the wall clock went back; schedules' next runs worked out again");
            seen = now;
            next = shared.next_runs(now);
            continue;
        }
        seen = now;
        let Some((index, due)) = soonest else {
            continue;
        };
        if now < due.timestamp() {
            continue;
        }
        if now.duration_since(due.timestamp()) > LATE {
            // Suspended, or the clock jumped forward: what passed meanwhile
            // is missed, handled as the schedule says.
            if let Err(e) = shared
                .catch_up(
                    index,
                    now,
                    "while the host was suspended or its clock jumped forward",
                )
                .await
            {
                tracing::error!(schedule = %shared.schedules[index].name, error = %e, "missed runs not handled");
            }
        } else {
            let _ = shared.send(index, &due, Trigger::Cron);
        }
        // From now, not from `due`: after a long stall a schedule runs
        // once, not once per time it passed.
        next[index] = shared.schedules[index].next_after(now.max(due.timestamp()));
    }
}
