//! One log event, one line, and nothing in it that drives a terminal: the
//! writer under the log formats escapes control characters inside an
//! event.
//!
//! Log fields carry text from outside the host (a tool's error, a server's
//! reason, a name an agent chose). `tracing-subscriber` writes line breaks
//! as they are, and escape sequences too in a field recorded with `%`, so
//! such text could start a line that looks like the host's own or move
//! the cursor over one. Escaping in the writer closes that at one place
//! instead of at every field.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

use crate::shown;

/// Makes writers that escape every control character in an event but its
/// final `\n` and tabs; with `colours` on, also the colour codes the
/// formatter writes (an injected colour code passes too, but it can
/// neither move the cursor nor start a line).
///
/// The fmt layer formats an event whole and hands it over in one
/// `write_all`, so a write is an event and its final `\n` is the line's end.
pub struct OneLinePerEvent<M> {
    pub make: M,
    pub style: Style,
}

/// How the log's lines are written.
#[derive(Clone, Copy)]
pub enum Style {
    /// Text, with colour codes or without.
    Text { colours: bool },
    /// JSON objects: a control character is escaped as JSON escapes it
    /// (`\u009b`), so that the line stays JSON (`serde_json` escapes the
    /// C0 ones itself, but not DEL or C1).
    Json,
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for OneLinePerEvent<M> {
    type Writer = EscapeControls<M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        EscapeControls {
            inner: self.make.make_writer(),
            style: self.style,
        }
    }
}

pub struct EscapeControls<W> {
    inner: W,
    style: Style,
}

impl<W: Write> Write for EscapeControls<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let (body, end) = match buf.split_last() {
            Some((b'\n', body)) => (body, "\n"),
            _ => (buf, ""),
        };
        // The formatter writes `String`s, so the lossy case never arises.
        // One `write_all` per event, so that events of two threads never
        // interleave on the unbuffered standard error.
        match escaped(&String::from_utf8_lossy(body), self.style) {
            Cow::Borrowed(_) => self.inner.write_all(buf)?,
            Cow::Owned(mut line) => {
                line.push_str(end);
                self.inner.write_all(line.as_bytes())?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn escaped(text: &str, style: Style) -> Cow<'_, str> {
    let (colours, json) = match style {
        Style::Text { colours } => (colours, false),
        Style::Json => (false, true),
    };
    let controls = |c: char| c.is_control() && c != '\t';
    if !text.chars().any(controls) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if colours && let Some(len) = colour_code(rest) {
            out.push_str(&rest[..len]);
            rest = &rest[len..];
            continue;
        }
        match c {
            c if !controls(c) => out.push(c),
            // In a JSON line a raw control can only sit inside a string.
            c if json => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => shown::push_escaped(&mut out, c),
        }
        rest = &rest[c.len_utf8()..];
    }
    Cow::Owned(out)
}

/// The length of an SGR colour code (`ESC [ digits-and-semicolons m`) at
/// the start of `text`, if one is there.
fn colour_code(text: &str) -> Option<usize> {
    let params = text.strip_prefix("\x1b[")?;
    let len = params
        .bytes()
        .take_while(|b| b.is_ascii_digit() || *b == b';')
        .count();
    (params.as_bytes().get(len) == Some(&b'm')).then_some(2 + len + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(colours: bool, events: &[&str]) -> String {
        written(Style::Text { colours }, events)
    }

    fn written(style: Style, events: &[&str]) -> String {
        let mut out = EscapeControls {
            inner: Vec::new(),
            style,
        };
        for e in events {
            out.write_all(e.as_bytes()).unwrap();
        }
        String::from_utf8(out.inner).unwrap()
    }

    #[test]
    fn an_event_with_a_break_inside_stays_one_line() {
        let text = through(false, &["INFO tool: done\r\nWARN corral: FORGED é\n"]);
        assert_eq!(text, "INFO tool: done\\r\\nWARN corral: FORGED é\n");
        assert_eq!(text.lines().count(), 1);
    }

    #[test]
    fn terminal_controls_are_escaped_and_colours_pass_only_when_on() {
        let event = "\x1b[2mts\x1b[0m \x1b[32m INFO\x1b[0m a\x1b[1A\x1b[2K\u{9b}b\x07\n";
        assert_eq!(
            through(true, &[event]),
            "\x1b[2mts\x1b[0m \x1b[32m INFO\x1b[0m a\\u{1b}[1A\\u{1b}[2K\\u{9b}b\\u{7}\n"
        );
        assert_eq!(through(false, &["a\x1b[32mb\tc\n"]), "a\\u{1b}[32mb\tc\n");
    }

    #[test]
    fn a_json_line_stays_json() {
        let line = written(Style::Json, &["{\"message\":\"a\u{9b}1A\u{7f}\"}\n"]);
        assert_eq!(line, "{\"message\":\"a\\u009b1A\\u007f\"}\n");
        let parsed: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(parsed["message"], "a\u{9b}1A\u{7f}");
    }

    #[test]
    fn plain_events_pass_unchanged() {
        assert_eq!(through(false, &["a\n", "b\n", "c"]), "a\nb\nc");
        assert_eq!(through(false, &["", "\n"]), "\n");
    }
}
