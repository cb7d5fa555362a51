//! Observe mode in `corral.toml`: an agent's `mode = "observe"`, allowed
//! only for the agents and teams the operator's `[observe]` section names,
//! so that editing one agent's entry cannot switch it on.

use std::path::Path;

use serde::Deserialize;

use crate::error::ConfigError;

/// How an agent's calls meet policy.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    /// Every decision is enforced: the default.
    #[default]
    Enforce,
    /// A tool call or file/HTTP use that only lacks a permit is let
    /// through and recorded `would-deny`; forbids, evaluation errors and
    /// secrets are enforced as ever. For learning what an agent needs
    /// (`corral policy suggest`), never for production.
    Observe,
}

/// `[observe]`: who may run in observe mode.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveSection {
    /// Agent ids that may set `mode = "observe"`.
    #[serde(default)]
    pub agents: Vec<String>,
    /// Teams (an agent's `team`) whose agents may.
    #[serde(default)]
    pub teams: Vec<String>,
}

impl ObserveSection {
    /// Refuses an agent in observe mode that this section does not name,
    /// by its id or its `team`. `agents` are each agent's id, team and
    /// mode.
    pub fn check<'a>(
        &self,
        file: &Path,
        agents: impl Iterator<Item = (&'a str, Option<&'a str>, AgentMode)>,
    ) -> Result<(), ConfigError> {
        for (id, team, _) in agents.filter(|(_, _, mode)| *mode == AgentMode::Observe) {
            let named = self.agents.iter().any(|a| a == id)
                || team.is_some_and(|t| self.teams.iter().any(|x| x == t));
            if !named {
                return Err(ConfigError(format!(
                    "{}: agent `{id}` has mode = \"observe\", but [observe] names neither it nor its team; observe mode lets calls no permit allows through, so an operator allows it separately: add `agents = [\"{id}\"]` (or its team to `teams`) under [observe], or remove the mode",
                    file.display(),
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AgentConfig;

    fn check(section: &ObserveSection, list: &[AgentConfig]) -> Result<(), ConfigError> {
        section.check(
            Path::new("corral.toml"),
            list.iter()
                .map(|a| (a.id.as_str(), a.team.as_deref(), a.mode)),
        )
    }

    fn agents(toml_text: &str) -> (ObserveSection, Vec<AgentConfig>) {
        #[derive(Deserialize)]
        struct Part {
            #[serde(default)]
            observe: ObserveSection,
            agents: Vec<AgentConfig>,
        }
        let part: Part = toml::from_str(toml_text).expect("valid TOML");
        (part.observe, part.agents)
    }

    #[test]
    fn observe_mode_needs_the_operator_section_to_name_the_agent_or_its_team() {
        let (section, list) =
            agents("[[agents]]\nid = \"reporter\"\nworkspace = \"/w\"\nmode = \"observe\"\n");
        let err = check(&section, &list).expect_err("not named").0;
        assert!(
            err.contains("agent `reporter` has mode = \"observe\"") && err.contains("[observe]"),
            "{err}"
        );
        let (section, list) = agents(
            "[observe]\nagents = [\"reporter\"]\n[[agents]]\nid = \"reporter\"\nworkspace = \"/w\"\nmode = \"observe\"\n",
        );
        check(&section, &list).expect("named by id");
        let (section, list) = agents(
            "[observe]\nteams = [\"batch\"]\n[[agents]]\nid = \"r\"\nteam = \"batch\"\nworkspace = \"/w\"\nmode = \"observe\"\n",
        );
        check(&section, &list).expect("named by team");
        let (section, list) = agents("[[agents]]\nid = \"a\"\nworkspace = \"/w\"\n");
        check(&section, &list).expect("enforce needs nothing");
        assert_eq!(list[0].mode, AgentMode::Enforce);
    }
}
