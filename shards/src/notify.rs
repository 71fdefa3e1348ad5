//! A wake-up flag for one waiting task on one executor.
//!
//! glommio tasks on a shard share a thread, so this needs no atomics: a
//! `Cell` flag that records "something happened" and the waker of the task
//! that waits for it. Notifying before anyone waits is not lost (the flag
//! stays set), and many notifications before the waiter runs collapse into
//! one wake-up, which is the point: producers notify per item, the consumer
//! drains everything per wake-up.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// One flag, one waiter.
#[derive(Default)]
pub struct Notify {
    /// Set by `notify`, cleared by the waiter when it observes it.
    flag: Cell<bool>,
    /// The task to wake on `notify`, if one is waiting.
    waker: RefCell<Option<Waker>>,
}

impl Notify {
    /// A flag that is not set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the flag and wakes the waiter, if any.
    pub fn notify(&self) {
        self.flag.set(true);
        if let Some(waker) = self.waker.borrow_mut().take() {
            waker.wake();
        }
    }

    /// Waits until the flag is set, then clears it.
    pub fn notified(&self) -> Notified<'_> {
        Notified { notify: self }
    }

    /// For hand-written futures: `Ready` (and the flag cleared) if it was
    /// set, else registers the task's waker and returns `Pending`.
    pub fn poll_notified(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.flag.replace(false) {
            Poll::Ready(())
        } else {
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    /// Is the flag set (without clearing it)?
    pub fn is_set(&self) -> bool {
        self.flag.get()
    }
}

/// The future returned by [`Notify::notified`].
pub struct Notified<'a> {
    /// The flag this future waits on.
    notify: &'a Notify,
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.notify.poll_notified(cx)
    }
}
