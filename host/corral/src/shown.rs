//! Text from outside the host, made safe to show on a person's terminal.
//!
//! An agent's reply, a tool's error in an audit record or a path an agent
//! chose may hold line breaks and terminal control sequences. Printed as
//! they are, they could start a line that reads as the host's own (a
//! forged `corral>` notice, a forged audit record) or drive the terminal
//! (clear the screen, move the cursor over what was printed, set the
//! clipboard with OSC 52). Every such character is shown escaped instead.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` on one line: every control character, line breaks included, as
/// an escape (`\n`, `\r`, `\t`, `\u{1b}`). So are the characters that
/// reorder or break text without being controls (bidirectional overrides
/// and isolates, the line and paragraph separators), which could make a
/// line read differently from what it holds.
pub fn inline(text: &str) -> Cow<'_, str> {
    escaped(text, |_| false)
}

/// `text` with its line breaks and tabs kept and every other control
/// character escaped, for output that scripts read whole.
pub fn block(text: &str) -> Cow<'_, str> {
    escaped(text, |c| c == '\n' || c == '\t')
}

/// `text` as lines that all belong to whoever `prefix` names: the first
/// after `prefix`, the others indented to line up under it, so that no line of
/// it starts at the left edge where the host's own lines (`corral> …`,
/// `[corral, not …]`) start.
pub fn attributed(prefix: &str, text: &str) -> String {
    let indent = " ".repeat(prefix.chars().count().max(2));
    let mut out = String::with_capacity(prefix.len() + text.len());
    for (i, line) in text.split('\n').enumerate() {
        if i == 0 {
            out.push_str(prefix);
        } else {
            out.push('\n');
            out.push_str(&indent);
        }
        out.push_str(&escaped(line, |c| c == '\t'));
    }
    out
}

/// Characters shown escaped: controls, and the ones that reorder or break
/// a line while printing nothing.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{61c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

fn escaped(text: &str, keep: impl Fn(char) -> bool) -> Cow<'_, str> {
    if !text.chars().any(|c| hidden(c) && !keep(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !hidden(c) || keep(c) {
            out.push(c);
        } else {
            push_escaped(&mut out, c);
        }
    }
    Cow::Owned(out)
}

/// Writes `c` as this module shows a character it escapes: `\n`, `\r`,
/// `\t`, or `\u{hex}`.
pub fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inline_escapes_breaks_and_terminal_controls() {
        assert_eq!(inline("plain é text"), "plain é text");
        assert_eq!(
            inline("ok\n#7 call\r\x1b[2J\u{9b}1A\x07\x7f"),
            r"ok\n#7 call\r\u{1b}[2J\u{9b}1A\u{7}\u{7f}"
        );
    }

    #[test]
    fn text_that_reorders_a_line_is_escaped_too() {
        assert_eq!(
            inline("allow\u{202e}yned\u{2066}x\u{2028}y"),
            r"allow\u{202e}yned\u{2066}x\u{2028}y"
        );
    }

    #[test]
    fn block_keeps_lines_and_tabs_only() {
        assert_eq!(block("a\n\tb"), "a\n\tb");
        assert_eq!(
            block("a\r\n\x1b]52;c;eA==\x07"),
            "a\\r\n\\u{1b}]52;c;eA==\\u{7}"
        );
    }

    #[test]
    fn attributed_lines_never_start_where_the_hosts_do() {
        let shown = attributed("assistant> ", "done\ncorral> approved\r\x1b[1A");
        assert_eq!(
            shown,
            "assistant> done\n           corral> approved\\r\\u{1b}[1A"
        );
        assert!(
            shown
                .lines()
                .all(|l| l.starts_with("assistant> ") || l.starts_with(' '))
        );
    }
}
