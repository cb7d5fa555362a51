//! Human approval of tool calls, as the `@approval` permits of
//! `corral-policy` ask for it.
//!
//! A call that Cedar allows only through `@approval` permits is an *ask*:
//! the broker records the call, then puts it to people through
//! [`Approvals::ask`], which records `approval_requested` and returns a
//! [`Waiting`] the call blocks on, off the connection's reader. A person
//! answers through a channel ([`Approvals::answer`]); whether they may is
//! decided twice: the asking permit's annotation must name them, and the
//! Cedar `approve` action must allow them. The answer is recorded
//! (`approval_granted`, `approval_denied`, or `approval_refused` for an
//! answer that did not count) before the waiting call learns it, so no
//! tool runs on an approval that is not on disk.
//!
//! Invariants:
//! - an approval's id is the sequence number of its `approval_requested`
//!   record, unique in the log for ever, so an answer meant for a request
//!   of an earlier run can never land on a new one;
//! - each pending approval is resolved exactly once (granted, denied,
//!   expired, or cancelled by shutdown), by whoever removes it first, and
//!   that resolution is recorded with `parent` = the call's record;
//! - grants for a period are kept in memory only and die with the host: a
//!   restart asks again rather than trusting history read back from the
//!   log (see `ARCHITECTURE.md`);
//! - a grant only turns an *ask* into an allow: the broker decides first,
//!   so a `forbid` (or a policy change that now denies) always wins.

mod duration;
mod registry;
mod types;

pub use duration::{format_duration, parse_duration};
pub use registry::{Approvals, Waiting};
pub use types::{
    Answer, AnswerError, ApprovalsConfig, Ask, AskError, Choice, Event, NotApprover, Origin,
    PendingApproval, Resolution, Scope,
};
