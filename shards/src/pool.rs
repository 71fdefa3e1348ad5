//! A per-shard pool of byte buffers.
//!
//! Buffers that outlive one read (the carry of a frame split across reads,
//! a connection's pending output) come from here and go back here, so a
//! busy shard recycles a few warm buffers instead of asking the allocator
//! for fresh ones per message, and an idle connection holds none. The pool
//! is bounded: beyond `max_pooled` returned buffers are freed, and buffers
//! that grew past `max_capacity` are never kept, so a burst cannot pin its
//! peak memory forever.

use std::cell::{Cell, RefCell};

/// A pool of `Vec<u8>` for one shard (not `Send`: one pool per executor).
pub struct BufferPool {
    /// Returned buffers, cleared, ready for reuse.
    free: RefCell<Vec<Vec<u8>>>,
    /// Capacity of a fresh buffer.
    buffer_capacity: usize,
    /// Buffers larger than this are dropped instead of pooled.
    max_capacity: usize,
    /// At most this many buffers are kept.
    max_pooled: usize,
    /// Buffers handed out that came from the pool (for metrics and tests).
    reused: Cell<u64>,
    /// Buffers handed out that had to be allocated.
    allocated: Cell<u64>,
}

impl BufferPool {
    /// A pool handing out buffers of `buffer_capacity` bytes, keeping at
    /// most `max_pooled` of them, none larger than `max_capacity`.
    pub fn new(buffer_capacity: usize, max_capacity: usize, max_pooled: usize) -> Self {
        BufferPool {
            free: RefCell::new(Vec::new()),
            buffer_capacity,
            max_capacity: max_capacity.max(buffer_capacity),
            max_pooled,
            reused: Cell::new(0),
            allocated: Cell::new(0),
        }
    }

    /// An empty buffer with at least the pool's buffer capacity.
    pub fn take(&self) -> Vec<u8> {
        match self.free.borrow_mut().pop() {
            Some(buf) => {
                self.reused.set(self.reused.get() + 1);
                buf
            }
            None => {
                self.allocated.set(self.allocated.get() + 1);
                Vec::with_capacity(self.buffer_capacity)
            }
        }
    }

    /// Returns a buffer. Its contents are discarded.
    pub fn give(&self, mut buf: Vec<u8>) {
        if buf.capacity() < self.buffer_capacity || buf.capacity() > self.max_capacity {
            return;
        }
        let mut free = self.free.borrow_mut();
        if free.len() < self.max_pooled {
            buf.clear();
            free.push(buf);
        }
    }

    /// Buffers currently pooled.
    pub fn pooled(&self) -> usize {
        self.free.borrow().len()
    }

    /// (reused, freshly allocated) buffers handed out so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.reused.get(), self.allocated.get())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_recycled_and_bounded() {
        let pool = BufferPool::new(1024, 4096, 2);
        let a = pool.take();
        let b = pool.take();
        let c = pool.take();
        assert_eq!(pool.counts(), (0, 3));
        pool.give(a);
        pool.give(b);
        pool.give(c); // over max_pooled: freed
        assert_eq!(pool.pooled(), 2);
        let mut d = pool.take();
        assert_eq!(pool.counts(), (1, 3));
        assert!(d.is_empty() && d.capacity() >= 1024);
        d.reserve(100_000); // grew past max_capacity: not kept
        pool.give(d);
        assert_eq!(pool.pooled(), 1);
    }
}
