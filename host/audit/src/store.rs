//! The SQLite side of the log: its schema, opening it for writing, and
//! moving records into it from the spool, including what a crashed writer
//! left there.

use std::fs::File;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, params};

use crate::AuditError;
use crate::record::{GENESIS_HASH, Record};
use crate::spool;

/// Inserts between two yields of the CPU while moving records into SQLite.
pub(crate) const YIELD_EVERY: usize = 32;

/// WAL size at which the background thread checkpoints.
const CHECKPOINT_BYTES: u64 = 8 << 20;

pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS audit (
    seq         INTEGER PRIMARY KEY,
    time_us     INTEGER NOT NULL,
    kind        TEXT NOT NULL,
    agent       TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    arguments   TEXT NOT NULL,
    redacted    INTEGER NOT NULL,
    session     TEXT NOT NULL,
    decision    TEXT,
    policy_ids  TEXT NOT NULL,
    errors      TEXT NOT NULL,
    policy_hash TEXT NOT NULL,
    tool_sha256 TEXT,
    duration_us INTEGER,
    outcome     TEXT,
    parent      INTEGER,
    detail      TEXT,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL,
    input_tokens  INTEGER,
    output_tokens INTEGER,
    shadow      TEXT
);
CREATE INDEX IF NOT EXISTS audit_agent_time ON audit (agent, time_us);
CREATE INDEX IF NOT EXISTS audit_time ON audit (time_us);
-- Guard rails against accidental edits; the hash chain is what catches
-- deliberate ones.
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END;
";

pub(crate) fn sqlite_err(path: &Path) -> impl Fn(rusqlite::Error) -> AuditError + '_ {
    move |source| AuditError::Sqlite {
        path: path.display().to_string(),
        source,
    }
}

fn open_writer(path: &Path) -> Result<Connection, AuditError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| AuditError::Io {
            path: dir.display().to_string(),
            message: format!("cannot create the log's directory: {e}"),
        })?;
    }
    let err = sqlite_err(path);
    let conn = Connection::open(path).map_err(&err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(&err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(AuditError::Layout {
            path: path.display().to_string(),
            message: format!("cannot switch to WAL mode (journal mode is {mode})"),
        });
    }
    // NORMAL: commits reach the WAL without a sync of SQLite's own; the
    // log syncs the WAL itself (`Store::sync`) before it lets records
    // leave the spool. SQLite still syncs the WAL before and the database
    // after each checkpoint.
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(&err)?;
    // Checkpoints run on the background thread (`Store::checkpoint`).
    conn.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(&err)?;
    conn.execute_batch(SCHEMA).map_err(&err)?;
    add_usage_columns(&conn).map_err(&err)?;
    add_shadow_column(&conn).map_err(&err)?;
    Ok(conn)
}

/// Whether the table has the token usage columns (logs created before
/// they were added do not, until a writer opens them).
pub(crate) fn has_usage_columns(conn: &Connection) -> rusqlite::Result<bool> {
    has_column(conn, "input_tokens")
}

