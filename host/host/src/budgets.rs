//! Model budgets across restarts: what each agent used today, read back
//! from the audit log's `use_model` outcome records.

use std::collections::BTreeMap;
use std::path::Path;

/// Model tokens each agent used since midnight UTC, from the outcome
/// records of its `use_model` calls. A log that cannot be read counts as
/// none used, with a warning.
pub(crate) fn tokens_used_today(audit: &Path) -> BTreeMap<String, u64> {
    let mut used = BTreeMap::new();
    let midnight = corral_audit::now_micros() / 86_400_000_000 * 86_400_000_000;
    let reader = match corral_audit::AuditReader::open(audit) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "model budgets start at zero today");
            return used;
        }
    };
    let mut after = 0;
    loop {
        let page = match reader.query(&corral_audit::Filter {
            action: Some("use_model".into()),
            kind: Some(corral_audit::Kind::Outcome),
            since_us: Some(midnight),
            after_seq: Some(after),
            limit: Some(5_000),
            ..Default::default()
        }) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "model budgets start at zero today");
                return used;
            }
        };
        let Some(last) = page.last() else { break };
        after = last.seq;
        for r in &page {
            *used.entry(r.agent.clone()).or_insert(0) += r.tokens_used();
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;
    use corral_audit::{AuditConfig, AuditLog, Entry, Kind, Outcome, TokenUsage};

    #[test]
    fn today_s_usage_is_summed_per_agent_from_outcomes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let log = AuditLog::open(AuditConfig::new(&path)).unwrap();
        let outcome = |agent: &str, usage: Option<TokenUsage>, detail: Option<&str>| {
            let mut e = Entry::outcome_of(1, agent, "use_model", "Model::\"m\"", "p", Outcome::Ok);
            e.usage = usage;
            e.detail = detail.map(str::to_string);
            e
        };
        let usage = |i, o| {
            Some(TokenUsage {
                input_tokens: i,
                output_tokens: o,
            })
        };
        log.append_blocking(outcome("a", usage(10, 5), None))
            .unwrap();
        log.append_blocking(outcome("a", usage(1, 1), None))
            .unwrap();
        // A record written before usage had fields of its own.
        log.append_blocking(outcome("b", None, Some("input_tokens=7 output_tokens=3")))
            .unwrap();
        // Not a model outcome: not counted.
        log.append_blocking(Entry::new(Kind::Call, "a", "use_model", "Model::\"m\""))
            .unwrap();
        drop(log);
        let used = tokens_used_today(&path);
        assert_eq!(used.get("a"), Some(&17));
        assert_eq!(used.get("b"), Some(&10));
    }

    #[test]
    fn a_missing_log_means_nothing_used() {
        let dir = tempfile::tempdir().unwrap();
        assert!(tokens_used_today(&dir.path().join("none.db")).is_empty());
    }
}
