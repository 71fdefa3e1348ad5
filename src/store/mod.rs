//! The durable log: every conversation's entries, the dedupe index,
//! conversation and visitor state, and receipt cursors, in one embedded sled
//! database.
//!
//! # Who calls it, and how
//!
//! Shards are glommio executors that must never block on the disk, so they
//! call the [`Store`] from a blocking thread pool (`spawn_blocking`): the
//! trait is synchronous and `Send + Sync + 'static`. Encoding and decoding
//! (rkyv) happen inside the store's calls, so that CPU work stays off the
//! executors too. A shard groups many appends into one [`CommitBatch`]
//! (group commit) and acknowledges them once [`Store::commit`] returns `Ok`.
//!
//! # Layout
//!
//! One sled tree (the default tree) holds every record under prefixed,
//! NUL-separated keys with big-endian sequence numbers; the table and the
//! reasons are in `keys.rs`. Values are rkyv archives (`records.rs`), read back
//! in place: entries are visited as [`EntryView`]s borrowed from sled's
//! buffers, never copied.
//!
//! # Atomicity: one `apply_batch` per commit
//!
//! Every op of a batch (entries, dedupe records, conversation state,
//! cursors, visitors) goes into one `sled::Batch` applied to one tree, and
//! sled recovers a batch all or nothing. From sled 0.34.7's source:
//! `Tree::apply_batch_inner` (`tree.rs`) first calls `pin_log`, which
//! reserves a `BatchManifest` message in the log ahead of the batch's writes
//! (`pagecache/mod.rs`, `PageCache::pin_log`); after the writes,
//! `RecoveryGuard::seal_batch` stores in that manifest the highest LSN the
//! batch reserved (`Reservation::mark_writebatch`). On recovery,
//! `LogIter::next` (`pagecache/iterator.rs`) meets the manifest before any
//! of the batch's writes and, if the batch's last LSN lies beyond the
//! contiguous stable tip of the log, stops recovery right there ("cutting
//! recovery short due to torn batch"), so none of a torn batch is replayed.
//! Only one tree is involved, so this covers the whole commit. (Concurrent
//! batches are serialised by sled's `concurrency_control::write()`.)
//!
//! # Durability: flush, then fdatasync
//!
//! `Db::flush` makes sled write its io buffers and wait for them. Its doc
//! comment says it "calls fsync", but on Linux (without sled's `io_uring`
//! feature, which we do not enable) the write path ends in
//! `sync_file_range(WAIT_BEFORE | WRITE | WAIT_AFTER)`
//! (`IoBufs::write_to_log`, `pagecache/iobuf.rs` around line 736). That is
//! not `fsync`/`fdatasync`: it starts and waits for writeback of the data
//! pages only. It persists no metadata (a log that grew has a new file size
//! and new block allocations) and sends no cache flush to the drive, so an
//! acknowledged entry could still be lost at power failure. `commit`
//! therefore runs `apply_batch`, then `Db::flush`, then `fdatasync`
//! ([`std::fs::File::sync_data`]) on the store's own read-only handle on
//! sled's log file, `<dir>/db` (`Inner::db_path` in sled's `config.rs`
//! joins `"db"`). `fdatasync` flushes the inode whichever descriptor it is
//! called on; it writes the size and allocation metadata the data needs and
//! makes the filesystem flush the device's write cache. Our handle is opened
//! when the store opens, so a writeback error that happens later is
//! reported to it too (Linux reports such errors to every descriptor open at
//! the time), even if sled's own periodic `sync_all` sees it first.
//!
//! Concurrent commits share `fdatasync`s: each commit, once its flush has
//! returned, takes a ticket; a sync covers every ticket taken before it
//! started, and a commit whose ticket is already covered skips its own.
//!
//! At open, the store also fsyncs the directory (so the names `db`, `conf`
//! and `blobs` survive a crash of a fresh store) and sled's `conf` file,
//! which sled writes without syncing.
//!
//! ## No blob files
//!
//! sled writes a log message larger than `segment_size /
//! MINIMUM_ITEMS_PER_SEGMENT - SEG_HEADER_LEN` (plus a 32-byte header,
//! `MAX_MSG_HEADER_LEN`) to a separate file under `blobs/`
//! (`Log::reserve_inner` in `pagecache/logger.rs`, `over_blob_threshold`),
//! and `blob_io::write_blob` writes those files without any sync at all:
//! neither `flush` nor our `fdatasync` of `db` would make them durable. The
//! messages are not single values but whole tree nodes: every tenth update
//! of a page rewrites the page's node (`PAGE_CONSOLIDATION_THRESHOLD`), a
//! leaf splits above 16 items (`Node::should_split`) and may briefly hold a
//! few more after a merge. With sled's default 512 KiB segments the
//! threshold is 131,052 bytes, which a leaf of 17 entries of 8 KiB already
//! exceeds. So the store runs sled with [`SEGMENT_SIZE`] = 16 MiB (sled's
//! maximum), a threshold of 4,194,284 bytes, and refuses any record whose
//! key and value exceed [`MAX_RECORD_BYTES`] = 96 KiB: even 21 such records
//! in one node (about 2 MiB) stay at half the threshold. Chat text is at
//! most 4 KiB by default and always below the 64 KiB WebSocket message
//! limit, so entries fit with room to spare. The segment size is written
//! into sled's `conf` and cannot change for an existing store. The cost is
//! memory: sled allocates each io buffer at the segment size (16 MiB rather
//! than 512 KiB; one is filling at a time, plus any being written). The
//! test `large_entries_never_go_to_blob_files` checks both sides: no blob
//! with our settings, blobs with sled's defaults.
//!
//! # Failures
//!
//! What a caller may assume after [`Store::commit`] returns `Err`:
//! - **Nothing of the batch is visible** through this store afterwards: no
//!   entry, dedupe record, state or cursor of it is returned by any later
//!   read, before or after a reopen; only a restart that comes before any
//!   reopen may find the batch (last point).
//!   Errors found before writing ([`StoreError::Invalid`],
//!   [`StoreError::Encode`], [`StoreError::Stopped`],
//!   [`StoreError::Injected`]) wrote nothing, and the store stays usable:
//!   the caller may reuse the batch's seqs.
//! - If writing failed (`apply_batch`, `flush` or `fdatasync`), the store
//!   undoes in memory every batch that has not returned `Ok` yet, newest
//!   first (entry and dedupe keys are removed, as they are always new;
//!   conversation, open-index, cursor and visitor keys get back the values
//!   read just before the batch was applied), keeps those undo lists, and
//!   **stops taking commits**: every later `commit` returns
//!   [`StoreError::Stopped`] until the store is reopened (next section). It
//!   cannot go on with the same database: after a failed write sled sets a
//!   global error and refuses every later write (`Config::set_global_error`,
//!   checked in `Log::reserve_inner`), and after a failed `fdatasync` the
//!   kernel may already have dropped the unwritten pages, so later syncs
//!   prove nothing about earlier data. Reads keep working meanwhile; if the
//!   undo itself failed in memory (sled's global error refuses it too, which
//!   is the usual case for a real disk error such as `ENOSPC`), reads return
//!   [`StoreError::Stopped`] as well, since memory may show writes that are
//!   not durable.
//! - **After a restart** without a reopen, a failed batch is either wholly
//!   present or wholly absent (it may have reached the disk before the
//!   failure was seen), never in part; [`Store::recover`] reports what is
//!   there, and the caller derives seqs from it.
//!
//! # Reopening after a failure
//!
//! A full disk gets space again, a flaky device comes back: the store then
//! reopens sled on the same directory, in the same process, and takes
//! commits again. The shards never see the swap: they share one
//! `Arc<dyn Store>`, and [`SledStore`] keeps the open database in a slot of
//! its own (`RwLock<Option<Arc<Open>>>`, where `Open` is the `sled::Db`
//! with our handle on its log and its sync tickets). Every call clones the
//! `Arc` out of the slot for its duration (the lock is held only for that
//! clone; calls run on the blocking pool, never on an executor).
//!
//! There is no recovery thread: while the store is stopped, each call (a
//! commit, a lookup, a read) first tries a reopen when the previous attempt
//! is far enough back (100 ms, doubling up to 2 s, reset by a success), and
//! only one call does so at a time (the others go on at once and get
//! [`StoreError::Stopped`] or, if memory is still good, their read). The
//! shards keep calling while anything waits to be written (system entries
//! and state are retried with a backoff of up to 2 s, chat messages when
//! clients resend), so a stopped store is retried about as often as it is
//! needed, and costs nothing while nothing wants it. One attempt:
//!
//! 1. **Is the disk back?** The filesystem must have at least
//!    [`REOPEN_MIN_FREE_BYTES`] free (a sled segment; less would fail again
//!    at once) and take a small probe file, written and `fdatasync`ed. If
//!    not, nothing is closed: a store whose memory is good keeps serving
//!    reads.
//! 2. **Close.** The database is taken out of the slot (later calls get
//!    `Stopped`), the attempt waits (up to 5 s) until the calls that cloned
//!    it have returned, and drops the last reference. sled flushes on drop
//!    what it still can, and releases its file lock a moment later; the
//!    open below waits for it (see `open_sled`).
//! 3. **Forget cached pages.** sled's log file is `fdatasync`ed and its
//!    pages dropped from the page cache (`POSIX_FADV_DONTNEED`), so that
//!    the reopened database reads what the disk holds rather than pages
//!    that a failed writeback left in memory, marked clean.
//! 4. **Reopen and reconcile.** sled is opened with a fresh `Config` (the
//!    old one carries the global error) and recovers its log as after a
//!    crash: every committed batch is there, each failed one wholly or not
//!    at all (a torn batch cuts recovery short, and that cannot drop a
//!    committed one: a commit succeeds only once sled's flush has written
//!    every buffer up to its own, so committed batches all lie before the
//!    first failed write, and no commit is taken after it). The kept undo lists are applied again, newest first: entry and
//!    dedupe keys of failed batches are removed, and the other keys get the
//!    values of the last successful commit, whether or not the failed batch
//!    reached the disk. Then a write (the schema version, unchanged), sled's
//!    flush and our `fdatasync`: the undo is durable, and the disk has
//!    proved it takes a write and its sync. If anything fails, the new
//!    database is dropped, the undo lists are kept, and the store stays
//!    stopped until the next attempt.
//! 5. **Serve.** The new database goes into the slot and commits resume.
//!
//! The caller's rule is unchanged: a failed commit's seqs are free again,
//! and after a reopen the store holds exactly the successful commits, so
//! the shards' in-memory state (next seqs, dedupe cache, durable seqs) is
//! still true and nothing needs to be recomputed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::ids::{ConvId, Participant, TenantId, UserId};
use crate::model::{ConvMeta, DedupeHit, DedupeKey, Entry, EntryView, VisitorMeta};

