//! The connection's byte stream as hyper sees it, with two guards hyper does not provide:
//! - writes: requests that hyper's HTTP/1 parser refuses (bad header names or values, obs-fold,
//!   NUL, conflicting Content-Length, oversized heads) get the same problem+json answer as every
//!   other refusal. hyper writes a bare status for those before any keyway stage runs; the
//!   wrapper recognises that head on its way out and writes keyway's refusal instead.
//! - reads: request heads are scanned for Content-Length with Transfer-Encoding (`framing`), and
//!   on HTTP/1 connections one that waits too long for a request head is closed (`HeadTimer`).

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::framing::{FramingFlag, FramingScanner};
use super::part_waker::PartWaker;
use crate::app::App;
use crate::pipeline::answer;
use crate::pipeline::refusal::Refusal;
use crate::pipeline::request_id;
use crate::pipeline::trace::{RequestPath, Stage, Trace};
use crate::reason::Reason;

pub struct GuardedIo<T> {
    inner: T,
    /// For the refusal's detail level, the access log and the metrics.
    app: Arc<App>,
    /// A replacement response still being written.
    pending: Option<(Vec<u8>, usize)>,
    scanner: FramingScanner,
    /// HTTP/1 only.
    head_timer: Option<HeadTimer>,
}

impl<T> GuardedIo<T> {
    /// `header_read_timeout` is for HTTP/1 connections.
    pub fn new(
        inner: T,
        framing: FramingFlag,
        app: Arc<App>,
        header_read_timeout: Option<Duration>,
    ) -> Self {
        GuardedIo {
            inner,
            app,
            pending: None,
            scanner: FramingScanner::new(framing),
            head_timer: header_read_timeout.map(HeadTimer::new),
        }
    }
}

/// The header read timeout of an HTTP/1 connection: one that waits for a request head, whether
/// idle between requests or receiving a head slowly (slowloris), for `period` is closed.
///
/// hyper's own timeout arms and disarms a timer for every request. This one timer per
/// connection fires once per period instead: an expiry that finds the connection waiting for the
/// same head as the expiry before closes it, so the wait lasts between one and two periods.
struct HeadTimer {
    sleep: Pin<Box<Sleep>>,
    /// The sleep is polled only when it fired, not on every read.
    sleep_waker: PartWaker,
    period: Duration,
    /// Heads begun on the connection when the last expiry found it waiting for a head.
    waiting_at: Option<u64>,
}

impl HeadTimer {
    fn new(period: Duration) -> Self {
        HeadTimer {
            sleep: Box::pin(tokio::time::sleep(period)),
            sleep_waker: PartWaker::new(),
            period,
            waiting_at: None,
        }
    }

    /// Whether the connection has waited too long; `waiting` says whether it waits for a head
    /// now, `heads` counts the heads begun on it.
    fn expired(&mut self, cx: &mut Context<'_>, waiting: bool, heads: u64) -> bool {
        let sleep = &mut self.sleep;
        let fired = self
            .sleep_waker
            .poll(cx, |cx| sleep.as_mut().poll(cx).is_ready());
        if fired != Some(true) {
            return false;
        }
        if !waiting {
            self.waiting_at = None;
        } else if self.waiting_at == Some(heads) {
            return true;
        } else {
            self.waiting_at = Some(heads);
        }
        self.sleep.as_mut().reset(Instant::now() + self.period);
        // Registers the re-armed timer.
        let sleep = &mut self.sleep;
        let _ = self.sleep_waker.poll_now(cx, |cx| sleep.as_mut().poll(cx));
        false
    }
}

/// The reason for a head hyper wrote on its own; keyway's responses always carry X-Request-Id.
fn automatic_refusal(head: &[u8]) -> Option<Reason> {
    let reason = if head.starts_with(b"HTTP/1.1 400 ") {
        Reason::HeaderMalformed
    } else if head.starts_with(b"HTTP/1.1 431 ") {
        Reason::HeaderTooLarge
    } else if head.starts_with(b"HTTP/1.1 414 ") {
        Reason::UriTooLong
    } else {
        return None;
    };
    let end = head
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(head.len());
    let has_request_id = head[..end]
        .windows(13)
        .any(|w| w.eq_ignore_ascii_case(b"x-request-id:"));
    (!has_request_id).then_some(reason)
}

/// keyway's answer for a head the parser refused, recorded like every other request: the body
/// comes from the one refusal renderer, the access line and metrics from the trace.
fn refuse(app: &App, reason: Reason) -> Vec<u8> {
    let rt = app.runtime();
    let detail = match reason {
        Reason::HeaderTooLarge => "The request head is larger than keyway accepts.",
        Reason::UriTooLong => "The request URI is longer than keyway accepts.",
        _ => {
            "The request head could not be parsed: an invalid header name or value (bare CR, NUL, control characters), obs-fold, a line without a colon, or conflicting Content-Length headers."
        }
    };
    // The head could not be read, so neither its method nor its path is known.
    let method = http::Method::from_bytes(b"-").unwrap_or_default();
    let mut trace = Trace::start(request_id::mint(), method, RequestPath::default());
    trace.step(Stage::Limits, "refused by the HTTP parser");
    let refusal = Refusal::new(reason, detail);
    let head = answer::render_http1(refusal.into(), &mut trace, rt.detail);
    trace.status = reason.status().as_u16();
    app.record(&trace, &rt);
    head
}

impl<T: AsyncWrite + Unpin> GuardedIo<T> {
    /// Writes out a pending replacement; Ready(Ok) once nothing is pending.
    fn drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((bytes, written)) = &mut self.pending {
            let n =
                std::task::ready!(Pin::new(&mut self.inner).poll_write(cx, &bytes[*written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            if *written == bytes.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }

    fn intercept(&mut self, first: &[u8], total: usize) -> Option<usize> {
        self.scanner.response_started(first);
        // Writes for a request hyper dispatched (a body, an upgraded tunnel) are never rewritten,
        // whatever their bytes look like.
        if !self.scanner.awaiting_dispatch() {
            return None;
        }
        let reason = automatic_refusal(first)?;
        self.pending = Some((refuse(&self.app, reason), 0));
        Some(total)
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for GuardedIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(timer) = &mut this.head_timer {
            // hyper reads nothing while a request is being answered (`half_close`, see
            // `conn::Builders`), so a read that awaits a head is never during an answer.
            let waiting = this.scanner.awaiting_head();
            if timer.expired(cx, waiting, this.scanner.heads_begun()) {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no complete request head within the header read timeout",
                )));
            }
        }
        let before = buf.filled().len();
        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        this.scanner.feed(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for GuardedIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        if let Some(n) = this.intercept(buf, buf.len()) {
            let _ = this.drain(cx)?;
            return Poll::Ready(Ok(n));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            let total = bufs.iter().map(|b| b.len()).sum();
            if let Some(n) = this.intercept(first, total) {
                let _ = this.drain(cx)?;
                return Poll::Ready(Ok(n));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        std::task::ready!(this.drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_only_heads_keyway_did_not_write() {
        assert_eq!(
            automatic_refusal(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"),
            Some(Reason::HeaderMalformed)
        );
        assert_eq!(
            automatic_refusal(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n"),
            Some(Reason::HeaderTooLarge)
        );
        assert_eq!(
            automatic_refusal(b"HTTP/1.1 400 Bad Request\r\nx-request-id: abc\r\n\r\n{}"),
            None
        );
        assert_eq!(automatic_refusal(b"HTTP/1.1 200 OK\r\n\r\n"), None);
    }
}
