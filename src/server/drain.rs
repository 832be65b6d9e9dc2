//! A connection's part in graceful shutdown: on the signal, the connection stops taking new
//! requests and finishes those in flight; dropping the receiver tells the listener it is done.
//!
//! The signal is polled only when it has woken the task (`PartWaker`), not on every poll of
//! the connection.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::watch;

use super::part_waker::PartWaker;

pub struct Drain(watch::Receiver<()>);

impl Drain {
    pub fn new(rx: watch::Receiver<()>) -> Self {
        Drain(rx)
    }

    /// A receiver of the signal, for a caller that waits for it itself.
    pub fn receiver(&self) -> watch::Receiver<()> {
        self.0.clone()
    }

    /// `fut`'s output, or `None` once shutdown has begun (without consuming the signal).
    pub async fn unless_stopping<F: Future>(&self, fut: F) -> Option<F::Output> {
        let mut stopping = self.0.clone();
        tokio::select! {
            biased;
            out = fut => Some(out),
            _ = stopping.changed() => None,
        }
    }

    /// Runs `conn` to completion, calling `shutdown` on it once when the signal arrives.
    pub fn run<C, F>(self, conn: C, shutdown: F) -> Draining<C, F>
    where
        C: Future,
        F: FnOnce(Pin<&mut C>),
    {
        let mut rx = self.0;
        Draining {
            conn,
            signal: Some(Box::pin(async move {
                // An error means the sender is gone: the listener is stopping.
                let _ = rx.changed().await;
            })),
            shutdown: Some(shutdown),
            signal_waker: PartWaker::new(),
        }
    }
}

pin_project! {
    pub struct Draining<C, F> {
        #[pin]
        conn: C,
        signal: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
        shutdown: Option<F>,
        signal_waker: PartWaker,
    }
}

impl<C, F> Future for Draining<C, F>
where
    C: Future,
    F: FnOnce(Pin<&mut C>),
{
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if let Some(signal) = this.signal.as_mut()
            && let Some(Poll::Ready(())) = this.signal_waker.poll(cx, |cx| signal.as_mut().poll(cx))
        {
            *this.signal = None;
            if let Some(shutdown) = this.shutdown.take() {
                shutdown(this.conn.as_mut());
            }
        }
        this.conn.poll(cx)
    }
}
