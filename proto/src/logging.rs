//! Logging of both binaries: `tracing` to stderr, as text or JSON lines.
//!
//! Text logs carry names and text that come from outside (a viewer's login
//! name, a relay's viewer names, camera names, a camera's fault text): a
//! newline in one of them would start a forged log line that on-call staff
//! and log shippers take for the node's own, and an ANSI escape would
//! rewrite the terminal. So every field value and message of a text line
//! goes through [`EscapedFields`]: control characters (C0, DEL, C1) and the
//! Unicode line separators and bidirectional overrides come out as `\n`,
//! `\u{1b}`, ... (tracing-subscriber 0.3.23 escapes ESC in messages only,
//! never `\n`, and never in other fields). JSON lines need nothing more:
//! serde_json escapes every control character.

use std::fmt::{self, Write as _};
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::FormatFields;

/// Installs the global subscriber: `RUST_LOG` (default `info`) filters,
/// `format` is `json` for JSON lines, anything else for escaped text.
pub fn init(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.fmt_fields(EscapedFields::default()).init();
    }
}

/// tracing-subscriber's default field format, with every control character
/// of the values escaped (see the module doc). Field names are plain (no
/// italics).
#[derive(Debug, Default)]
pub struct EscapedFields {
    inner: DefaultFields,
}

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut escaping = Escaping { out: writer };
        self.inner.format_fields(Writer::new(&mut escaping), fields)
    }
}

/// A `fmt::Write` that escapes on its way to `out`.
struct Escaping<W> {
    out: W,
}

impl<W: fmt::Write> fmt::Write for Escaping<W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut clean = 0;
        for (i, c) in s.char_indices() {
            if needs_escape(c) {
                self.out.write_str(&s[clean..i])?;
                write_escaped(&mut self.out, c)?;
                clean = i + c.len_utf8();
            }
        }
        self.out.write_str(&s[clean..])
    }
}

/// Control characters, and the characters that move or reorder text
/// without being control characters (line/paragraph separators, bidi).
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn write_escaped(out: &mut impl fmt::Write, c: char) -> fmt::Result {
    match c {
        '\n' => out.write_str("\\n"),
        '\r' => out.write_str("\\r"),
        '\t' => out.write_str("\\t"),
        c => write!(out, "\\u{{{:x}}}", u32::from(c)),
    }
}

/// `text` with its control characters escaped as in a text log line.
pub fn escape_controls(text: &str) -> String {
    let mut out = Escaping { out: String::with_capacity(text.len()) };
    let _ = out.write_str(text);
    out.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn text_log(ansi: bool, log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(ansi)
            .fmt_fields(EscapedFields::default())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn names_and_messages_cannot_forge_a_line_or_drive_the_terminal() {
        let forged =
            "mallory\n2026-01-01T00:00:00.000000Z  INFO ponte_relay: login viewer=\"admin\"\r\u{1b}[2K";
        for ansi in [false, true] {
            let out = text_log(ansi, || {
                let span = tracing::info_span!("session", site = %forged);
                let _in = span.enter();
                tracing::warn!(viewer = %forged, debug = ?forged, "login failed: {forged}");
                tracing::info!(camera = %"po\u{2028}x\u{202e}gpj.exe\u{9b}31m\u{7}", "ok\tdone");
            });
            assert_eq!(out.lines().count(), 2, "{out}");
            let first = out.lines().next().unwrap();
            assert!(first.contains("login failed: mallory\\n2026-01-01T00:00:00.000000Z  INFO"), "{first}");
            assert!(first.contains("viewer=mallory\\n2026"), "{first}");
            assert!(first.contains("site=mallory\\n2026"), "{first}");
            assert!(first.contains("\\r\\u{1b}[2K"), "{first}");
            let second = out.lines().nth(1).unwrap();
            assert!(second.contains(r"ok\tdone camera=po\u{2028}x\u{202e}gpj.exe\u{9b}31m\u{7}"), "{second}");
            if !ansi {
                assert!(!out.trim_end_matches('\n').chars().any(|c| c != '\n' && needs_escape(c)), "{out:?}");
            }
        }
    }

    #[test]
    fn plain_text_is_unchanged() {
        assert_eq!(
            escape_controls("camera `zaist-mantova`: àèì 10.1.2.3"),
            "camera `zaist-mantova`: àèì 10.1.2.3"
        );
        assert_eq!(escape_controls("a\nb\u{0}\u{7f}"), "a\\nb\\u{0}\\u{7f}");
    }
}
