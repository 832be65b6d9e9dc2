//! The open WebSocket connections (relays and mux connections): counted, so that graceful
//! shutdown waits for them (after telling them to close) and a reload can say how many go on
//! with the configuration they were opened with.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, watch};

#[derive(Debug)]
pub struct Tunnels {
    open: AtomicUsize,
    closed: Notify,
    stopping: watch::Sender<bool>,
}

impl Default for Tunnels {
    fn default() -> Self {
        Tunnels {
            open: AtomicUsize::new(0),
            closed: Notify::new(),
            stopping: watch::channel(false).0,
        }
    }
}

/// One open connection; dropping it counts it closed.
#[derive(Debug)]
pub struct Open {
    tunnels: Arc<Tunnels>,
    /// Changes to `true` when keyway shuts down: close now.
    pub stopping: watch::Receiver<bool>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.tunnels.open.fetch_sub(1, Ordering::AcqRel);
        self.tunnels.closed.notify_waiters();
    }
}

/// Resolves once keyway shuts down (the watch guard is dropped inside, so a task holding this
/// future stays `Send`).
pub async fn stopped(stopping: &mut watch::Receiver<bool>) {
    let _ = stopping.wait_for(|s| *s).await;
}

impl Tunnels {
    pub fn open(self: &Arc<Self>) -> Open {
        self.open.fetch_add(1, Ordering::AcqRel);
        Open {
            tunnels: self.clone(),
            stopping: self.stopping.subscribe(),
        }
    }

    pub fn count(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Tells every connection to close (a close frame 1001 where keyway speaks WebSocket), then
    /// waits for them, at most `grace`.
    pub async fn close_all(&self, grace: Duration) {
        let _ = self.stopping.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let closed = self.closed.notified();
            tokio::pin!(closed);
            closed.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            if tokio::time::timeout_at(deadline, closed).await.is_err() {
                tracing::warn!(
                    open = self.count(),
                    "shutdown grace elapsed with WebSocket connections open"
                );
                return;
            }
        }
    }
}
