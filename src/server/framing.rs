//! Watches the request heads a client sends for Content-Length together with Transfer-Encoding.
//!
//! hyper resolves that conflict itself (Transfer-Encoding wins, the connection closes afterwards)
//! and hides the Content-Length header from keyway, but the pair is the classic request-smuggling
//! pattern, so keyway refuses it (`header.bad_framing`). The scanner follows HTTP/1 framing just
//! far enough to find each head (skipping Content-Length and chunked bodies) and gives up —
//! leaving hyper's parsing as the only guard — on anything it does not understand.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Shared by a connection's scanner (reads) and its service: set once a head with both framing
/// headers was seen on the connection; counts the requests hyper handed to the service.
#[derive(Clone, Default, Debug)]
pub struct FramingFlag(Arc<FlagState>);

#[derive(Default, Debug)]
struct FlagState {
    conflicting: AtomicBool,
    dispatched: AtomicU64,
}

impl FramingFlag {
    pub fn is_set(&self) -> bool {
        self.0.conflicting.load(Ordering::Relaxed)
    }

    /// Called by the service for every request hyper parsed.
    pub fn dispatched(&self) {
        self.0.dispatched.fetch_add(1, Ordering::Relaxed);
    }
}

const MAX_HEAD: usize = 256 * 1024;
const MAX_CHUNK_LINE: usize = 1024;

#[derive(Debug)]
enum State {
    Head,
    Body(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkCrlf(u8),
    Trailers,
    /// A head asked for an upgrade; its answer decides whether HTTP/1 goes on.
    Upgrading,
    /// Upgraded, HTTP/2, or not understood: stop looking.
    Off,
}

#[derive(Debug)]
pub struct FramingScanner {
    state: State,
    line: Vec<u8>,
    flag: FramingFlag,
    /// Request heads begun on this connection.
    heads: u64,
}

impl FramingScanner {
    pub fn new(flag: FramingFlag) -> Self {
        FramingScanner {
            state: State::Head,
            line: Vec::new(),
            flag,
            heads: 0,
        }
    }

    /// A request head was read (in part or whole) that hyper has not handed to the service:
    /// only then can a response be hyper's own answer to a head it refused. While keyway's
    /// answer to a dispatched request is written (bodies, upgraded tunnels), this is false.
    pub fn awaiting_dispatch(&self) -> bool {
        self.heads > self.flag.0.dispatched.load(Ordering::Relaxed)
    }

    /// Waiting for a request head: between two requests, or part of the next head has arrived.
    pub fn awaiting_head(&self) -> bool {
        matches!(self.state, State::Head)
    }

    /// Request heads begun on this connection (a head counts from its first byte).
    pub fn heads_begun(&self) -> u64 {
        self.heads
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                State::Off => return,
                // Bytes before the upgrade's answer: a tunnel's, or another head; either way
                // the scanner can no longer tell.
                State::Upgrading => {
                    self.state = State::Off;
                    return;
                }
                State::Body(left) => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.state = State::Head;
                    }
                }
                State::ChunkData(left) => {
                    let n = (*left).min(bytes.len() as u64) as usize;
                    *left -= n as u64;
                    bytes = &bytes[n..];
                    if *left == 0 {
                        self.state = State::ChunkCrlf(2);
                    }
                }
                State::ChunkCrlf(left) => {
                    *left -= 1;
                    bytes = &bytes[1..];
                    if *left == 0 {
                        self.state = State::ChunkSize;
                    }
                }
                State::Head => {
                    if self.line.is_empty() {
                        // Empty lines between requests are skipped (as hyper does); a head
                        // begins with its first other byte.
                        let blank = bytes.iter().take_while(|b| matches!(b, b'\r' | b'\n'));
                        bytes = &bytes[blank.count()..];
                        if bytes.is_empty() {
                            return;
                        }
                        self.heads += 1;
                    }
                    // A head that arrived in one read is read in place, in one pass.
                    if self.line.is_empty()
                        && let Some((n, state)) = whole_head(&self.flag, bytes)
                    {
                        self.state = state;
                        bytes = &bytes[n..];
                        continue;
                    }
                    // A head ends with an empty line; keep it whole to read its header lines.
                    match self.head_end(bytes) {
                        Some(n) => {
                            self.line.extend_from_slice(&bytes[..n]);
                            bytes = &bytes[n..];
                            self.state = after_head(&self.flag, &self.line);
                            self.line.clear();
                        }
                        None => {
                            self.line.extend_from_slice(bytes);
                            if self.line.len() > MAX_HEAD {
                                self.state = State::Off;
                            }
                            return;
                        }
                    }
                }
                State::ChunkSize | State::Trailers => {
                    let Some(pos) = bytes.iter().position(|&b| b == b'\n') else {
                        self.line.extend_from_slice(bytes);
                        if self.line.len() > MAX_CHUNK_LINE {
                            self.state = State::Off;
                        }
                        return;
                    };
                    self.line.extend_from_slice(&bytes[..pos]);
                    bytes = &bytes[pos + 1..];
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").unwrap_or(&line);
                    self.state = match self.state {
                        State::ChunkSize => chunk_size(line),
                        _ if line.is_empty() => State::Head,
                        _ => State::Trailers,
                    };
                }
            }
        }
    }

    /// Bytes of `bytes` up to and including the blank line that ends the head, if present.
    fn head_end(&self, bytes: &[u8]) -> Option<usize> {
        // Look across the boundary with what was buffered: the last 3 buffered bytes matter.
        let tail_len = self.line.len().min(3);
        let tail = &self.line[self.line.len() - tail_len..];
        // Only line ends can end a head: jump from one to the next instead of testing every byte.
        for i in memchr::memchr_iter(b'\n', bytes) {
            let before = |k: usize| -> Option<u8> {
                if k <= i {
                    Some(bytes[i - k])
                } else {
                    let j = k - i;
                    (j <= tail.len()).then(|| tail[tail.len() - j])
                }
            };
            let blank_crlf = before(1) == Some(b'\r') && before(2) == Some(b'\n');
            let blank_lf = before(1) == Some(b'\n');
            // The empty line at the very start of a connection is not an end of head.
            if (blank_crlf || blank_lf) && self.line.len() + i > 2 {
                return Some(i + 1);
            }
        }
        None
    }

    /// The first bytes of a response are written: after an upgrade's `101` the connection is a
    /// tunnel; after any other answer HTTP/1 goes on.
    pub fn response_started(&mut self, first: &[u8]) {
        // A pipelined earlier request's answer (the upgrade head is the last one begun).
        let answers_upgrade = self.flag.0.dispatched.load(Ordering::Relaxed) == self.heads;
        if matches!(self.state, State::Upgrading) && answers_upgrade {
            self.state = if first.starts_with(b"HTTP/1.1 101 ") {
                State::Off
            } else {
                State::Head
            };
        }
    }
}

