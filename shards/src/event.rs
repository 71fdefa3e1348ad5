//! A broadcast wake-up for many tasks on one executor.
//!
//! Where [`crate::notify::Notify`] wakes one consumer, an `Event` wakes every
//! task that waits for a condition to change, such as "the outbound backlog
//! went down" that many connection readers may be paused on. Waiters
//! re-check their condition after waking, so spurious wake-ups are harmless.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// Wakes all current waiters at each `fire`.
#[derive(Default)]
pub struct Event {
    /// Incremented by each `fire`; a waiter completes once it changed.
    generation: Cell<u64>,
    /// Tasks waiting for the next `fire`.
    waiters: RefCell<Vec<Waker>>,
}

impl Event {
    /// An event nobody waits for yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Wakes every waiter.
    pub fn fire(&self) {
        self.generation.set(self.generation.get().wrapping_add(1));
        let waiters = std::mem::take(&mut *self.waiters.borrow_mut());
        for waker in waiters {
            waker.wake();
        }
    }

    /// Completes at the next `fire` after this call.
    pub fn listen(&self) -> Listen<'_> {
        Listen {
            event: self,
            generation: self.generation.get(),
        }
    }

    /// For hand-written futures: wakes `cx`'s task at the next `fire`.
    pub fn register(&self, cx: &Context<'_>) {
        self.waiters.borrow_mut().push(cx.waker().clone());
    }

    /// How many tasks are waiting.
    pub fn waiters(&self) -> usize {
        self.waiters.borrow().len()
    }
}

/// The future returned by [`Event::listen`].
pub struct Listen<'a> {
    /// The event listened to.
    event: &'a Event,
    /// The generation seen when listening started.
    generation: u64,
}

impl Future for Listen<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.event.generation.get() != self.generation {
            Poll::Ready(())
        } else {
            self.event.waiters.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        }
    }
}
