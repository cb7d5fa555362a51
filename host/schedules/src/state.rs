//! The last run each schedule handled, kept in the state directory so a
//! restart knows which runs fell due while the host was down.
//!
//! One small JSON file, replaced whole (written beside it, synced, then
//! renamed), so a crash leaves the old version or the new one, never half.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::ScheduleError;

/// The file's content.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Contents {
    /// Schedule name → the latest due time it handled (ran, skipped or
    /// was refused), RFC 3339 in UTC.
    schedules: BTreeMap<String, String>,
}

/// The last due time each schedule handled.
#[derive(Debug)]
pub struct RunBook {
    path: PathBuf,
    last: BTreeMap<String, Timestamp>,
}

impl RunBook {
    /// Reads `path`; a missing file is an empty book. A file that cannot
    /// be read is an error naming it: guessing would run or skip what the
    /// operator did not choose.
    pub fn open(path: &Path) -> Result<RunBook, ScheduleError> {
        let bad = |message: String| ScheduleError::State {
            path: path.to_path_buf(),
            message,
        };
        let contents: Contents = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Contents::default(),
            Err(e) => return Err(bad(e.to_string())),
        };
        let last = contents
            .schedules
            .into_iter()
            .map(|(name, time)| {
                time.parse::<Timestamp>()
                    .map(|t| (name.clone(), t))
                    .map_err(|e| bad(format!("schedule `{name}`: `{time}` is not a time ({e})")))
            })
            .collect::<Result<_, _>>()?;
        Ok(RunBook {
            path: path.to_path_buf(),
            last,
        })
    }

    /// The last due time `name` handled, if it ever did.
    pub fn last(&self, name: &str) -> Option<Timestamp> {
        self.last.get(name).copied()
    }

    /// Notes that `name` handled the run due at `due`, on disk before it
    /// returns.
    pub fn handled(&mut self, name: &str, due: Timestamp) -> Result<(), ScheduleError> {
        self.last.insert(name.to_string(), due);
        self.save()
    }

    fn save(&self) -> Result<(), ScheduleError> {
        let contents = Contents {
            schedules: self
                .last
                .iter()
                .map(|(name, t)| (name.clone(), t.to_string()))
                .collect(),
        };
        let bad = |e: std::io::Error| ScheduleError::State {
            path: self.path.clone(),
            message: format!("cannot write it: {e}"),
        };
        let text = serde_json::to_vec_pretty(&contents).map_err(|e| ScheduleError::State {
            path: self.path.clone(),
            message: e.to_string(),
        })?;
        let temporary = self.path.with_extension("json.new");
        let mut file = std::fs::File::create(&temporary).map_err(bad)?;
        file.write_all(&text).map_err(bad)?;
        file.sync_all().map_err(bad)?;
        std::fs::rename(&temporary, &self.path).map_err(bad)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(bad)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_handled_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        let mut book = RunBook::open(&path).unwrap();
        assert_eq!(book.last("brief"), None);
        let due: Timestamp = "2026-12-07T08:00:00Z".parse().unwrap();
        book.handled("brief", due).unwrap();
        assert_eq!(RunBook::open(&path).unwrap().last("brief"), Some(due));
        assert!(!path.with_extension("json.new").exists());
    }

    #[test]
    fn a_damaged_file_is_refused_by_name_not_guessed_at() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("schedules.json");
        std::fs::write(&path, "{\"schedules\": {\"brief\": \"yesterday\"}}").unwrap();
        let e = RunBook::open(&path).unwrap_err().to_string();
        assert!(
            e.contains("schedules.json") && e.contains("`yesterday`"),
            "{e}"
        );
        std::fs::write(&path, "not json").unwrap();
        assert!(RunBook::open(&path).is_err());
    }
}
