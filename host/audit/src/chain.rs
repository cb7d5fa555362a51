//! The chain's head and the spool it is written to: sealing a record as
//! the chain's next and writing its line, or cutting a failed write back
//! so that nothing can follow a partial line.

use std::fs::File;
use std::os::unix::fs::FileExt;

use crate::record::{Record, Unsealed};
use crate::spool;

/// The head of the chain and the spool; held under the writer's lock, so
/// the spool's order is the chain's.
pub(crate) struct Chain {
    pub spool: File,
    /// Bytes in the spool: where a failed write is cut back to.
    pub len: u64,
    pub last_seq: i64,
    pub last_hash: String,
    /// In the spool, not yet in SQLite.
    pub unmoved: Vec<Record>,
    line: Vec<u8>,
}

/// Why a record could not join the chain.
#[derive(Debug)]
pub(crate) enum AppendFailed {
    /// The record number after `last_seq` does not fit.
    Exhausted { last_seq: i64 },
    /// The spool write failed (`why`), and was cut back; if the cut failed
    /// too, `cut_failed` says how, and the spool may end in a partial line.
    Write {
        why: std::io::Error,
        cut_failed: Option<std::io::Error>,
    },
}

impl Chain {
    /// A chain whose head is record `last_seq` with hash `last_hash`,
    /// written to an empty `spool`.
    pub(crate) fn new(spool: File, last_seq: i64, last_hash: String) -> Chain {
        Chain {
            spool,
            len: 0,
            last_seq,
            last_hash,
            unmoved: Vec::new(),
            line: Vec::with_capacity(1024),
        }
    }

    /// Seals `record` as the chain's next, writes its line to the spool
    /// and keeps it for the move into SQLite. Returns its number and hash.
    /// On failure the head is unchanged.
    pub(crate) fn append(&mut self, record: Unsealed) -> Result<(i64, String), AppendFailed> {
        let Some(seq) = self.last_seq.checked_add(1) else {
            return Err(AppendFailed::Exhausted {
                last_seq: self.last_seq,
            });
        };
        let prev_hash = std::mem::take(&mut self.last_hash);
        let record = record.seal(seq, prev_hash, &mut self.line);
        if let Err(why) = self.spool.write_all_at(&self.line, self.len) {
            self.last_hash = record.prev_hash;
            let cut_failed = make_room(&self.spool, self.len).err();
            return Err(AppendFailed::Write { why, cut_failed });
        }
        self.len += self.line.len() as u64;
        self.last_seq = record.seq;
        self.last_hash.clone_from(&record.hash);
        let head = (record.seq, record.hash.clone());
        self.unmoved.push(record);
        Ok(head)
    }
}

/// Cuts the spool back to `len` bytes and keeps the room after them as a
/// hole. What was past `len` is gone at once: the cut is one size change,
/// and the room another. Only the cut can fail: once it is made, the
/// caller's `len` is the spool's, and writes continue from it whether or
/// not the room could be added (without it they grow the file, slower).
pub(crate) fn make_room(spool: &File, len: u64) -> std::io::Result<()> {
    spool.set_len(len)?;
    if len < spool::ROOM
        && let Err(e) = spool.set_len(spool::ROOM)
    {
        tracing::warn!(error = %e, "cannot keep room in the audit spool; its syncs will be slower");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Entry, GENESIS_HASH, Kind};
    use crate::redact::Redactor;

    fn unsealed(action: &str) -> Unsealed {
        let mut entry = Entry::new(Kind::Call, "a", action, "Tool::\"t\"");
        entry.verdict = Some(crate::Verdict::Allow);
        entry.policy_hash = "h".into();
        Unsealed::from_entry(&Redactor::default(), entry)
    }

    #[test]
    fn each_record_continues_the_chain_and_its_line_is_in_the_spool() {
        let file = tempfile::tempfile().unwrap();
        let mut chain = Chain::new(file.try_clone().unwrap(), 0, GENESIS_HASH.into());
        let (one, first) = chain.append(unsealed("x")).unwrap();
        let (two, _) = chain.append(unsealed("y")).unwrap();
        assert_eq!((one, two), (1, 2));
        assert_eq!(chain.unmoved[1].prev_hash, first);
        for r in &chain.unmoved {
            assert_eq!(r.compute_hash(), r.hash, "record {}", r.seq);
        }
        let mut text = vec![0; chain.len as usize];
        file.read_exact_at(&mut text, 0).unwrap();
        let lines: Vec<Record> = text
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines, chain.unmoved);
    }

    #[test]
    fn a_failed_write_leaves_the_head_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spool");
        std::fs::write(&path, b"").unwrap();
        // A read-only descriptor: every write fails.
        let file = File::open(&path).unwrap();
        let mut chain = Chain::new(file, 7, "head".into());
        let Err(AppendFailed::Write { .. }) = chain.append(unsealed("x")) else {
            panic!("the write should fail");
        };
        assert_eq!((chain.last_seq, chain.last_hash.as_str()), (7, "head"));
        assert!(chain.unmoved.is_empty());
    }

    #[test]
    fn the_last_number_cannot_be_followed() {
        let mut chain = Chain::new(tempfile::tempfile().unwrap(), i64::MAX, "h".into());
        assert!(matches!(
            chain.append(unsealed("x")),
            Err(AppendFailed::Exhausted { last_seq: i64::MAX })
        ));
    }
}