mod faulty;
mod keys;
mod records;
mod sled_store;
#[cfg(test)]
mod test_tmpfs;
#[cfg(test)]
mod tests;

pub use faulty::{FaultMode, FaultSwitch, FaultyStore};
pub use sled_store::{SledStore, REOPEN_FIRST_BACKOFF, REOPEN_MAX_BACKOFF, REOPEN_MIN_FREE_BYTES};

/// The version of the key layout and record encoding. Written into a new
/// store; a store with any other version is refused at open rather than
/// misread.
pub const SCHEMA_VERSION: u32 = 1;

/// sled's segment size, chosen so that no log message ever goes to a blob
/// file (see the module docs, "No blob files"). Fixed for the life of a store.
pub const SEGMENT_SIZE: usize = 16 * 1024 * 1024;

/// The largest record (key plus encoded value) the store accepts: keeps every
/// sled node far below the blob threshold (see the module docs).
pub const MAX_RECORD_BYTES: usize = 96 * 1024;

/// One write of a commit.
#[derive(Clone, Debug)]
pub enum Op {
    /// Append one entry to a conversation's log. Its key must be new: the
    /// caller assigns each seq once (and the failure undo relies on it).
    Entry {
        /// The conversation's tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// The entry, with its seq.
        entry: Entry,
    },
    /// Record where a `(sender, client id)` was stored, so that a resend is
    /// answered with the original `ack`. Its key must be new (the caller
    /// looked it up first).
    Dedupe {
        /// The sender and its message id.
        key: DedupeKey,
        /// The conversation and seq the message was stored at.
        hit: DedupeHit,
    },
    /// Create or replace a conversation's state. A state other than closed
    /// also enters it in the open index read by [`Store::recover`]; closed
    /// takes it out.
    Conv {
        /// The conversation's tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// Its whole new state.
        meta: ConvMeta,
    },
    /// Set a participant's receipt cursor. Stored as given: keeping it
    /// monotonic is the caller's job.
    Cursor {
        /// The conversation's tenant.
        tenant: TenantId,
        /// The conversation.
        conv: ConvId,
        /// Whose cursor.
        who: Participant,
        /// "I hold every entry up to this seq."
        seq: u64,
    },
    /// Create or replace a visitor's record (its sticky agent).
    Visitor {
        /// The visitor's tenant.
        tenant: TenantId,
        /// The visitor.
        visitor: UserId,
        /// Its whole new record.
        meta: VisitorMeta,
    },
}

