//! Reading the log back: queries, tailing, verification.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OpenFlags, Row, ToSql};

use crate::AuditError;
use crate::record::{GENESIS_HASH, Kind, Outcome, Record};
use crate::spool;

/// Which records to read. Every field narrows the selection.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Records of this agent.
    pub agent: Option<String>,
    /// The action: a tool name, or `read_file`, `http_request`, …
    pub action: Option<String>,
    /// Decisions that came to this.
    pub verdict: Option<crate::Verdict>,
    /// Records that belong to this one (`parent`): a call's capability
    /// uses, outcome and approvals.
    pub parent: Option<i64>,
    /// Records of this kind.
    pub kind: Option<Kind>,
    /// Records at or after this time (microseconds since the epoch).
    pub since_us: Option<i64>,
    /// Records after this sequence number (for paging).
    pub after_seq: Option<i64>,
    /// At most this many records.
    pub limit: Option<usize>,
    /// Only decisions that enforcing the `@shadow` policies would have
    /// changed.
    pub shadow_differs: bool,
    /// Each record's arguments cut to at most this many characters, for
    /// showing many records at once with bounded memory. Records read so
    /// no longer match their hash: never verify them.
    pub clip_arguments: Option<usize>,
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Records checked.
    pub records: u64,
    /// The last good record's sequence number and hash: pin it elsewhere to
    /// detect a later truncation of the log's tail.
    pub head_seq: i64,
    /// See `head_seq`.
    pub head_hash: String,
    /// The first record that breaks the chain, and why.
    pub first_bad: Option<(i64, String)>,
    /// Of `records`, how many are in the spool and not yet in the
    /// database: written by a writer that stopped (or has not yet moved
    /// them) before it could move them in. The next writer to open the
    /// log moves them; queries show them from then on.
    pub spooled: u64,
}

impl VerifyReport {
    /// Whether the whole chain checked out.
    pub fn ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// A read-only view of the log. It never blocks the writer (WAL readers
/// see a snapshot).
pub struct AuditReader {
    conn: Connection,
    path: PathBuf,
    /// The columns a record is read from: [`COLUMNS`], with `NULL` for
    /// those an older log does not have yet.
    columns: String,
}

const COLUMNS: &str = "seq, time_us, kind, agent, action, resource, arguments, redacted, session,
    decision, policy_ids, errors, policy_hash, tool_sha256, duration_us, outcome, parent, detail,
    prev_hash, hash";

impl AuditReader {
    /// Opens the log read-only; refuses a path where no log exists.
    pub fn open(path: &Path) -> Result<AuditReader, AuditError> {
        if !path.exists() {
            return Err(AuditError::Io {
                path: path.display().to_string(),
                message: "no such audit log; the broker creates it on first start (check --audit or corral.toml)".into(),
            });
        }
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| AuditError::Sqlite {
            path: path.display().to_string(),
            source,
        })?;
        let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
        // A log no writer has opened since a column was added lacks it;
        // its records have none of it.
        let has = |column: &str| {
            crate::store::has_column(&conn, column).map_err(|source| AuditError::Sqlite {
                path: path.display().to_string(),
                source,
            })
        };
        let usage = if has("input_tokens")? {
            "input_tokens, output_tokens"
        } else {
            "NULL, NULL"
        };
        let shadow = if has("shadow")? { "shadow" } else { "NULL" };
        let columns = format!("{COLUMNS}, {usage}, {shadow}");
        Ok(AuditReader {
            conn,
            path: path.to_path_buf(),
            columns,
        })
    }

    fn err(&self, source: rusqlite::Error) -> AuditError {
        AuditError::Sqlite {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Records matching `filter`, oldest first.
    pub fn query(&self, filter: &Filter) -> Result<Vec<Record>, AuditError> {
        let columns = match filter.clip_arguments {
            Some(n) => {
                self.columns
                    .replacen("arguments,", &format!("substr(arguments, 1, {n}),"), 1)
            }
            None => self.columns.clone(),
        };
        let mut sql = format!("SELECT {columns} FROM audit WHERE 1=1");
        let mut args: Vec<Box<dyn ToSql>> = Vec::new();
        if let Some(agent) = &filter.agent {
            sql.push_str(" AND agent = ?");
            args.push(Box::new(agent.clone()));
        }
        if let Some(action) = &filter.action {
            sql.push_str(" AND action = ?");
            args.push(Box::new(action.clone()));
        }
        if let Some(verdict) = filter.verdict {
            sql.push_str(" AND decision = ?");
            args.push(Box::new(verdict.as_str()));
        }
        if let Some(parent) = filter.parent {
            sql.push_str(" AND parent = ?");
            args.push(Box::new(parent));
        }
        if let Some(kind) = filter.kind {
            sql.push_str(" AND kind = ?");
            args.push(Box::new(kind.as_str()));
        }
        if let Some(since) = filter.since_us {
            sql.push_str(" AND time_us >= ?");
            args.push(Box::new(since));
        }
        if filter.shadow_differs {
            // A log without the column has no such records.
            sql.push_str(if self.columns.ends_with("NULL") {
                " AND 0"
            } else {
                " AND shadow IS NOT NULL"
            });
        }
        if let Some(after) = filter.after_seq {
            sql.push_str(" AND seq > ?");
            args.push(Box::new(after));
        }
        sql.push_str(" ORDER BY seq");
        if let Some(limit) = filter.limit {
            sql.push_str(&format!(" LIMIT {limit}"));
        }
        let mut stmt = self.conn.prepare(&sql).map_err(|e| self.err(e))?;
        let params: Vec<&dyn ToSql> = args.iter().map(|b| b.as_ref()).collect();
        let rows = stmt
            .query_map(params.as_slice(), read_row)
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(|e| self.err(e))??);
        }
        Ok(out)
    }

