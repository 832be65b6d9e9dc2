//! The access log: one line per request, a view of its trace (SPEC §10). Formatted by hand
//! (`line`) into a per-thread buffer, appended to a shared buffer, and written out in batches
//! by its own thread (`writer`), so that keeping it on costs a request about what nginx's
//! buffered `access_log` costs: no formatter machinery, no write per line.

mod line;
mod writer;

use std::cell::RefCell;
use std::sync::OnceLock;

pub use line::Format;
use prometheus_client::metrics::counter::Counter;
pub use writer::Destination;

use crate::pipeline::trace::Trace;

static FORMAT: OnceLock<Format> = OnceLock::new();

/// Sets the line format for the process (`--log-format`), as the other logs' subscriber is
/// set once; JSON when never set.
pub fn set_format(format: Format) {
    let _ = FORMAT.set(format);
}

pub fn format() -> Format {
    FORMAT.get().copied().unwrap_or(Format::Json)
}

pub struct AccessLog {
    writer: writer::Writer,
    format: Format,
}

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
}

impl AccessLog {
    /// `dropped` counts the lines a slow or failing destination made it drop.
    pub fn start(destination: Destination, format: Format, dropped: Counter) -> AccessLog {
        AccessLog {
            writer: writer::Writer::start(destination, dropped),
            format,
        }
    }

    /// The line for a finished request.
    pub fn request(&self, trace: &Trace, elapsed_us: u64) {
        let id = trace.identity.as_ref();
        self.write(|buf| {
            line::Line::start(buf, self.format, "request")
                .str("request_id", trace.request_id.as_str())
                .str("method", trace.method.as_str())
                .str("path", trace.path.as_str())
                .str("route", trace.route.as_deref().unwrap_or(""))
                .num("status", u64::from(trace.status))
                .str("reason", trace.reason_code())
                .str("authenticator", id.map_or("", |i| &*i.authenticator))
                .str(
                    "consumer",
                    id.and_then(|i| i.consumer.as_deref()).unwrap_or(""),
                )
                .str("credential_source", id.map_or("", |i| &*i.source))
                .num("duration_us", elapsed_us)
                .finish();
        });
    }

    /// The line for a WebSocket connection that ended (its handshake had its own line).
    pub fn websocket_closed(&self, closed: &WebSocketClosed<'_>) {
        self.write(|buf| {
            line::Line::start(buf, self.format, "websocket closed")
                .str("request_id", closed.request_id)
                .str("route", closed.route)
                .str("relay", closed.relay)
                .str("ended", closed.ended)
                .num("close_code", u64::from(closed.close_code))
                .num("duration_ms", closed.duration_ms)
                .finish();
        });
    }

    fn write(&self, format: impl FnOnce(&mut Vec<u8>)) {
        SCRATCH.with(|scratch| {
            // A line formatted while another is (a panic mid-line) gets a buffer of its own.
            let mut own = Vec::new();
            let mut guard = scratch.try_borrow_mut();
            let buf = match guard.as_deref_mut() {
                Ok(buf) => buf,
                Err(_) => &mut own,
            };
            buf.clear();
            format(buf);
            self.writer.append(buf);
        });
    }

    /// Writes every line so far (shutdown, reload).
    pub fn flush(&self) {
        self.writer.flush();
    }

    /// Reopens the file (SIGUSR1, after logrotate), or switches to `destination` (a reload
    /// that changed `access_log.path`).
    pub fn reopen(&self, destination: Option<Destination>) {
        self.writer.reopen(destination);
    }

    pub fn destination(&self) -> Destination {
        self.writer.destination()
    }
}

/// What the line for an ended WebSocket connection says.
pub struct WebSocketClosed<'a> {
    pub request_id: &'a str,
    pub route: &'a str,
    /// `bytes` or `frames`.
    pub relay: &'a str,
    pub ended: &'a str,
    pub close_code: u16,
    pub duration_ms: u64,
}
