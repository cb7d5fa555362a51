//! One log event, one line: the writer under the text log format escapes
//! line breaks inside an event.
//!
//! Log fields carry text from outside the host (a tool's error, a server's
//! reason, a name an agent chose). `tracing-subscriber` escapes ANSI codes
//! in them but writes line breaks as they are, so such text could start a
//! line that looks like the host's own. The JSON format escapes them
//! already; this closes the text format at one place instead of at every
//! field.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// Makes writers that escape `\r` and every `\n` but an event's last.
///
/// The fmt layer formats an event whole and hands it over in one
/// `write_all`, so a write is an event and its final `\n` is the line's end.
pub struct OneLinePerEvent<M>(pub M);

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLinePerEvent<M> {
    type Writer = EscapeBreaks<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapeBreaks(self.0.make_writer())
    }
}

pub struct EscapeBreaks<W>(W);

impl<W: Write> Write for EscapeBreaks<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, &b"\n"[..]),
            _ => (buf, &b""[..]),
        };
        if !body.iter().any(|b| matches!(b, b'\n' | b'\r')) {
            self.0.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut line = Vec::with_capacity(buf.len() + 16);
        for &b in body {
            // Bytes, not chars: in UTF-8 no multi-byte sequence holds 0x0A
            // or 0x0D, so this never splits a character.
            match b {
                b'\n' => line.extend_from_slice(b"\\n"),
                b'\r' => line.extend_from_slice(b"\\r"),
                b => line.push(b),
            }
        }
        line.extend_from_slice(end);
        self.0.write_all(&line)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(events: &[&str]) -> String {
        let mut out = EscapeBreaks(Vec::new());
        for e in events {
            out.write_all(e.as_bytes()).unwrap();
        }
        String::from_utf8(out.0).unwrap()
    }

    #[test]
    fn an_event_with_a_break_inside_stays_one_line() {
        let text = through(&["INFO tool: done\r\nWARN corral: FORGED é\n"]);
        assert_eq!(text, "INFO tool: done\\r\\nWARN corral: FORGED é\n");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn plain_events_pass_unchanged() {
        assert_eq!(through(&["a\n", "b\n", "c"]), "a\nb\nc");
        assert_eq!(through(&["", "\n"]), "\n");
    }
}
