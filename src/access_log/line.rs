//! One access line, formatted by hand into a reused buffer: the same JSON the tracing formatter
//! wrote (`timestamp`, `level`, `message`, the fields in order, `target`), or `key=value` text
//! for `--log-format text`, at a fraction of its cost.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Text,
}

/// Builds one line into `buf`; `finish` ends it with a newline.
pub struct Line<'a> {
    buf: &'a mut Vec<u8>,
    format: Format,
}

impl<'a> Line<'a> {
    pub fn start(buf: &'a mut Vec<u8>, format: Format, message: &str) -> Line<'a> {
        match format {
            Format::Json => {
                buf.extend_from_slice(b"{\"timestamp\":\"");
                timestamp(buf);
                buf.extend_from_slice(b"\",\"level\":\"INFO\",\"message\":\"");
                json_escaped(buf, message);
                buf.push(b'"');
            }
            Format::Text => {
                timestamp(buf);
                buf.extend_from_slice(b"  INFO keyway::access: ");
                buf.extend_from_slice(message.as_bytes());
            }
        }
        Line { buf, format }
    }

    pub fn str(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        match self.format {
            Format::Json => {
                self.buf.push(b'"');
                json_escaped(self.buf, value);
                self.buf.push(b'"');
            }
            Format::Text => text_value(self.buf, value),
        }
        self
    }

    pub fn num(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        self.buf
            .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        self
    }

    /// Keys are keyway's own identifiers: nothing to escape.
    fn key(&mut self, key: &str) {
        match self.format {
            Format::Json => {
                self.buf.extend_from_slice(b",\"");
                self.buf.extend_from_slice(key.as_bytes());
                self.buf.extend_from_slice(b"\":");
            }
            Format::Text => {
                self.buf.push(b' ');
                self.buf.extend_from_slice(key.as_bytes());
                self.buf.push(b'=');
            }
        }
    }

    pub fn finish(self) {
        if self.format == Format::Json {
            self.buf
                .extend_from_slice(b",\"target\":\"keyway::access\"}");
        }
        self.buf.push(b'\n');
    }
}

/// A JSON string's contents: most values (ids, canonical paths, names) need no escape.
fn json_escaped(buf: &mut Vec<u8>, value: &str) {
    let bytes = value.as_bytes();
    if !bytes.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\') {
        buf.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        match b {
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'\n' => buf.extend_from_slice(b"\\n"),
            b'\r' => buf.extend_from_slice(b"\\r"),
            b'\t' => buf.extend_from_slice(b"\\t"),
            0..0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                buf.extend_from_slice(b"\\u00");
                buf.push(HEX[usize::from(b >> 4)]);
                buf.push(HEX[usize::from(b & 0xf)]);
            }
            // UTF-8 passes as it is: JSON text is UTF-8.
            _ => buf.push(b),
        }
    }
}

/// A text value, quoted (as JSON) when it is empty or has a space, quote or control byte.
fn text_value(buf: &mut Vec<u8>, value: &str) {
    if !value.is_empty()
        && !value
            .bytes()
            .any(|b| b <= b' ' || b == b'"' || b == b'\\' || b == 0x7f)
    {
        buf.extend_from_slice(value.as_bytes());
    } else {
        buf.push(b'"');
        json_escaped(buf, value);
        buf.push(b'"');
    }
}

thread_local! {
    /// The second the cached date belongs to, and `YYYY-MM-DDTHH:MM:SS` for it.
    static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
}

/// `2026-12-07T00:27:17.358544Z`, as the tracing formatter wrote it (UTC, microseconds). The
/// date part is formatted once a second per thread.
fn timestamp(buf: &mut Vec<u8>) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != secs {
        text = crate::civil_time::date_time(i64::try_from(secs).unwrap_or(i64::MAX));
        SECOND.set((secs, text));
    }
    buf.extend_from_slice(&text);
    buf.push(b'.');
    let micros = now.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut n = micros;
    for d in digits.iter_mut().rev() {
        *d = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&digits);
    buf.push(b'Z');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_parse_and_escape() {
        let mut buf = Vec::new();
        Line::start(&mut buf, Format::Json, "request")
            .str("path", "/a\"b\\c\n\u{1}é")
            .num("status", 200)
            .str("reason", "")
            .finish();
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = serde_json::from_str(text).unwrap();
        assert_eq!(v["path"], "/a\"b\\c\n\u{1}é");
        assert_eq!(v["status"], 200);
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "keyway::access");
        let ts = v["timestamp"].as_str().unwrap();
        assert_eq!(ts.len(), 27, "{ts}");
        assert!(ts.ends_with('Z'));
    }

    #[test]
    fn text_lines_quote_what_needs_it() {
        let mut buf = Vec::new();
        Line::start(&mut buf, Format::Text, "request")
            .str("route", "api")
            .str("reason", "")
            .str("source", "header x-api-key")
            .finish();
        let text = std::str::from_utf8(&buf).unwrap();
        assert!(
            text.ends_with(
                " INFO keyway::access: request route=api reason=\"\" source=\"header x-api-key\"\n"
            ),
            "{text}"
        );
    }
}
