//! `corral.toml`'s `[approvals]` section: how long a call waits for a
//! person, how many may wait per agent, the longest grant, and where
//! Slack shows approvals.

use std::path::Path;
use std::time::Duration;

use corral_approvals::{ApprovalsConfig, format_duration, parse_duration};
use serde::Deserialize;

use crate::error::ConfigError;

/// The longest a call may wait for a person: a day.
const LONGEST_TIMEOUT: Duration = Duration::from_secs(86_400);
/// The longest grant: thirty days.
const LONGEST_GRANT: Duration = Duration::from_secs(30 * 86_400);

/// `[approvals]`, as written. Periods are `90s`, `30m`, `2h` or `1d`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsSection {
    /// How long a call waits for an answer before it is denied; default
    /// `10m`.
    pub timeout: Option<String>,
    /// Most calls one agent may have waiting; default 4.
    pub max_pending_per_agent: Option<usize>,
    /// Longest period `approve --for` may grant; default `1d`.
    pub max_grant: Option<String>,
    /// The period Slack's "approve for a period" button grants; default
    /// `1h`.
    pub slack_grant: Option<String>,
    /// A Slack channel id (`C0123`) where every approval is posted;
    /// without it, each is posted in the thread its work came from.
    pub slack_channel: Option<String>,
}

impl ApprovalsSection {
    /// The checked configuration; an error names the key, the file and
    /// the forms that are accepted.
    pub fn resolve(&self, file: &Path) -> Result<ApprovalsConfig, ConfigError> {
        let defaults = ApprovalsConfig::default();
        let period = |key: &str, value: &Option<String>, default: Duration| match value {
            None => Ok(default),
            Some(text) => parse_duration(text).map_err(|e| {
                ConfigError(format!(
                    "{}: approvals.{key} = \"{text}\": {e}",
                    file.display()
                ))
            }),
        };
        let config = ApprovalsConfig {
            timeout: period("timeout", &self.timeout, defaults.timeout)?,
            max_pending_per_agent: self
                .max_pending_per_agent
                .unwrap_or(defaults.max_pending_per_agent),
            max_grant: period("max_grant", &self.max_grant, defaults.max_grant)?,
            slack_grant: period("slack_grant", &self.slack_grant, defaults.slack_grant)?,
            slack_channel: self.slack_channel.clone(),
        };
        for (key, value, longest) in [
            ("timeout", config.timeout, LONGEST_TIMEOUT),
            ("max_grant", config.max_grant, LONGEST_GRANT),
        ] {
            if value > longest {
                return Err(ConfigError(format!(
                    "{}: approvals.{key} = {}: at most {} is allowed",
                    file.display(),
                    format_duration(value),
                    format_duration(longest)
                )));
            }
        }
        if config.max_pending_per_agent == 0 {
            return Err(ConfigError(format!(
                "{}: approvals.max_pending_per_agent = 0 would deny every call that asks; use 1 or more, or remove the @approval permits",
                file.display()
            )));
        }
        if config.slack_grant > config.max_grant {
            return Err(ConfigError(format!(
                "{}: approvals.slack_grant ({}) is longer than approvals.max_grant ({}); shorten it or raise max_grant",
                file.display(),
                format_duration(config.slack_grant),
                format_duration(config.max_grant)
            )));
        }
        if let Some(c) = &config.slack_channel
            && (c.is_empty() || !c.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(ConfigError(format!(
                "{}: approvals.slack_channel = \"{c}\": give the channel's id (like C0123ABC), not its name",
                file.display()
            )));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml: &str) -> ApprovalsSection {
        toml::from_str(toml).expect("parses")
    }

    #[test]
    fn defaults_are_ten_minutes_four_pending_and_a_day() {
        let c = section("")
            .resolve(Path::new("corral.toml"))
            .expect("valid");
        assert_eq!(c, ApprovalsConfig::default());
        assert_eq!(c.timeout, Duration::from_secs(600));
    }

    #[test]
    fn bad_values_name_the_key_and_the_file() {
        let cases = [
            ("timeout = \"ten\"", "approvals.timeout"),
            ("timeout = \"0s\"", "no time at all"),
            ("max_pending_per_agent = 0", "max_pending_per_agent = 0"),
            ("slack_grant = \"2d\"", "approvals.slack_grant (2d)"),
            ("slack_channel = \"#ops\"", "channel's id"),
            ("timeout = \"2d\"", "at most 1d"),
            ("max_grant = \"31d\"", "at most 30d"),
        ];
        for (toml, want) in cases {
            let e = section(toml)
                .resolve(Path::new("/etc/corral.toml"))
                .expect_err(toml)
                .to_string();
            assert!(
                e.contains(want) && e.contains("/etc/corral.toml"),
                "{toml}: {e}"
            );
        }
    }
}