/// Whether the table has column `wanted`.
pub(crate) fn has_column(conn: &Connection, wanted: &str) -> rusqlite::Result<bool> {
    let mut columns = conn.prepare("SELECT name FROM pragma_table_info('audit')")?;
    let names = columns.query_map([], |r| r.get::<_, String>(0))?;
    for name in names {
        if name? == wanted {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Adds the `shadow` column to a log created before it existed; the
/// records already there keep NULL, which is what they hashed.
fn add_shadow_column(conn: &Connection) -> rusqlite::Result<()> {
    if has_column(conn, "shadow")? {
        return Ok(());
    }
    conn.execute_batch("ALTER TABLE audit ADD COLUMN shadow TEXT;")
}

/// Adds the token usage columns to a log created before they existed.
/// The records already there keep NULL, which is what they hashed.
fn add_usage_columns(conn: &Connection) -> rusqlite::Result<()> {
    if has_usage_columns(conn)? {
        return Ok(());
    }
    conn.execute_batch(
        "ALTER TABLE audit ADD COLUMN input_tokens INTEGER;
         ALTER TABLE audit ADD COLUMN output_tokens INTEGER;",
    )
}

fn chain_head(conn: &Connection, path: &Path) -> Result<(i64, String), AuditError> {
    let head = conn
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(sqlite_err(path))?;
    Ok(head.unwrap_or((0, GENESIS_HASH.to_string())))
}

/// The SQLite side: where records end up, indexed for queries.
pub(crate) struct Store {
    conn: Connection,
    path: PathBuf,
    /// The last record SQLite holds: a retry after a failed sync does not
    /// insert a record twice.
    last_seq: i64,
    /// SQLite's WAL, for the log's own fdatasync.
    wal: Option<File>,
}

impl Store {
    /// Opens (creating if needed) the database for writing, in WAL mode
    /// with the log's schema. Returns it with the chain's head: the last
    /// record's number and hash, or 0 and the genesis hash.
    pub(crate) fn open(path: &Path) -> Result<(Store, i64, String), AuditError> {
        let conn = open_writer(path)?;
        let (seq, hash) = chain_head(&conn, path)?;
        let store = Store {
            conn,
            path: path.to_path_buf(),
            last_seq: seq,
            wal: None,
        };
        Ok((store, seq, hash))
    }

    /// Moves what a previous writer left in the spool into SQLite, after
    /// checking that it continues the chain. Returns the chain's head.
    pub(crate) fn recover(
        &mut self,
        spool_path: &Path,
        mut seq: i64,
        mut hash: String,
        max_batch: usize,
    ) -> Result<(i64, String), AuditError> {
        let spooled = spool::read(spool_path)?;
        if let Some(stray) = spooled.stray {
            return Err(AuditError::Layout {
                path: spool_path.display().to_string(),
                message: format!(
                    "{}; the log will not open for writing until then",
                    stray.describe(spool_path)
                ),
            });
        }
        if spooled.torn_bytes > 0 {
            tracing::warn!(
                bytes = spooled.torn_bytes,
                spool = %spool_path.display(),
                "dropping a torn last line from the audit spool: a write cut off by a crash, never acknowledged as durable"
            );
        }
        let bad = |record: &Record, why: String| AuditError::Layout {
            path: spool_path.display().to_string(),
            message: format!(
                "record {} in the spool {why}; the spool holds decisions not yet in the database, so the log will not open for writing until this is resolved (`corral audit verify` shows the chain)",
                record.seq
            ),
        };
        let had_records = !spooled.records.is_empty();
        let mut fresh = Vec::new();
        for record in spooled.records {
            if record.seq <= seq {
                // Moved already, by a writer that stopped before it could
                // empty the spool; it must match what the database holds.
                if !spool::matches_stored(&self.conn, &record).map_err(sqlite_err(&self.path))? {
                    return Err(bad(
                        &record,
                        "differs from the database's record of that number".into(),
                    ));
                }
                continue;
            }
            if let Some(why) = spool::chain_problem(seq, &hash, &record) {
                return Err(bad(&record, format!("breaks the chain: {why}")));
            }
            seq = record.seq;
            hash.clone_from(&record.hash);
            fresh.push(record);
        }
        if !fresh.is_empty() {
            tracing::info!(
                records = fresh.len(),
                "moving records a previous writer left in the audit spool into the database"
            );
            self.take_in(&fresh, max_batch)?;
        }
        // Even when every spooled record was already in the database: a
        // killed writer may have moved them without syncing, and the spool
        // is about to be emptied.
        if had_records {
            self.sync()?;
        }
        Ok((seq, hash))
    }

    /// Inserts the records it does not hold yet, `max_batch` per
    /// transaction. Not durable until [`Store::sync`].
    pub(crate) fn take_in(
        &mut self,
        records: &[Record],
        max_batch: usize,
    ) -> Result<(), AuditError> {
        let start = records.partition_point(|r| r.seq <= self.last_seq);
        for chunk in records[start..].chunks(max_batch.max(1)) {
            self.insert(chunk)?;
        }
        Ok(())
    }

    fn insert(&mut self, records: &[Record]) -> Result<(), AuditError> {
        let err = sqlite_err(&self.path);
        let tx = self.conn.transaction().map_err(&err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO audit (seq, time_us, kind, agent, action, resource, arguments,
                     redacted, session, decision, policy_ids, errors, policy_hash, tool_sha256,
                     duration_us, outcome, parent, detail, prev_hash, hash, input_tokens,
                     output_tokens, shadow)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15,
                     ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23)",
                )
                .map_err(&err)?;
            for (i, record) in records.iter().enumerate() {
                // A long move runs beside the calls it records, on a
                // machine with few cores: a woken caller that lands on
                // this core waits at most this many inserts.
                if i % YIELD_EVERY == YIELD_EVERY - 1 {
                    std::thread::yield_now();
                }
                insert
                    .execute(params![
                        record.seq,
                        record.time_us,
                        record.kind.as_str(),
                        record.agent,
                        record.action,
                        record.resource,
                        record.arguments,
                        record.redacted,
                        record.session,
                        record.decision,
                        json_list(&record.policy_ids),
                        json_list(&record.errors),
                        record.policy_hash,
                        record.tool_sha256,
                        record.duration_us,
                        record.outcome.map(|o| o.as_str()),
                        record.parent,
                        record.detail,
                        record.prev_hash,
                        record.hash,
                        record.usage.map(|u| u.storable().input_tokens as i64),
                        record.usage.map(|u| u.storable().output_tokens as i64),
                        record.shadow,
                    ])
                    .map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        if let Some(last) = records.last() {
            self.last_seq = last.seq;
        }
        Ok(())
    }

    /// fsync applies to the file, not the descriptor: syncing a read-only
    /// handle of our own flushes what SQLite's connection wrote.
    pub(crate) fn sync(&mut self) -> Result<(), AuditError> {
        let mut name = self.path.clone().into_os_string();
        name.push("-wal");
        let io = |message: String| AuditError::Io {
            path: self.path.display().to_string(),
            message,
        };
        if self.wal.is_none() {
            let file = File::open(&name)
                .map_err(|e| io(format!("cannot open {}: {e}", Path::new(&name).display())))?;
            self.wal = Some(file);
        }
        match self.wal.as_ref().map(File::sync_data) {
            Some(Err(e)) => Err(io(format!(
                "fdatasync of {} failed: {e}",
                Path::new(&name).display()
            ))),
            _ => Ok(()),
        }
    }

    /// Copies the WAL back into the database once it has grown. Here, on
    /// the background thread, rather than left to SQLite's automatic
    /// checkpoint, which would run inside whichever commit crossed the
    /// threshold.
    pub(crate) fn checkpoint(&mut self) {
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
        if size < CHECKPOINT_BYTES {
            return;
        }
        if let Err(e) = self
            .conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
        {
            tracing::warn!(error = %e, "audit checkpoint failed; will retry");
        }
    }
}

pub(crate) fn json_list(items: &[String]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The schema as it was before token usage and the shadow verdict had
    /// columns of their own.
    fn schema_before_usage() -> String {
        SCHEMA.replace(
            "hash        TEXT NOT NULL,\n    input_tokens  INTEGER,\n    output_tokens INTEGER,\n    shadow      TEXT\n",
            "hash        TEXT NOT NULL\n",
        )
    }

    #[test]
    fn a_log_from_before_usage_columns_gets_them_and_keeps_its_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.db");
        let old = Connection::open(&path).unwrap();
        assert_ne!(schema_before_usage(), SCHEMA, "the old schema is derived");
        old.execute_batch(&schema_before_usage()).unwrap();
        assert!(!has_usage_columns(&old).unwrap());
        old.execute(
            "INSERT INTO audit (seq, time_us, kind, agent, action, resource, arguments, redacted,
             session, policy_ids, errors, policy_hash, prev_hash, hash)
             VALUES (1, 5, 'call', 'a', 't', 'Tool::\"t\"', '{}', 0, '{}', '[]', '[]', 'p', 'g', 'h')",
            [],
        )
        .unwrap();
        drop(old);
        // A reader of the old log sees the record, with no shadow verdict,
        // and a shadow query finds nothing rather than failing.
        let reader = crate::AuditReader::open(&path).unwrap();
        let all = reader.query(&crate::Filter::default()).unwrap();
        assert_eq!((all.len(), all[0].shadow.as_deref()), (1, None));
        let shadowed = crate::Filter {
            shadow_differs: true,
            ..crate::Filter::default()
        };
        assert!(reader.query(&shadowed).unwrap().is_empty());
        drop(reader);
        let (store, seq, hash) = Store::open(&path).unwrap();
        assert_eq!((seq, hash.as_str()), (1, "h"));
        assert!(has_usage_columns(&store.conn).unwrap());
        let usage: Option<i64> = store
            .conn
            .query_row("SELECT input_tokens FROM audit WHERE seq = 1", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(usage, None);
        assert!(has_column(&store.conn, "shadow").unwrap());
        drop(store);
        // Opening again finds the columns and adds nothing.
        Store::open(&path).unwrap();
    }

    #[test]
    fn take_in_skips_records_the_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, _, _) = Store::open(&dir.path().join("audit.db")).unwrap();
        let record = |seq: i64| Record {
            seq,
            time_us: seq,
            kind: crate::Kind::Outcome,
            agent: "a".into(),
            action: "use_model".into(),
            resource: "Model::\"m\"".into(),
            arguments: "{}".into(),
            redacted: false,
            session: "{}".into(),
            decision: None,
            policy_ids: vec![],
            errors: vec![],
            policy_hash: "p".into(),
            tool_sha256: None,
            duration_us: None,
            outcome: Some(crate::Outcome::Ok),
            parent: Some(1),
            detail: None,
            usage: Some(crate::TokenUsage {
                input_tokens: 3,
                output_tokens: u64::MAX,
            }),
            shadow: None,
            prev_hash: "x".into(),
            hash: format!("h{seq}"),
        };
        store.take_in(&[record(1), record(2)], 1).unwrap();
        // A retry after a failed sync hands the same records again.
        store
            .take_in(&[record(1), record(2), record(3)], 8)
            .unwrap();
        let rows: Vec<(i64, i64, i64)> = store
            .conn
            .prepare("SELECT seq, input_tokens, output_tokens FROM audit ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![(1, 3, i64::MAX), (2, 3, i64::MAX), (3, 3, i64::MAX)]
        );
    }
}