/// Writes that become durable together, or not at all.
#[derive(Clone, Debug, Default)]
pub struct CommitBatch {
    /// The writes, applied in order (a later write to the same key wins).
    pub ops: Vec<Op>,
}

/// What one commit cost, for metrics and group-commit tuning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommitStats {
    /// Ops in the batch.
    pub ops: usize,
    /// Of which log entries.
    pub entries: usize,
    /// Key and value bytes handed to sled.
    pub bytes: usize,
    /// Encoding the records and applying the batch in memory.
    pub apply: Duration,
    /// sled's `flush`: writing its buffers to the log file.
    pub flush: Duration,
    /// `fdatasync` of the log file (zero when a concurrent commit's sync
    /// already covered this one).
    pub sync: Duration,
}

/// The durable log, as the shards see it.
///
/// Every method blocks on the disk: call it from a blocking thread pool.
pub trait Store: Send + Sync + 'static {
    /// Applies every op of `batch` atomically and durably: when this returns
    /// `Ok`, all of it is on disk (`fdatasync` done). After an `Err`, see the
    /// module docs ("Failures") for what the caller may assume.
    fn commit(&self, batch: &CommitBatch) -> Result<CommitStats, StoreError>;

    /// Whether the store takes commits now (`false` while it is stopped
    /// after a failed write, until it reopens). Never blocks: it is read
    /// for `/metrics`. A store that cannot stop says `true`.
    fn is_writable(&self) -> bool {
        true
    }

    /// Looks up where each `(sender, client id)` was stored, in order.
    fn lookup_dedupe(&self, keys: &[DedupeKey]) -> Result<Vec<Option<DedupeHit>>, StoreError>;

    /// Visits the entries of a conversation with `seq > after`, ascending, at
    /// most `limit` of them; returns how many were visited. On an error
    /// (a corrupt record) some entries may have been visited already.
    fn read_entries(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        after: u64,
        limit: usize,
        visit: &mut dyn FnMut(EntryView<'_>),
    ) -> Result<usize, StoreError>;

    /// Visits the `limit` entries just below `before` (all entries when
    /// `before == u64::MAX`), oldest first; returns whether older ones exist
    /// (history's `more`). On an error some entries may have been visited
    /// already.
    fn read_entries_before(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        before: u64,
        limit: usize,
        visit: &mut dyn FnMut(EntryView<'_>),
    ) -> Result<bool, StoreError>;

    /// A conversation's state, closed ones included; `None` if it never existed.
    fn conv(&self, tenant: &TenantId, conv: &ConvId) -> Result<Option<ConvMeta>, StoreError>;

    /// Everything a restart needs: every conversation that is not closed,
    /// with its last seq and cursors, and every visitor record. Reads no
    /// log entry: its cost follows the open conversations and the visitors,
    /// not the size of the log.
    fn recover(&self) -> Result<Recovered, StoreError>;

    /// Visits the [`dedupe_fingerprint`] of every stored `(sender, id)`
    /// (start-up fills the in-memory dedupe filter with them); returns how
    /// many there were.
    fn dedupe_fingerprints(&self, visit: &mut dyn FnMut(u64)) -> Result<u64, StoreError>;
}

impl<S: Store + ?Sized> Store for Arc<S> {
    fn commit(&self, batch: &CommitBatch) -> Result<CommitStats, StoreError> {
        (**self).commit(batch)
    }

    fn lookup_dedupe(&self, keys: &[DedupeKey]) -> Result<Vec<Option<DedupeHit>>, StoreError> {
        (**self).lookup_dedupe(keys)
    }

    fn read_entries(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        after: u64,
        limit: usize,
        visit: &mut dyn FnMut(EntryView<'_>),
    ) -> Result<usize, StoreError> {
        (**self).read_entries(tenant, conv, after, limit, visit)
    }

    fn read_entries_before(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        before: u64,
        limit: usize,
        visit: &mut dyn FnMut(EntryView<'_>),
    ) -> Result<bool, StoreError> {
        (**self).read_entries_before(tenant, conv, before, limit, visit)
    }

    fn conv(&self, tenant: &TenantId, conv: &ConvId) -> Result<Option<ConvMeta>, StoreError> {
        (**self).conv(tenant, conv)
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        (**self).recover()
    }

    fn dedupe_fingerprints(&self, visit: &mut dyn FnMut(u64)) -> Result<u64, StoreError> {
        (**self).dedupe_fingerprints(visit)
    }
}

/// A 64-bit fingerprint of a dedupe key: the stable hash of its stored
/// key bytes, so the same function serves ids being sent and ids read back
/// from the store.
pub fn dedupe_fingerprint(key: &DedupeKey) -> u64 {
    shards::stable_hash(&[&keys::dedupe_key(&key.tenant, &key.sender, &key.client_id)])
}

/// What [`Store::recover`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// Every conversation that is not closed, ordered by tenant then id.
    pub convs: Vec<RecoveredConv>,
    /// Every visitor record (sticky agents), ordered by tenant then visitor.
    pub visitors: Vec<(TenantId, UserId, VisitorMeta)>,
}

/// One open conversation, as a restart finds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoveredConv {
    /// Its tenant.
    pub tenant: TenantId,
    /// Its id.
    pub conv: ConvId,
    /// Its state (queued or assigned).
    pub meta: ConvMeta,
    /// The seq of its last entry (0: no entry yet): the next one is `last_seq + 1`.
    pub last_seq: u64,
    /// Every stored receipt cursor of it.
    pub cursors: Vec<(Participant, u64)>,
}

/// Why a store call failed, tagged with where.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled failed.
    #[error("sled failed during {op}: {source}")]
    Sled {
        /// What the store was doing.
        op: &'static str,
        /// sled's error.
        #[source]
        source: sled::Error,
    },
    /// A file operation of the store's own failed.
    #[error("{op} failed on {}: {source}", path.display())]
    Io {
        /// What the store was doing.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A stored value or key does not decode.
    #[error("corrupt record at key {key_hex}: {reason}")]
    Corrupt {
        /// The key, hex encoded.
        key_hex: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record could not be encoded (nothing was written).
    #[error("could not encode a record: {reason}")]
    Encode {
        /// rkyv's message.
        reason: String,
    },
    /// The batch was refused before anything was written: an id containing
    /// NUL, a seq of 0, or a record larger than [`MAX_RECORD_BYTES`].
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// What was invalid.
        what: &'static str,
        /// Why.
        reason: String,
    },
    /// The store on disk has another schema version (or none, yet holds data).
    #[error("store schema version {}, this build reads version {expected}",
        found.map_or_else(|| "missing".to_owned(), |v| v.to_string()))]
    SchemaMismatch {
        /// The version found, `None` when a non-empty store has none.
        found: Option<u32>,
        /// [`SCHEMA_VERSION`].
        expected: u32,
    },
    /// The store stopped taking writes (or reads) after an earlier write
    /// failure; it reopens once the disk takes writes again. See the module
    /// docs.
    #[error(
        "the store stopped after a write failure; it reopens once the disk takes writes again"
    )]
    Stopped,
    /// A fault injected by [`FaultyStore`] (nothing was written).
    #[error("injected storage fault during {op}")]
    Injected {
        /// The call that was failed.
        op: &'static str,
    },
}

impl StoreError {
    fn sled(op: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
        move |source| StoreError::Sled { op, source }
    }

    fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { op, path, source }
    }
}