/// The state after a complete request head: its body's framing, or a stop.
fn after_head(flag: &FramingFlag, head: &[u8]) -> State {
    let mut facts = HeadFacts::default();
    // Line ends found in one pass; the request line is skipped.
    let mut ends = memchr::memchr_iter(b'\n', head).chain(std::iter::once(head.len()));
    let mut start = ends.next().map_or(head.len(), |n| n + 1);
    for end in ends {
        facts.read(&head[start..end]);
        start = end + 1;
    }
    facts.state(flag, head)
}

/// A head that starts `bytes` and ends in them: its length and the state after it, found in the
/// one pass over its lines that both looks for the empty line and reads the header lines.
/// `None` when `bytes` end before the head does.
fn whole_head(flag: &FramingFlag, bytes: &[u8]) -> Option<(usize, State)> {
    let mut facts = HeadFacts::default();
    let mut ends = memchr::memchr_iter(b'\n', bytes);
    // The request line; the caller skipped the empty lines before it.
    let mut start = ends.next()? + 1;
    for end in ends {
        let line = &bytes[start..end];
        if line.is_empty() || line == b"\r" {
            return Some((end + 1, facts.state(flag, bytes)));
        }
        facts.read(line);
        start = end + 1;
    }
    None
}

/// What a head's header lines say about its framing.
#[derive(Default)]
struct HeadFacts {
    content_length: Option<u64>,
    has_cl: bool,
    chunked: bool,
    saw_te: bool,
    upgrade: bool,
}

impl HeadFacts {
    /// One header line (its line end excluded).
    fn read(&mut self, line: &[u8]) {
        // The three names looked for start with c, t or u: most lines are passed over on their
        // first byte (ASCII letters fold to lower case with 0x20).
        if !matches!(line.first().map(|b| b | 0x20), Some(b'c' | b't' | b'u')) {
            return;
        }
        if let Some(value) = field_value(line, b"content-length") {
            self.has_cl = true;
            self.content_length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if let Some(value) = field_value(line, b"transfer-encoding") {
            self.saw_te = true;
            self.chunked |= value
                .split(|&b| b == b',')
                .any(|t| trim(t).eq_ignore_ascii_case(b"chunked"));
        } else if field_value(line, b"upgrade").is_some() {
            self.upgrade = true;
        }
    }

    /// The state after the head that starts with `head` (its request line is all that is read).
    fn state(self, flag: &FramingFlag, head: &[u8]) -> State {
        if head.starts_with(b"PRI * HTTP/2.0") {
            return State::Off;
        }
        if self.saw_te && self.has_cl {
            flag.0.conflicting.store(true, Ordering::Relaxed);
        }
        match (
            self.upgrade || head.starts_with(b"CONNECT "),
            self.saw_te,
            self.chunked,
            self.has_cl,
            self.content_length,
        ) {
            // Without a body to skip, the answer tells whether HTTP/1 goes on.
            (true, false, _, false, _) if !head.starts_with(b"CONNECT ") => State::Upgrading,
            (true, ..) => State::Off,
            (_, true, true, ..) => State::ChunkSize,
            (_, true, false, ..) => State::Off,
            (_, _, _, false, _) | (_, _, _, true, Some(0)) => State::Head,
            (_, _, _, true, Some(n)) => State::Body(n),
            (_, _, _, true, None) => State::Off,
        }
    }
}

/// The trimmed value of a header line named `name` (any case). A name is followed directly by its
/// colon: hyper refuses whitespace between them.
fn field_value<'a>(line: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    let (head, rest) = line.split_at_checked(name.len())?;
    let value = rest.strip_prefix(b":")?;
    head.eq_ignore_ascii_case(name).then(|| trim(value))
}

