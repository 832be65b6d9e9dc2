//! Polling one part of a task's work only when that part woke the task.
//!
//! A connection's task is polled several times per request, each time for its I/O. Some parts it
//! also waits on (the shutdown signal, the header read timer) cost a lock or a timer-wheel check
//! per poll although they fire at most once in a long while. Such a part is polled with a waker
//! of its own that marks it woken before waking the task; the task re-polls it only then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Wake, Waker};

pub struct PartWaker {
    shared: Arc<Shared>,
    /// The task waker last given to `shared`, compared without taking its lock.
    task: Option<Waker>,
    /// Whether the part has been polled once, which registers its waker.
    polled: bool,
}

#[derive(Default)]
struct Shared {
    woken: AtomicBool,
    /// The task to wake: the last one that polled the part's owner.
    task: Mutex<Option<Waker>>,
}

impl Wake for Shared {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        let task = self.task.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(waker) = &*task {
            waker.wake_by_ref();
        }
    }
}

impl PartWaker {
    pub fn new() -> Self {
        PartWaker {
            shared: Arc::new(Shared::default()),
            task: None,
            polled: false,
        }
    }

    /// Runs `poll_part` with the part's own waker if the part has woken the task since it was
    /// last polled (or was never polled); `None` otherwise. Always remembers `cx`'s task.
    pub fn poll<T>(
        &mut self,
        cx: &Context<'_>,
        poll_part: impl FnOnce(&mut Context<'_>) -> T,
    ) -> Option<T> {
        self.remember(cx);
        if self.polled && !self.shared.woken.swap(false, Ordering::AcqRel) {
            return None;
        }
        Some(self.poll_now(cx, poll_part))
    }

    /// Runs `poll_part` with the part's own waker whether or not it woke the task: for a part
    /// that changed (a timer re-armed) and must register again.
    pub fn poll_now<T>(
        &mut self,
        cx: &Context<'_>,
        poll_part: impl FnOnce(&mut Context<'_>) -> T,
    ) -> T {
        self.remember(cx);
        self.polled = true;
        let waker = Waker::from(self.shared.clone());
        poll_part(&mut Context::from_waker(&waker))
    }

    fn remember(&mut self, cx: &Context<'_>) {
        if self.task.as_ref().is_some_and(|t| t.will_wake(cx.waker())) {
            return;
        }
        self.task = Some(cx.waker().clone());
        *self.shared.task.lock().unwrap_or_else(|e| e.into_inner()) = Some(cx.waker().clone());
    }
}

impl Default for PartWaker {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::Poll;

    #[tokio::test]
    async fn polls_the_part_only_after_it_woke_the_task() {
        let (tx, mut rx) = tokio::sync::watch::channel(());
        let mut part = pin!(rx.changed());
        let mut waker = PartWaker::new();
        let mut polls = 0;
        std::future::poll_fn(|cx| {
            // First poll: registers; later polls before the send: skipped.
            for _ in 0..3 {
                let r = waker.poll(cx, |cx| {
                    polls += 1;
                    part.as_mut().poll(cx)
                });
                assert!(matches!(r, None | Some(Poll::Pending)));
            }
            Poll::Ready(())
        })
        .await;
        assert_eq!(polls, 1);
        tx.send(()).unwrap();
        // Bounded: a part that is never polled again would otherwise hang the test.
        let ready = std::future::poll_fn(|cx| match waker.poll(cx, |cx| part.as_mut().poll(cx)) {
            Some(Poll::Ready(r)) => Poll::Ready(r.is_ok()),
            _ => Poll::Pending,
        });
        let ready = tokio::time::timeout(std::time::Duration::from_secs(5), ready).await;
        assert_eq!(
            ready,
            Ok(true),
            "the part was not polled again after it fired"
        );
    }
}
