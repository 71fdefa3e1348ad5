//! Thread-per-core substrate for kefu. It knows nothing of chat.
//!
//! - [`runtime`]: one glommio executor (io_uring) per shard, pinned to a core.
//! - [`mesh`]: bounded, lock-free channels between every pair of shards,
//!   with batching outboxes so that senders never block.
//! - [`hash`]: stable placement of keys on shards.
//! - [`pool`]: per-shard buffer pools.
//! - [`notify`] and [`event`]: single-threaded wake-ups for tasks on one shard.
//!
//! The rule this crate serves: everything a shard owns is plain
//! single-threaded data; other shards reach it only by messages.
#![warn(missing_docs)]

pub mod event;
pub mod hash;
pub mod mesh;
pub mod notify;
pub mod pool;
pub mod runtime;

pub use hash::{shard_for, stable_hash};
pub use runtime::{RuntimeConfig, ShardContext};
