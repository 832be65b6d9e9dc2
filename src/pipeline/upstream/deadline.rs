//! The upstream request timeout. An HTTP/1 connection's requests follow one another, so one timer
//! serves them all: it is moved only when it would fire too late for the request at hand, or when
//! it fires for a request already answered. A tokio timer per request would cost a timer-wheel
//! insertion and removal every time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// One connection's timer for its requests' upstream exchanges; never shared by two requests at
/// once (HTTP/2 streams, which overlap, use a timer each).
#[derive(Debug, Default)]
pub struct RequestTimer(Mutex<Option<Pin<Box<Sleep>>>>);

impl RequestTimer {
    /// Whether `deadline` has passed; otherwise the task is woken by then.
    fn expired(&self, cx: &mut Context<'_>, deadline: Instant) -> bool {
        let mut slot = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            if Instant::now() >= deadline {
                return true;
            }
            // It fired for an earlier request: wait on for this one.
            sleep.as_mut().reset(deadline);
        }
    }
}

pin_project! {
    /// `fut`'s output, or `None` when it has not finished within its limit.
    ///
    /// A struct rather than an async fn: the future it wraps is stored once, where an async fn
    /// would hold it in each of its branches and enlarge every request's state with it.
    pub struct Within<'a, F> {
        #[pin]
        fut: F,
        #[pin]
        clock: Clock<'a>,
    }
}

pin_project! {
    #[project = ClockProj]
    enum Clock<'a> {
        /// The connection's timer, with this request's deadline.
        Shared { timer: &'a RequestTimer, deadline: Instant },
        /// A timer of the request's own (HTTP/2).
        Own { #[pin] sleep: Sleep },
    }
}

pub fn within<F: Future>(timer: Option<&RequestTimer>, limit: Duration, fut: F) -> Within<'_, F> {
    let deadline = Instant::now() + limit;
    let clock = match timer {
        Some(timer) => Clock::Shared { timer, deadline },
        None => Clock::Own {
            sleep: tokio::time::sleep_until(deadline),
        },
    };
    Within { fut, clock }
}

impl<F: Future> Future for Within<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            return Poll::Ready(Some(out));
        }
        let expired = match this.clock.project() {
            ClockProj::Shared { timer, deadline } => timer.expired(cx, *deadline),
            ClockProj::Own { sleep } => sleep.poll(cx).is_ready(),
        };
        if expired {
            Poll::Ready(None)
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_timer_serves_consecutive_requests_with_their_own_deadlines() {
        let timer = RequestTimer::default();
        // Pending once, so the timer is armed for 60 s.
        let quick = within(Some(&timer), Duration::from_secs(60), async {
            tokio::task::yield_now().await;
            1
        })
        .await;
        assert_eq!(quick, Some(1));
        // A shorter limit than the one the timer was armed for still applies.
        let started = Instant::now();
        let stuck = within(
            Some(&timer),
            Duration::from_millis(300),
            std::future::pending::<()>(),
        );
        assert_eq!(stuck.await, None);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        // A longer limit outlives the timer's earlier deadline.
        let started = Instant::now();
        let slow = within(Some(&timer), Duration::from_secs(2), async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            2
        });
        assert_eq!(slow.await, Some(2));
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        let stuck = within(
            Some(&timer),
            Duration::from_secs(5),
            std::future::pending::<()>(),
        );
        let started = Instant::now();
        assert_eq!(stuck.await, None);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        // Without a connection timer, a timer of its own.
        let own = within(
            None,
            Duration::from_millis(10),
            std::future::pending::<()>(),
        );
        assert_eq!(own.await, None);
    }
}
