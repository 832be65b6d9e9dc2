//! The response body keyway serves: the upstream's stream untouched, or bytes keyway wrote.

use std::pin::Pin;
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
