//! The bodies keyway relays: the response body it serves (the upstream's stream untouched, or
//! bytes keyway wrote), and the request body it sends upstream.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;

use super::upstream::pool::Lease;

pub enum Body {
    /// Streamed from the upstream frame by frame, never buffered.
    Upstream(UpstreamBody),
    Full(Option<Bytes>),
}

/// An upstream response body and the connection it arrives on. The connection is given back for
/// reuse when the body has been read to its end; a body dropped part-way closes it.
pub struct UpstreamBody {
    incoming: Incoming,
    lease: Option<Lease>,
    ended: bool,
}

impl UpstreamBody {
    pub fn new(incoming: Incoming, lease: Option<Lease>) -> Self {
        UpstreamBody {
            incoming,
            lease,
            ended: false,
        }
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take()
            && (self.ended || self.incoming.is_end_stream())
        {
            lease.release();
        }
    }
}

impl Body {
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Body::Full(Some(bytes.into()))
    }

    pub fn empty() -> Self {
        Body::Full(None)
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Upstream(body) => {
                let polled = Pin::new(&mut body.incoming).poll_frame(cx);
                if let Poll::Ready(None) = polled {
                    body.ended = true;
                }
                polled
            }
            Body::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream(body) => body.incoming.is_end_stream(),
            Body::Full(bytes) => bytes.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Upstream(body) => body.incoming.size_hint(),
            Body::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Body::Full(None) => SizeHint::with_exact(0),
        }
    }
}

/// A client's request body on its way upstream, streamed frame by frame. A body that is not
/// empty from the start reports how far it got: its upstream connection is reused only once it
/// has been sent in full (an upstream that answers early would otherwise make the next request
/// wait behind a slow upload), and a body the client got wrong is not blamed on the upstream.
pub struct RequestBody {
    incoming: Incoming,
    progress: Option<Arc<Progress>>,
}

/// How far a request body has been sent.
#[derive(Debug, Default)]
pub struct Progress(AtomicU8);

impl Progress {
    const SENT: u8 = 1;
    const FAILED: u8 = 2;

    /// Read to its end and handed to the upstream connection.
    pub fn sent(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::SENT
    }

    /// Reading it from the client failed: malformed chunked framing, or the client stopped
    /// before its declared length.
    pub fn failed(&self) -> bool {
        self.0.load(Ordering::Acquire) == Self::FAILED
    }

    fn set(&self, state: u8) {
        self.0.store(state, Ordering::Release);
    }
}

impl RequestBody {
    /// The body and, unless it is empty (most requests), its progress.
    pub fn new(incoming: Incoming) -> (Self, Option<Arc<Progress>>) {
        let progress = (!incoming.is_end_stream()).then(Arc::default);
        let body = RequestBody {
            incoming,
            progress: progress.clone(),
        };
        (body, progress)
    }
}

impl http_body::Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.incoming).poll_frame(cx);
        if let (Poll::Ready(frame), Some(progress)) = (&polled, &this.progress) {
            match frame {
                None => progress.set(Progress::SENT),
                Some(Err(_)) => progress.set(Progress::FAILED),
                Some(Ok(_)) if this.incoming.is_end_stream() => progress.set(Progress::SENT),
                Some(Ok(_)) => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}
