//! Host implementations of `corral:tool/workspace` and
//! `corral:tool/logging`.

use crate::bindings::corral::tool::{logging, types, workspace};
use crate::call_state::{CallState, LogLine};
use crate::error::Limit;
use crate::workspace::{FsFailure, Kind, Resolved, normalize};
use corral_gate::{Capability, Denial, FileOp, GateDecision};

impl types::Host for CallState {}

impl From<Denial> for types::Denial {
    fn from(d: Denial) -> Self {
        types::Denial {
            reason: d.reason,
            policy_ids: d.policy_ids,
        }
    }
}

impl From<FsFailure> for workspace::FsError {
    fn from(f: FsFailure) -> Self {
        match f {
            FsFailure::Denied(d) => workspace::FsError::Denied(d.into()),
            FsFailure::InvalidPath(m) => workspace::FsError::InvalidPath(m),
            FsFailure::NotFound(m) => workspace::FsError::NotFound(m),
            FsFailure::WrongKind(m) => workspace::FsError::WrongKind(m),
            FsFailure::TooLarge(n) => workspace::FsError::TooLarge(n),
            FsFailure::Io(m) => workspace::FsError::Io(m),
        }
    }
}

impl From<Kind> for workspace::EntryKind {
    fn from(k: Kind) -> Self {
        match k {
            Kind::File => workspace::EntryKind::File,
            Kind::Directory => workspace::EntryKind::Directory,
            Kind::Symlink => workspace::EntryKind::Symlink,
            Kind::Other => workspace::EntryKind::Other,
        }
    }
}

impl CallState {
    /// Normalizes the path, resolves it to the canonical path it touches
    /// (links inside the workspace followed; the last one too unless the
    /// operation acts on the entry itself), asks the gate about that path,
    /// and hands back the path and the workspace to operate on. Nothing is
    /// opened, read or written before the gate has said yes; resolving
    /// only looks at entries (`lstat`, `readlink`).
    fn authorize_file(
        &mut self,
        op: FileOp,
        path: &str,
    ) -> Result<(Resolved, &mut crate::workspace::Workspace), FsFailure> {
        self.guard.reach();
        let path = normalize(path)?;
        let follow_last = !matches!(op, FileOp::Stat | FileOp::Remove);
        let Some(ws) = self.workspace.as_mut() else {
            return Err(FsFailure::Denied(Denial::new(
                "this call has no workspace; grant one (e.g. `--workspace DIR`)",
            )));
        };
        let resolved = ws.resolve(&path, follow_last)?;
        if let GateDecision::Deny(d) = self.guard.check(Capability::File {
            op,
            path: resolved.path.clone(),
        }) {
            return Err(FsFailure::Denied(d));
        }
        let ws = self
            .workspace
            .as_mut()
            .ok_or_else(|| FsFailure::Io("workspace vanished".into()))?;
        Ok((resolved, ws))
    }
}

type Res<T> = wasmtime::Result<Result<T, workspace::FsError>>;

impl workspace::Host for CallState {
    fn read(&mut self, path: String) -> Res<Vec<u8>> {
        Ok(self
            .authorize_file(FileOp::Read, &path)
            .and_then(|(p, ws)| ws.read(&p))
            .map_err(Into::into))
    }

    fn write(&mut self, path: String, contents: Vec<u8>) -> Res<()> {
        Ok(self
            .authorize_file(FileOp::Write, &path)
            .and_then(|(p, ws)| ws.write(&p, &contents))
            .map_err(Into::into))
    }

    fn list_dir(&mut self, path: String) -> Res<Vec<workspace::Entry>> {
        Ok(self
            .authorize_file(FileOp::List, &path)
            .and_then(|(p, ws)| ws.list(&p))
            .map(|entries| {
                entries
                    .into_iter()
                    .map(|(name, kind, size)| workspace::Entry {
                        name,
                        kind: kind.into(),
                        size,
                    })
                    .collect()
            })
            .map_err(Into::into))
    }

    fn stat(&mut self, path: String) -> Res<workspace::Metadata> {
        Ok(self
            .authorize_file(FileOp::Stat, &path)
            .and_then(|(p, ws)| ws.stat(&p))
            .map(|(kind, size, modified_ms)| workspace::Metadata {
                kind: kind.into(),
                size,
                modified_ms,
            })
            .map_err(Into::into))
    }

    fn remove(&mut self, path: String) -> Res<()> {
        Ok(self
            .authorize_file(FileOp::Remove, &path)
            .and_then(|(p, ws)| ws.remove(&p))
            .map_err(Into::into))
    }
}

impl logging::Host for CallState {
    fn log(&mut self, level: logging::Level, message: String) -> wasmtime::Result<()> {
        self.guard.reach();
        self.log_bytes += message.len() as u64;
        if self.log_bytes > self.limits.log_bytes {
            let limit = Limit::LogVolume {
                limit: self.limits.log_bytes,
            };
            self.broke = Some(limit);
            return Err(wasmtime::Error::msg(format!("exceeded {limit}")));
        }
        let level = match level {
            logging::Level::Trace => "trace",
            logging::Level::Debug => "debug",
            logging::Level::Info => "info",
            logging::Level::Warn => "warn",
            logging::Level::Error => "error",
        };
        let caller = self.guard.caller();
        // The tool's text is a quoted field, never the line's own message:
        // as the message, its line breaks would start lines of the host's.
        tracing::info!(target: "corral::tool", agent = %caller.agent, tool = %caller.tool, tool_level = level, tool_message = ?message, "a tool logged");
        self.logs.push(LogLine { level, message });
        Ok(())
    }
}
