//! Scheduled messages: an agent asked something on time, without a person.
//!
//! Each `[[schedules]]` entry of `corral.toml` ([`ScheduleSection`]) names
//! a cron expression read in a time zone, an agent, a message and where
//! the reply goes. When a run is due, the [`Scheduler`] hands the message
//! to the channels' router as `Schedule::"name"`, so it meets the same
//! Cedar `invoke` decision and the same audit record as a person's
//! message; a schedule no policy names is refused, and recorded. The
//! agent's reply goes to the host's log or to a Slack channel, through
//! that channel's own connection.
//!
//! Invariants:
//! - A schedule never piles up: while its previous run is unanswered, a
//!   run that falls due is skipped and recorded as `schedule_skipped`.
//! - A run is handled at most once: the due time is noted on disk before
//!   the message is sent ([`RunBook`]), so a restart never repeats it.
//! - Runs that fell due while the host was down are found at start and
//!   either skipped or run once, as the entry says, and recorded either
//!   way.

mod runner;
mod section;
mod state;
mod timing;

use std::path::PathBuf;

pub use runner::{Scheduler, SchedulerParts};
pub use section::{Missed, ReplyTo, Schedule, ScheduleSection, check_all};
pub use state::RunBook;
pub use timing::MissedRuns;

/// Why schedules could not be set up or run.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    /// An entry of `corral.toml` is wrong.
    #[error("[[schedules]] `{schedule}`: {field} {message}")]
    Config {
        /// The schedule's name, as written.
        schedule: String,
        /// The field at fault.
        field: String,
        /// What is wrong, and what it may be.
        message: String,
    },
    /// The file of runs handled cannot be read or written.
    #[error(
        "schedules: {}: {message}; next step: check that the state directory is writable and has room, or, if the file is damaged, move it away (every schedule then starts afresh, and runs missed while the host was down are not found)",
        path.display()
    )]
    State {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
}