    /// The last `n` records, oldest first.
    pub fn last(&self, n: usize) -> Result<Vec<Record>, AuditError> {
        let head = self.head_seq()?;
        self.query(&Filter {
            after_seq: Some(head.saturating_sub(n as i64)),
            ..Filter::default()
        })
    }

    /// The last record's sequence number in the database (0 if none).
    pub fn head_seq(&self) -> Result<i64, AuditError> {
        self.conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM audit", [], |r| r.get(0))
            .map_err(|e| self.err(e))
    }

    /// Walks the whole chain in order, the database's records and then
    /// those still in the spool. Stops at the first bad record.
    pub fn verify(&self) -> Result<VerifyReport, AuditError> {
        // The spool first: a live writer empties it only once the database
        // holds its records, so the database read after it holds everything
        // before the spool's first record.
        let spooled = spool::read_for_reader(&self.path);
        let mut report = VerifyReport {
            records: 0,
            head_seq: 0,
            head_hash: GENESIS_HASH.to_string(),
            first_bad: None,
            spooled: 0,
        };
        {
            let mut stmt = self
                .conn
                .prepare(&format!("SELECT {} FROM audit ORDER BY seq", self.columns))
                .map_err(|e| self.err(e))?;
            let mut rows = stmt.query([]).map_err(|e| self.err(e))?;
            while let Some(row) = rows.next().map_err(|e| self.err(e))? {
                let seq: i64 = row.get(0).map_err(|e| self.err(e))?;
                let record = match read_row(row) {
                    Ok(Ok(r)) => r,
                    Ok(Err(e)) => {
                        report.first_bad = Some((seq, format!("unreadable: {e}")));
                        return Ok(report);
                    }
                    Err(e) => {
                        report.first_bad = Some((seq, format!("unreadable: {e}")));
                        return Ok(report);
                    }
                };
                if !report.step(record, "") {
                    return Ok(report);
                }
            }
        }
        let spooled = match spooled {
            Ok(spooled) => spooled,
            Err(e) => {
                report.first_bad =
                    Some((report.head_seq + 1, format!("the spool is unreadable: {e}")));
                return Ok(report);
            }
        };
        for record in spooled.records {
            // Already moved into the database; the writer had not yet
            // emptied the spool. It must be the database's record, as
            // reopening the log checks too.
            if record.seq <= report.head_seq && report.spooled == 0 {
                if !spool::matches_stored(&self.conn, &record).map_err(|e| self.err(e))? {
                    report.first_bad = Some((
                        record.seq,
                        "its copy in the spool differs from the database's record of that number: one of them was edited".into(),
                    ));
                    return Ok(report);
                }
                continue;
            }
            if !report.step(record, " (in the spool)") {
                return Ok(report);
            }
            report.spooled += 1;
        }
        if let Some(stray) = spooled.stray {
            report.first_bad = Some((
                report.head_seq + 1,
                stray.describe(&spool::path_of(&self.path)),
            ));
        }
        Ok(report)
    }
}

impl VerifyReport {
    /// Checks `record` as the chain's next; `false` once it is bad.
    fn step(&mut self, record: Record, place: &str) -> bool {
        if let Some(problem) = spool::chain_problem(self.head_seq, &self.head_hash, &record) {
            self.first_bad = Some((record.seq, format!("{problem}{place}")));
            return false;
        }
        self.records += 1;
        self.head_seq = record.seq;
        self.head_hash = record.hash;
        true
    }
}

fn usage(input: Option<i64>, output: Option<i64>) -> Option<crate::TokenUsage> {
    let count = |n: Option<i64>| n.map_or(0, |n| u64::try_from(n).unwrap_or(0));
    (input.is_some() || output.is_some()).then(|| crate::TokenUsage {
        input_tokens: count(input),
        output_tokens: count(output),
    })
}

fn read_row(row: &Row<'_>) -> rusqlite::Result<Result<Record, AuditError>> {
    let kind: String = row.get(2)?;
    let policy_ids: String = row.get(10)?;
    let errors: String = row.get(11)?;
    let outcome: Option<String> = row.get(15)?;
    let seq: i64 = row.get(0)?;
    let bad = |what: &str| AuditError::Layout {
        path: String::new(),
        message: format!("record {seq}: {what}"),
    };
    let Some(kind) = Kind::parse(&kind) else {
        return Ok(Err(bad(&format!("unknown kind `{kind}`"))));
    };
    let outcome = match outcome {
        None => None,
        Some(o) => match Outcome::parse(&o) {
            Some(o) => Some(o),
            None => return Ok(Err(bad(&format!("unknown outcome `{o}`")))),
        },
    };
    let Ok(policy_ids) = serde_json::from_str::<Vec<String>>(&policy_ids) else {
        return Ok(Err(bad("policy_ids is not a JSON list of strings")));
    };
    let Ok(errors) = serde_json::from_str::<Vec<String>>(&errors) else {
        return Ok(Err(bad("errors is not a JSON list of strings")));
    };
    Ok(Ok(Record {
        seq,
        time_us: row.get(1)?,
        kind,
        agent: row.get(3)?,
        action: row.get(4)?,
        resource: row.get(5)?,
        arguments: row.get(6)?,
        redacted: row.get(7)?,
        session: row.get(8)?,
        decision: row.get(9)?,
        policy_ids,
        errors,
        policy_hash: row.get(12)?,
        tool_sha256: row.get(13)?,
        duration_us: row.get(14)?,
        outcome,
        parent: row.get(16)?,
        detail: row.get(17)?,
        prev_hash: row.get(18)?,
        hash: row.get(19)?,
        usage: usage(row.get(20)?, row.get(21)?),
        shadow: row.get(22)?,
    }))
}
