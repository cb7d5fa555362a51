//! When a schedule is due: its next time after an instant, and the runs
//! that fell due between two instants. Pure, so tests choose the clock.

use jiff::{Timestamp, Zoned};

use crate::section::Schedule;

/// How many missed runs are counted one by one; a schedule down for
/// longer says "at least" this many.
const MAX_COUNTED: u32 = 10_000;

impl Schedule {
    /// The first time strictly after `after` that the schedule is due, in
    /// its time zone; `None` if the expression never matches again.
    pub fn next_after(&self, after: Timestamp) -> Option<Zoned> {
        let from = self.local(after);
        self.cron.find_next_occurrence(&from, false).ok()
    }

    /// `t` in the schedule's time zone.
    pub fn local(&self, t: Timestamp) -> Zoned {
        t.to_zoned(self.time_zone.clone())
    }

    /// The next `count` times after `after`.
    pub fn upcoming(&self, after: Timestamp, count: usize) -> Vec<Zoned> {
        let mut times = Vec::with_capacity(count);
        let mut from = after;
        while times.len() < count {
            let Some(next) = self.next_after(from) else {
                break;
            };
            from = next.timestamp();
            times.push(next);
        }
        times
    }

    /// The runs due after `last` and at or before `now`, if any.
    pub fn missed_between(&self, last: Timestamp, now: Timestamp) -> Option<MissedRuns> {
        let first = self.next_after(last)?;
        if first.timestamp() > now {
            return None;
        }
        let mut latest = first.clone();
        let mut count = 1;
        while count < MAX_COUNTED {
            match self.next_after(latest.timestamp()) {
                Some(next) if next.timestamp() <= now => {
                    latest = next;
                    count += 1;
                }
                _ => {
                    return Some(MissedRuns {
                        first,
                        latest,
                        count,
                        at_least: false,
                    });
                }
            }
        }
        // Counted as far as is useful; the latest is found directly.
        let latest = self
            .cron
            .find_previous_occurrence(&self.local(now), true)
            .unwrap_or(latest);
        Some(MissedRuns {
            first,
            latest,
            count,
            at_least: true,
        })
    }
}

/// Runs that fell due while the host was down.
#[derive(Debug, Clone, PartialEq)]
pub struct MissedRuns {
    /// The earliest.
    pub first: Zoned,
    /// The latest: the one `missed = "run-once"` runs.
    pub latest: Zoned,
    /// How many.
    pub count: u32,
    /// The count stopped at its limit: there were at least this many.
    pub at_least: bool,
}

impl MissedRuns {
    /// "3 runs due from … to …", for records and logs.
    pub fn describe(&self) -> String {
        let count = if self.at_least {
            format!("at least {}", self.count)
        } else {
            self.count.to_string()
        };
        if self.count == 1 {
            format!("1 run due at {}", self.first)
        } else {
            format!("{count} runs due from {} to {}", self.first, self.latest)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::section::{Missed, ScheduleSection};

    fn schedule(cron: &str, tz: &str) -> Schedule {
        ScheduleSection {
            name: "brief".into(),
            cron: cron.into(),
            time_zone: tz.into(),
            agent: "assistant".into(),
            message: "hi".into(),
            reply_to: "log".into(),
            missed: Missed::Skip,
        }
        .check()
        .unwrap()
    }

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn next_is_read_in_the_schedules_time_zone() {
        // 08:00 in Paris is 07:00 UTC in winter.
        let s = schedule("0 8 * * *", "Europe/Paris");
        let next = s.next_after(at("2026-12-07T07:30:00Z")).unwrap();
        assert_eq!(next.timestamp(), at("2026-12-08T07:00:00Z"));
        assert_eq!(next.time_zone().iana_name(), Some("Europe/Paris"));
        // Strictly after: a run due now is not due again.
        let next = s.next_after(at("2026-12-08T07:00:00Z")).unwrap();
        assert_eq!(next.timestamp(), at("2026-12-09T07:00:00Z"));
    }

    #[test]
    fn weekdays_are_numbered_as_standard_cron_numbers_them() {
        // 2026-12-07 is a Monday; `1-5` is Monday to Friday, `0` Sunday.
        let s = schedule("0 9 * * 1-5", "UTC");
        let fri = at("2026-12-11T09:00:00Z");
        assert_eq!(
            s.next_after(fri).unwrap().timestamp(),
            at("2026-12-14T09:00:00Z")
        );
        let sunday = schedule("0 9 * * 0", "UTC");
        assert_eq!(
            sunday.next_after(fri).unwrap().timestamp(),
            at("2026-12-13T09:00:00Z")
        );
    }

    #[test]
    fn a_time_the_clock_skips_in_spring_is_not_lost() {
        // 02:30 does not exist in Paris on 2027-03-28.
        let s = schedule("30 2 * * *", "Europe/Paris");
        let next = s.next_after(at("2027-03-27T12:00:00Z")).unwrap();
        assert!(next.timestamp() < at("2027-03-29T00:00:00Z"), "{next}");
    }

    #[test]
    fn missed_runs_are_counted_between_two_instants() {
        let s = schedule("0 * * * *", "UTC");
        assert_eq!(
            s.missed_between(at("2026-12-07T10:00:00Z"), at("2026-12-07T10:59:59Z")),
            None
        );
        let m = s
            .missed_between(at("2026-12-07T10:00:00Z"), at("2026-12-07T13:30:00Z"))
            .unwrap();
        assert_eq!((m.count, m.at_least), (3, false));
        assert_eq!(m.first.timestamp(), at("2026-12-07T11:00:00Z"));
        assert_eq!(m.latest.timestamp(), at("2026-12-07T13:00:00Z"));
        assert!(
            m.describe().starts_with("3 runs due from"),
            "{}",
            m.describe()
        );
        // A run due exactly now counts.
        let m = s
            .missed_between(at("2026-12-07T10:00:00Z"), at("2026-12-07T11:00:00Z"))
            .unwrap();
        assert_eq!(m.count, 1);
    }

    #[test]
    fn a_long_absence_is_counted_to_a_limit_and_its_latest_run_found() {
        let s = schedule("* * * * * *", "UTC");
        let m = s
            .missed_between(at("2026-12-01T00:00:00Z"), at("2026-12-07T00:00:00Z"))
            .unwrap();
        assert!(m.at_least && m.count == MAX_COUNTED);
        assert_eq!(m.latest.timestamp(), at("2026-12-07T00:00:00Z"));
        assert!(m.describe().contains("at least"));
    }
}
