//! A `[[schedules]]` entry of `corral.toml`, as written and as checked.

use std::fmt;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::tz::TimeZone;
use serde::Deserialize;

use crate::ScheduleError;

/// One `[[schedules]]` table, as written.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleSection {
    /// Names the schedule in policies (`Schedule::"name"`), records and
    /// `corral schedules run NAME`.
    pub name: String,
    /// Standard five-field cron (minute hour day-of-month month
    /// day-of-week; `0` and `7` are Sunday), or six with a leading seconds
    /// field.
    pub cron: String,
    /// The IANA time zone the expression is read in (`Europe/Paris`).
    /// Default `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// The agent that gets the message.
    pub agent: String,
    /// What the message says.
    pub message: String,
    /// Where the agent's reply goes: `log` (the host's log, the default)
    /// or `slack:CHANNEL_ID`.
    #[serde(default = "log")]
    pub reply_to: String,
    /// What to do at start about runs that fell due while the host was
    /// down: `skip` them (the default) or `run-once`. Recorded either way.
    #[serde(default)]
    pub missed: Missed,
}

fn utc() -> String {
    "UTC".into()
}

fn log() -> String {
    "log".into()
}

/// What happens to runs missed while the host was down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Missed {
    /// None of them runs; one `schedule_skipped` record says how many.
    #[default]
    Skip,
    /// The latest of them runs once, at start.
    RunOnce,
}

/// Where a schedule's reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyTo {
    /// The host's log, as an `info` line naming the schedule.
    Log,
    /// A room of a channel: `slack:C0123` is Slack's channel `C0123`.
    Room {
        /// The channel's name (`slack`).
        channel: String,
        /// The channel's own id for the room.
        room: String,
    },
}

impl ReplyTo {
    /// The `Channel` entity id the message and its reply are decided in:
    /// `log`, or `slack:C0123`.
    pub fn channel_id(&self) -> String {
        match self {
            ReplyTo::Log => "log".into(),
            ReplyTo::Room { channel, room } => format!("{channel}:{room}"),
        }
    }
}

impl fmt::Display for ReplyTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.channel_id())
    }
}

/// A schedule whose expression, time zone and destination were checked.
#[derive(Debug, Clone)]
pub struct Schedule {
    /// Its name.
    pub name: String,
    /// The expression as written.
    pub cron_text: String,
    pub(crate) cron: Cron,
    /// The time zone's name as written.
    pub time_zone_name: String,
    pub(crate) time_zone: TimeZone,
    /// The agent it sends to.
    pub agent: String,
    /// The message.
    pub message: String,
    /// Where the reply goes.
    pub reply_to: ReplyTo,
    /// What happens to runs missed while the host was down.
    pub missed: Missed,
}

/// Longest schedule name: it is a Cedar id, a log field and a CLI argument.
const MAX_NAME: usize = 64;

impl ScheduleSection {
    /// Checks the entry; the error names the schedule, the field and what
    /// it may be.
    pub fn check(&self) -> Result<Schedule, ScheduleError> {
        let bad = |field: &str, message: String| ScheduleError::Config {
            schedule: self.name.clone(),
            field: field.to_string(),
            message,
        };
        let plain = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        if self.name.is_empty()
            || self.name.len() > MAX_NAME
            || !self.name.chars().all(plain)
            || self.name.starts_with(['-', '_'])
        {
            return Err(bad(
                "name",
                format!(
                    "`{}` is not a schedule name: use 1 to {MAX_NAME} lowercase letters, digits, `-` and `_`, starting with a letter or digit",
                    self.name
                ),
            ));
        }
        let cron = parser().parse(&self.cron).map_err(|e| {
            bad(
                "cron",
                format!(
                    "`{}` is not a cron expression ({e}); write five fields, minute hour day-of-month month day-of-week, e.g. `0 8 * * 1-5` for 08:00 on weekdays",
                    self.cron
                ),
            )
        })?;
        let time_zone = TimeZone::get(&self.time_zone).map_err(|e| {
            bad(
                "time_zone",
                format!(
                    "`{}` is not a time zone this machine knows ({e}); use an IANA name such as `Europe/Paris` or `UTC`",
                    self.time_zone
                ),
            )
        })?;
        let checked_now = jiff::Timestamp::now().to_zoned(time_zone.clone());
        if cron.find_next_occurrence(&checked_now, false).is_err() {
            return Err(bad(
                "cron",
                format!(
                    "`{}` never falls due (no such date, or none within the years searched); check the day-of-month and month fields",
                    self.cron
                ),
            ));
        }
        if self.message.trim().is_empty() {
            return Err(bad(
                "message",
                "is empty: write what the agent is asked".into(),
            ));
        }
        let reply_to = match self.reply_to.as_str() {
            "log" => ReplyTo::Log,
            other => match other.split_once(':') {
                Some((channel @ "slack", room))
                    if !room.is_empty() && room.chars().all(|c| c.is_ascii_alphanumeric()) =>
                {
                    ReplyTo::Room {
                        channel: channel.to_string(),
                        room: room.to_string(),
                    }
                }
                _ => {
                    return Err(bad(
                        "reply_to",
                        format!(
                            "`{other}` is not a destination: use `log` or `slack:CHANNEL_ID` (e.g. `slack:C0123456789`)"
                        ),
                    ));
                }
            },
        };
        Ok(Schedule {
            name: self.name.clone(),
            cron_text: self.cron.clone(),
            cron,
            time_zone_name: self.time_zone.clone(),
            time_zone,
            agent: self.agent.clone(),
            message: self.message.clone(),
            reply_to,
            missed: self.missed,
        })
    }
}

