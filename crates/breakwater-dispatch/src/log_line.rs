//! Log output: one line an event, whatever its fields hold.
//!
//! Event data reaches the log (a `log` action renders it), and so do a
//! receiver's words (an error quotes its answer). A newline in either would
//! start a line of its own, one that could pass for the service's: a forged
//! `ERROR` line, say. The formatter writes each event in one piece, so the
//! writer here escapes every control character in that piece but its final
//! newline: `\n` becomes the two characters `\n`, and so on.

use std::borrow::Cow;
use std::io::Write;

use tracing_subscriber::fmt::MakeWriter;

/// Writes each event to stderr as one line (see the [module docs](self)).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OneLine {
    /// The formatter colours its output: escape codes are its own.
    pub(crate) ansi: bool,
}

impl<'a> MakeWriter<'a> for OneLine {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> Self::Writer {
        LineWriter {
            buf: Vec::new(),
            ansi: self.ansi,
        }
    }
}

/// One event's text, written out escaped when dropped.
#[derive(Debug)]
pub(crate) struct LineWriter {
    buf: Vec<u8>,
    ansi: bool,
}

impl Write for LineWriter {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let line = escape(&self.buf, self.ansi);
            let _ = std::io::stderr().lock().write_all(&line);
        }
    }
}

/// Line breaks beyond the control characters.
const SEPARATORS: [char; 3] = ['\u{2028}', '\u{2029}', '\u{85}'];

/// `text` with every control character escaped but a final newline (and
/// tabs, and escape codes when `ansi`); Unicode's line and paragraph
/// separators and NEL too, which some log readers break lines on.
pub(crate) fn escape(text: &[u8], ansi: bool) -> Cow<'_, [u8]> {
    let (body, end) = match text.strip_suffix(b"\n") {
        Some(body) => (body, &b"\n"[..]),
        None => (text, &b""[..]),
    };
    let plain = |b: u8| b == b'\t' || (b == 0x1b && ansi) || (b >= 0x20 && b != 0x7f);
    let separator = |rest: &[u8]| {
        SEPARATORS
            .iter()
            .copied()
            .find(|c| rest.starts_with(c.encode_utf8(&mut [0; 4]).as_bytes()))
    };
    // Each separator's UTF-8 starts with 0xe2 or 0xc2.
    let clean = body
        .iter()
        .enumerate()
        .all(|(i, b)| plain(*b) && !(matches!(b, 0xe2 | 0xc2) && separator(&body[i..]).is_some()));
    if clean {
        return Cow::Borrowed(text);
    }
    let mut out = Vec::with_capacity(text.len() + 16);
    let mut i = 0;
    while i < body.len() {
        if let Some(c) = separator(&body[i..]) {
            out.extend_from_slice(format!("\\u{{{:x}}}", u32::from(c)).as_bytes());
            i += c.len_utf8();
            continue;
        }
        match body[i] {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b if plain(b) => out.push(b),
            b => out.extend_from_slice(format!("\\x{b:02x}").as_bytes()),
        }
        i += 1;
    }
    out.extend_from_slice(end);
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, ansi: bool) -> String {
        String::from_utf8(escape(s.as_bytes(), ansi).into_owned()).unwrap()
    }

    #[test]
    fn a_forged_line_stays_inside_its_event() {
        let forged = "INFO breakwater::action: order x\n2026-12-07T10:00:00Z ERROR breakwater_dispatch::server: the store is gone\n";
        let out = esc(forged, false);
        assert_eq!(out.matches('\n').count(), 1, "{out}");
        assert!(out.ends_with("gone\n"));
        assert!(out.contains("order x\\n2026-12-07"));
    }

    #[test]
    fn every_control_character_is_escaped_but_tabs_and_the_last_newline() {
        assert_eq!(
            esc("a\rb\tc\u{7}d\u{1b}[31me\n", false),
            "a\\rb\tc\\x07d\\x1b[31me\n"
        );
        // The formatter's own colours survive when it colours.
        assert_eq!(
            esc("\u{1b}[31mERROR\u{1b}[0m\n", true),
            "\u{1b}[31mERROR\u{1b}[0m\n"
        );
        assert_eq!(esc("a\u{2028}b\u{85}c\n", false), "a\\u{2028}b\\u{85}c\n");
        assert_eq!(esc("plain ünïcode\n", false), "plain ünïcode\n");
        assert!(matches!(escape(b"plain\n", false), Cow::Borrowed(_)));
    }
}