fn chunk_size(line: &[u8]) -> State {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .map(trim)
        .unwrap_or_default();
    match std::str::from_utf8(digits)
        .ok()
        .and_then(|d| u64::from_str_radix(d, 16).ok())
    {
        Some(0) => State::Trailers,
        Some(n) => State::ChunkData(n),
        None => State::Off,
    }
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &bytes[start..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(chunks: &[&[u8]]) -> bool {
        let flag = FramingFlag::default();
        let mut s = FramingScanner::new(flag.clone());
        for c in chunks {
            s.feed(c);
        }
        flag.is_set()
    }

    #[test]
    fn flags_both_headers_in_either_order_and_split_reads() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        ]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"
        ]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Enc",
            b"oding: chunked\r\ncontent-length: 5\r",
            b"\n\r\n"
        ]));
    }

    #[test]
    fn only_the_framing_names_followed_by_a_colon_count() {
        // Lines that start like the names looked for, in any case, with bare LF line ends.
        assert!(scan(&[
            b"POST / HTTP/1.1\nCONTENT-LENGTH: 5\ncontent-type: a\ntransfer-encoding:chunked\n\n"
        ]));
        // Not framing headers: a longer name, and (refused by hyper anyway) a space before ':'.
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length-X: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length : 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        ]));
        assert_eq!(
            field_value(b"Upgrade: websocket\r", b"upgrade"),
            Some(&b"websocket"[..])
        );
        assert_eq!(field_value(b"Upgrad", b"upgrade"), None);
    }

    #[test]
    fn a_head_read_whole_and_byte_by_byte_scan_alike() {
        let cases: [&[u8]; 6] = [
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\nTransfer-Encoding: chunked\nContent-Length: 5\n\n",
            b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\nGET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\nGET /c HT",
            b"\r\nGET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ];
        for bytes in cases {
            let run = |chunk: usize| {
                let flag = FramingFlag::default();
                let mut s = FramingScanner::new(flag.clone());
                for c in bytes.chunks(chunk) {
                    s.feed(c);
                }
                (
                    flag.is_set(),
                    s.heads_begun(),
                    s.awaiting_head(),
                    format!("{:?}", s.state),
                )
            };
            assert_eq!(
                run(bytes.len()),
                run(1),
                "{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn a_head_awaits_dispatch_until_the_service_takes_it() {
        let flag = FramingFlag::default();
        let mut s = FramingScanner::new(flag.clone());
        assert!(!s.awaiting_dispatch());
        s.feed(b"POST / HTTP/1.1\r\nContent-Length: 4\r\n\r\n");
        assert!(s.awaiting_dispatch());
        flag.dispatched();
        // The body and blank lines are not a new head.
        s.feed(b"body\r\n");
        assert!(!s.awaiting_dispatch());
        // A partial next head is.
        s.feed(b"GET / HT");
        assert!(s.awaiting_dispatch());
    }

    #[test]
    fn follows_bodies_to_the_next_head() {
        // A body that looks like a smuggled head must not be read as one.
        let body = b"GET / HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        assert!(!scan(&[
            head.as_bytes(),
            body,
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"
        ]));
        // A chunked body, then a conflicting head on the same connection.
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        ]));
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n"
        ]));
    }

    #[test]
    fn an_upgrade_head_stops_the_scan_only_when_answered_101() {
        let upgrade = b"GET /ws HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        let conflicting =
            b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";

        // Refused (401): HTTP/1 goes on, and the next head is still scanned.
        let flag = FramingFlag::default();
        let mut s = FramingScanner::new(flag.clone());
        s.feed(upgrade);
        assert!(!s.awaiting_head());
        flag.dispatched();
        s.response_started(b"HTTP/1.1 401 Unauthorized\r\n");
        assert!(s.awaiting_head());
        s.feed(conflicting);
        assert!(flag.is_set());

        // Switched (101): what follows is the tunnel's, never a head.
        let flag = FramingFlag::default();
        let mut s = FramingScanner::new(flag.clone());
        s.feed(upgrade);
        flag.dispatched();
        s.response_started(b"HTTP/1.1 101 Switching Protocols\r\n");
        s.feed(conflicting);
        assert!(!flag.is_set());
        assert!(!s.awaiting_head());

        // An earlier pipelined request's answer does not decide the upgrade.
        let flag = FramingFlag::default();
        let mut s = FramingScanner::new(flag.clone());
        s.feed(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        s.feed(upgrade);
        flag.dispatched();
        s.response_started(b"HTTP/1.1 200 OK\r\n");
        assert!(!s.awaiting_head());
        flag.dispatched();
        s.response_started(b"HTTP/1.1 101 Switching Protocols\r\n");
        s.feed(conflicting);
        assert!(!flag.is_set());
    }
}