/// Five fields, or six with seconds first; no year field, and weekdays
/// numbered as standard cron numbers them (`0` is Sunday).
fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
}

/// Checks every entry, and that no two share a name.
pub fn check_all(sections: &[ScheduleSection]) -> Result<Vec<Schedule>, ScheduleError> {
    let mut checked: Vec<Schedule> = Vec::with_capacity(sections.len());
    for section in sections {
        let schedule = section.check()?;
        if checked.iter().any(|s| s.name == schedule.name) {
            return Err(ScheduleError::Config {
                schedule: schedule.name,
                field: "name".into(),
                message: "is used by two [[schedules]] entries; give each its own".into(),
            });
        }
        checked.push(schedule);
    }
    Ok(checked)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(cron: &str) -> ScheduleSection {
        ScheduleSection {
            name: "morning-brief".into(),
            cron: cron.into(),
            time_zone: "Europe/Paris".into(),
            agent: "assistant".into(),
            message: "What is on today?".into(),
            reply_to: "slack:C0123".into(),
            missed: Missed::Skip,
        }
    }

    fn error(s: &ScheduleSection) -> String {
        s.check().map(|_| ()).unwrap_err().to_string()
    }

    #[test]
    fn a_well_formed_entry_is_checked() {
        let s = section("0 8 * * 1-5").check().unwrap();
        assert_eq!(
            s.reply_to,
            ReplyTo::Room {
                channel: "slack".into(),
                room: "C0123".into()
            }
        );
        assert_eq!(s.reply_to.channel_id(), "slack:C0123");
        assert!(
            section("*/2 * * * * *").check().is_ok(),
            "six fields: seconds"
        );
    }

    #[test]
    fn each_bad_field_is_named_with_what_it_may_be() {
        let e = error(&section("0 25 * * *"));
        assert!(
            e.contains("`morning-brief`") && e.contains("cron") && e.contains("five fields"),
            "{e}"
        );
        assert!(
            error(&section("0 8 * * * * 2030")).contains("cron"),
            "no year field"
        );
        let mut s = section("0 8 * * *");
        s.time_zone = "Mars/Olympus".into();
        assert!(error(&s).contains("IANA"), "{}", error(&s));
        let mut s = section("0 8 * * *");
        s.reply_to = "email:ops".into();
        assert!(
            error(&s).contains("`log` or `slack:CHANNEL_ID`"),
            "{}",
            error(&s)
        );
        let mut s = section("0 8 * * *");
        s.name = "Morning Brief".into();
        assert!(error(&s).contains("lowercase"), "{}", error(&s));
        let mut s = section("0 8 * * *");
        s.message = "  ".into();
        assert!(error(&s).contains("message"), "{}", error(&s));
    }

    #[test]
    fn two_entries_may_not_share_a_name() {
        let e = check_all(&[section("0 8 * * *"), section("0 9 * * *")]).unwrap_err();
        assert!(e.to_string().contains("two [[schedules]]"), "{e}");
    }

    #[test]
    fn the_table_reads_from_toml_with_its_defaults() {
        let s: ScheduleSection = serde_json::from_value(serde_json::json!({
            "name": "digest", "cron": "0 8 * * *", "agent": "assistant", "message": "hi"
        }))
        .unwrap();
        assert_eq!(
            (s.time_zone.as_str(), s.reply_to.as_str(), s.missed),
            ("UTC", "log", Missed::Skip)
        );
        let s: Result<ScheduleSection, _> = serde_json::from_value(serde_json::json!({
            "name": "digest", "cron": "0 8 * * *", "agent": "assistant", "message": "hi",
            "missed": "run-twice"
        }));
        assert!(s.is_err());
    }
}
