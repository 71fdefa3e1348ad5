//! [`SledStore`]: the [`Store`] on sled 0.34. The design (layout, atomicity,
//! durability, failures, reopening after a failure) is explained in the
//! parent module.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use sled::IVec;

use super::keys::{self, component_ok};
use super::records::{self, ArchivedConvRecord, ArchivedDedupeRecord, ArchivedEntryRecord};
use super::records::{ArchivedVisitorRecord, ConvRecord, DedupeRecord, EntryRecord, VisitorRecord};
use super::{
    CommitBatch, CommitStats, Op, Recovered, RecoveredConv, Store, StoreError, MAX_RECORD_BYTES,
    SCHEMA_VERSION, SEGMENT_SIZE,
};
use crate::config::StoreSettings;
use crate::ids::{ConvId, TenantId, UserId};
use crate::model::{ConvMeta, ConvState, DedupeHit, DedupeKey, EntryView};

/// Reads and writes work.
const HEALTHY: u8 = 0;
/// A write failed and was undone: commits are refused, reads still work.
const WRITES_STOPPED: u8 = 1;
/// A write failed and could not be undone in memory, or a reopen has closed
/// the database: every call is refused.
const STOPPED: u8 = 2;

/// The first wait between two reopen attempts; it doubles after each failed
/// attempt up to [`REOPEN_MAX_BACKOFF`].
pub const REOPEN_FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two reopen attempts.
pub const REOPEN_MAX_BACKOFF: Duration = Duration::from_secs(2);
/// Free space the store's filesystem must have before a reopen is tried:
/// one sled segment, so that a reopen does not fail again at once.
pub const REOPEN_MIN_FREE_BYTES: u64 = SEGMENT_SIZE as u64;
/// How long a reopen waits for calls still using the old database.
const REOPEN_DRAIN: Duration = Duration::from_secs(5);
/// The file a reopen writes and syncs (then removes) to see whether the
/// disk takes writes again, inside the store's directory.
const PROBE_FILE: &str = "kefu-write-probe";
/// Bytes written to [`PROBE_FILE`].
const PROBE_BYTES: usize = 64 * 1024;

/// The keys one commit wrote, each with the value to put back (`None`:
/// remove the key).
type Undo = Vec<(IVec, Option<IVec>)>;

/// The durable log on sled: one tree, one `apply_batch` and one `fdatasync`
/// (shared with concurrent commits) per commit. After a write failure it
/// stops taking commits, and reopens the database once the disk takes
/// writes again (see the parent module, "Reopening after a failure").
pub struct SledStore {
    /// The store's directory: sled's files go directly in it.
    dir: PathBuf,
    /// sled's settings, for reopening.
    settings: StoreSettings,
    /// The open database. Calls clone the `Arc` for their duration (they
    /// run on blocking threads, never on an executor); a reopen takes it
    /// out, waits for those calls to finish, and puts a new one in. `None`
    /// while a reopen has the database closed, or after a failed reopen.
    open: RwLock<Option<Arc<Open>>>,
    /// Commits applied in memory that have not returned yet, with how to undo
    /// them; held while applying so that the values read for the undo are
    /// the ones the batch replaces.
    in_flight: Mutex<InFlight>,
    /// `HEALTHY`, `WRITES_STOPPED` or `STOPPED`.
    state: AtomicU8,
    /// Serialises reopen attempts and spaces them out.
    reopen: Mutex<Reopen>,
    /// Makes the next `fdatasync` fail, to test the failure path.
    #[cfg(test)]
    pub(super) fail_next_sync: std::sync::atomic::AtomicBool,
    /// Calls do not reopen a stopped store by themselves (tests of the
    /// stopped state call [`SledStore::reopen`] when they want one).
    #[cfg(test)]
    pub(super) manual_reopen: std::sync::atomic::AtomicBool,
    /// A failure's undo is not applied in memory, as when sled refuses it
    /// after a real write error: the failed batch stays in memory (and
    /// reaches the disk when the database is dropped).
    #[cfg(test)]
    pub(super) skip_memory_undo: std::sync::atomic::AtomicBool,
}

/// One opening of the sled database, with what syncs its log.
struct Open {
    /// The database; its default tree holds every record.
    db: sled::Db,
    /// sled's log file, `<dir>/db`: named in errors.
    log_path: PathBuf,
    /// Our own handle on the log file, for `fdatasync` (sled only
    /// `sync_file_range`s it).
    log_file: File,
    /// Sync tickets handed out: one per commit whose flush has returned.
    tickets: AtomicU64,
    /// The highest ticket covered by a successful `fdatasync`; the lock also
    /// serialises the syncs, so that a failed sync is seen by every commit
    /// that comes after it.
    synced: Mutex<u64>,
}

/// The commits applied but not yet answered.
#[derive(Default)]
struct InFlight {
    /// The next commit's number (apply order).
    next: u64,
    /// Per commit, in apply order: each key it wrote and the value to put back.
    undo: BTreeMap<u64, Undo>,
    /// The undo of every commit a write failure undid, in apply order, kept
    /// until a reopen has applied them again to the reopened database and
    /// made that durable: the failed batches may have reached the disk.
    failed: Vec<Undo>,
}

/// Reopen attempts since the last failure.
#[derive(Default)]
struct Reopen {
    /// When the last attempt ended (`None`: none yet).
    last: Option<Instant>,
    /// How long to wait after it.
    backoff: Duration,
}

/// One key of a batch, encoded.
struct Write {
    key: IVec,
    /// `None` removes the key.
    value: Option<IVec>,
    /// The key cannot exist before this batch (entries, dedupe records): its
    /// undo is a removal, with no read beforehand.
    fresh: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn corrupt(key: &[u8], reason: &str) -> StoreError {
    StoreError::Corrupt {
        key_hex: keys::hex(key),
        reason: reason.to_owned(),
    }
}

fn check_id(what: &'static str, id: &str) -> Result<(), StoreError> {
    if component_ok(id) {
        Ok(())
    } else {
        Err(StoreError::Invalid {
            what,
            reason: format!("{id:?} contains a NUL byte"),
        })
    }
}

/// fsyncs a file or directory by path.
fn sync_path(path: &Path) -> Result<(), StoreError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(StoreError::io("fsync", path))
}

impl Open {
    /// Opens sled in `dir` with our own handle on its log, syncs what sled
    /// leaves unsynced, and checks (or, in a new store, writes) the schema
    /// version.
    fn start(dir: &Path, settings: &StoreSettings) -> Result<Open, StoreError> {
        let db = open_sled(&sled_config(dir, settings)).map_err(StoreError::sled("open"))?;
        let log_path = dir.join("db");
        let log_file = File::open(&log_path).map_err(StoreError::io("open", &log_path))?;
        // sled creates these names and writes `conf` without syncing any of it.
        sync_path(&dir.join("conf"))?;
        sync_path(dir)?;
        let open = Open {
            db,
            log_path,
            log_file,
            tickets: AtomicU64::new(0),
            synced: Mutex::new(0),
        };
        open.check_schema()?;
        Ok(open)
    }

    fn check_schema(&self) -> Result<(), StoreError> {
        let stored = self
            .db
            .get(keys::SCHEMA_KEY)
            .map_err(StoreError::sled("read schema version"))?;
        match stored {
            Some(v) => {
                let found = <[u8; 4]>::try_from(&v[..])
                    .map(u32::from_be_bytes)
                    .map_err(|_| corrupt(keys::SCHEMA_KEY, "schema version is not 4 bytes"))?;
                if found != SCHEMA_VERSION {
                    return Err(StoreError::SchemaMismatch {
                        found: Some(found),
                        expected: SCHEMA_VERSION,
                    });
                }
            }
            None => {
                let first = self.db.first().map_err(StoreError::sled("open"))?;
                if first.is_some() {
                    return Err(StoreError::SchemaMismatch {
                        found: None,
                        expected: SCHEMA_VERSION,
                    });
                }
                self.db
                    .insert(keys::SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(StoreError::sled("write schema version"))?;
                self.flush_and_sync()?;
            }
        }
        Ok(())
    }

    /// sled's flush, then `fdatasync` of the log, outside any commit.
    fn flush_and_sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(StoreError::sled("flush"))?;
        self.log_file
            .sync_data()
            .map_err(StoreError::io("fdatasync", &self.log_path))
    }

    fn conv(&self, tenant: &TenantId, conv: &ConvId) -> Result<Option<ConvMeta>, StoreError> {
        let key = keys::conv_key(tenant, conv);
        let value = self
            .db
            .get(&key)
            .map_err(StoreError::sled("read conversation"))?;
        value
            .map(|v| {
                Ok(records::conv_meta(records::access::<ArchivedConvRecord>(
                    &key, &v,
                )?))
            })
            .transpose()
    }

    fn last_seq(&self, tenant: &TenantId, conv: &ConvId) -> Result<u64, StoreError> {
        let prefix = keys::entry_prefix(tenant, conv);
        match self.db.scan_prefix(&prefix).next_back() {
            None => Ok(0),
            Some(item) => {
                let (key, _) = item.map_err(StoreError::sled("read last entry"))?;
                keys::entry_seq(&key, prefix.len())
                    .ok_or_else(|| corrupt(&key, "malformed entry key"))
            }
        }
    }
}

/// Applies undo lists to `db`, newest first, as one sled batch each.
fn apply_undo<'u>(db: &sled::Db, newest_first: impl Iterator<Item = &'u Undo>) -> sled::Result<()> {
    for undo in newest_first {
        let mut batch = sled::Batch::default();
        for (key, previous) in undo {
            match previous {
                Some(value) => batch.insert(key.clone(), value.clone()),
                None => batch.remove(key.clone()),
            }
        }
        db.apply_batch(batch)?;
    }
    Ok(())
}

impl SledStore {
    /// Opens (or creates) the store in `dir`: sled's files go directly in it.
    ///
    /// A new store gets the current [`SCHEMA_VERSION`], durably, before this
    /// returns; an existing one must have it. sled locks the directory: a
    /// store open elsewhere fails after a wait of up to 2 s (the wait is for
    /// a store dropped in this process, whose lock sled releases a moment
    /// late).
    pub fn open(dir: &Path, settings: &StoreSettings) -> Result<SledStore, StoreError> {
        let open = Open::start(dir, settings)?;
        Ok(SledStore {
            dir: dir.to_path_buf(),
            settings: settings.clone(),
            open: RwLock::new(Some(Arc::new(open))),
            in_flight: Mutex::default(),
            state: AtomicU8::new(HEALTHY),
            reopen: Mutex::default(),
            #[cfg(test)]
            fail_next_sync: Default::default(),
            #[cfg(test)]
            manual_reopen: Default::default(),
            #[cfg(test)]
            skip_memory_undo: Default::default(),
        })
    }

    /// Whether the store takes commits now (a stopped store may still
    /// serve reads). Never blocks.
    pub fn is_writable(&self) -> bool {
        self.state.load(Ordering::Acquire) == HEALTHY
    }

    /// The open database, for a call that writes: refused unless healthy.
    /// A stopped store first tries to reopen (at most once per backoff).
    fn writable(&self) -> Result<Arc<Open>, StoreError> {
        if !self.is_writable() {
            self.reopen_if_due();
            if !self.is_writable() {
                return Err(StoreError::Stopped);
            }
        }
        self.current().ok_or(StoreError::Stopped)
    }

    /// The open database, for a call that reads: refused only when memory
    /// cannot be trusted or the database is closed. A stopped store first
    /// tries to reopen (at most once per backoff).
    fn readable(&self) -> Result<Arc<Open>, StoreError> {
        if !self.is_writable() {
            self.reopen_if_due();
            if self.state.load(Ordering::Acquire) == STOPPED {
                return Err(StoreError::Stopped);
            }
        }
        self.current().ok_or(StoreError::Stopped)
    }

    fn current(&self) -> Option<Arc<Open>> {
        self.open
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_current(&self, open: Option<Arc<Open>>) {
        *self.open.write().unwrap_or_else(PoisonError::into_inner) = open;
    }

    /// Reopens the store if it stopped and the last attempt is far enough
    /// back; does nothing if another thread is reopening it right now.
    fn reopen_if_due(&self) {
        #[cfg(test)]
        if self.manual_reopen.load(Ordering::SeqCst) {
            return;
        }
        let mut reopen = match self.reopen.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if reopen
            .last
            .is_some_and(|last| last.elapsed() < reopen.backoff)
        {
            return;
        }
        // Failures are logged and retried after the backoff.
        let _ = self.reopen_locked(&mut reopen);
    }

    /// Reopens a stopped store now (see the parent module, "Reopening after
    /// a failure"): returns `Ok` once it takes commits again (at once if it
    /// never stopped), else why not. Calls on a stopped store do this by
    /// themselves, at most every [`REOPEN_MAX_BACKOFF`].
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut reopen = lock(&self.reopen);
        self.reopen_locked(&mut reopen)
    }

    fn reopen_locked(&self, reopen: &mut Reopen) -> Result<(), StoreError> {
        if self.is_writable() {
            return Ok(());
        }
        let result = self.try_reopen();
        match &result {
            Ok(()) => {
                *reopen = Reopen::default();
                tracing::warn!(dir = %self.dir.display(), "store reopened after a write failure: commits resume");
            }
            Err(e) => {
                reopen.last = Some(Instant::now());
                reopen.backoff =
                    (reopen.backoff * 2).clamp(REOPEN_FIRST_BACKOFF, REOPEN_MAX_BACKOFF);
                tracing::debug!(dir = %self.dir.display(), error = %e, "store not reopened yet");
            }
        }
        result
    }

    /// One reopen attempt; the store stays stopped if it fails.
    fn try_reopen(&self) -> Result<(), StoreError> {
        // 1. Does the disk take writes again? Asked before closing anything,
        // so that a store that still serves reads goes on serving them.
        check_disk(&self.dir)?;

        // 2. Close the database: take it out (new calls now fail with
        // `Stopped`), wait for the calls still using it, drop it.
        if let Some(old) = self
            .open
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            self.state.store(STOPPED, Ordering::Release);
            let deadline = Instant::now() + REOPEN_DRAIN;
            while Arc::strong_count(&old) > 1 {
                if Instant::now() > deadline {
                    return Err(StoreError::Io {
                        op: "close the store for a reopen",
                        path: self.dir.clone(),
                        source: std::io::Error::other("calls still use the database"),
                    });
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            // sled flushes what it can on drop (nothing, if it failed).
            drop(old);
        }

        // 3. Make the reopened database read what the disk holds, not pages
        // the kernel may keep in memory after a failed writeback.
        let log_path = self.dir.join("db");
        forget_cached_pages(&log_path)?;

        // 4. Reopen; undo the failed batches again (they may have reached
        // the disk); prove the disk takes a write and its fdatasync.
        let open = Open::start(&self.dir, &self.settings)?;
        let failed = std::mem::take(&mut lock(&self.in_flight).failed);
        let redone = apply_undo(&open.db, failed.iter().rev())
            .map_err(StoreError::sled("undo failed commits after a reopen"))
            .and_then(|()| {
                open.db
                    .insert(keys::SCHEMA_KEY, &SCHEMA_VERSION.to_be_bytes())
                    .map_err(StoreError::sled("write after a reopen"))?;
                open.flush_and_sync()
            });
        if let Err(e) = redone {
            // Keep the undo for the next attempt.
            let mut in_flight = lock(&self.in_flight);
            let newer = std::mem::replace(&mut in_flight.failed, failed);
            in_flight.failed.extend(newer);
            return Err(e);
        }

        // 5. Serve again.
        self.set_current(Some(Arc::new(open)));
        let in_flight = lock(&self.in_flight);
        debug_assert!(in_flight.undo.is_empty(), "no commit applies while stopped");
        self.state.store(HEALTHY, Ordering::Release);
        drop(in_flight);
        Ok(())
    }

    /// Encodes a batch into its keys and values, refusing it whole if any
    /// id or size is invalid. Returns the writes, the entry count and the
    /// byte count.
    fn encode(batch: &CommitBatch) -> Result<(Vec<Write>, usize, usize), StoreError> {
        let mut writes = Vec::with_capacity(batch.ops.len() + 2);
        let mut entries = 0;
        let put = |writes: &mut Vec<Write>, key: Vec<u8>, value: Option<&[u8]>, fresh| {
            writes.push(Write {
                key: IVec::from(key),
                value: value.map(IVec::from),
                fresh,
            })
        };
        for op in &batch.ops {
            match op {
                Op::Entry {
                    tenant,
                    conv,
                    entry,
                } => {
                    check_id("tenant id", tenant.as_str())?;
                    check_id("conversation id", conv.as_str())?;
                    if entry.seq == 0 {
                        return Err(StoreError::Invalid {
                            what: "seq",
                            reason: "log seqs start at 1".to_owned(),
                        });
                    }
                    let value = records::encode(&EntryRecord::from(entry))?;
                    let key = keys::entry_key(tenant, conv, entry.seq);
                    put(&mut writes, key, Some(&value), true);
                    entries += 1;
                }
                Op::Dedupe { key, hit } => {
                    check_id("tenant id", key.tenant.as_str())?;
                    check_id("sender id", key.sender.id.as_str())?;
                    check_id("client message id", &key.client_id)?;
                    let value = records::encode(&DedupeRecord::from(hit))?;
                    let key = keys::dedupe_key(&key.tenant, &key.sender, &key.client_id);
                    put(&mut writes, key, Some(&value), true);
                }
                Op::Conv { tenant, conv, meta } => {
                    check_id("tenant id", tenant.as_str())?;
                    check_id("conversation id", conv.as_str())?;
                    let value = records::encode(&ConvRecord::from(meta))?;
                    put(
                        &mut writes,
                        keys::conv_key(tenant, conv),
                        Some(&value),
                        false,
                    );
                    let open = (meta.state != ConvState::Closed).then_some(&[][..]);
                    put(&mut writes, keys::open_key(tenant, conv), open, false);
                }
                Op::Cursor {
                    tenant,
                    conv,
                    who,
                    seq,
                } => {
                    check_id("tenant id", tenant.as_str())?;
                    check_id("conversation id", conv.as_str())?;
                    check_id("participant id", who.id.as_str())?;
                    let key = keys::cursor_key(tenant, conv, who);
                    put(&mut writes, key, Some(&seq.to_be_bytes()), false);
                }
                Op::Visitor {
                    tenant,
                    visitor,
                    meta,
                } => {
                    check_id("tenant id", tenant.as_str())?;
                    check_id("visitor id", visitor.as_str())?;
                    let value = records::encode(&VisitorRecord::from(meta))?;
                    put(
                        &mut writes,
                        keys::visitor_key(tenant, visitor),
                        Some(&value),
                        false,
                    );
                }
            }
        }
        let mut bytes = 0;
        for w in &writes {
            let size = w.key.len() + w.value.as_ref().map_or(0, |v| v.len());
            if size > MAX_RECORD_BYTES {
                return Err(StoreError::Invalid {
                    what: "record size",
                    reason: format!(
                        "{size} bytes at key {}, limit {MAX_RECORD_BYTES}",
                        keys::hex(&w.key)
                    ),
                });
            }
            bytes += size;
        }
        Ok((writes, entries, bytes))
    }

    /// Applies `writes` in memory as one sled batch and registers its undo.
    /// Returns the commit's number.
    fn apply(&self, open: &Open, writes: Vec<Write>) -> Result<u64, StoreError> {
        let mut in_flight = lock(&self.in_flight);
        if !self.is_writable() {
            return Err(StoreError::Stopped);
        }
        let mut undo = Vec::with_capacity(writes.len());
        let mut batch = sled::Batch::default();
        for w in writes {
            let previous = if w.fresh {
                None
            } else {
                open.db
                    .get(&w.key)
                    .map_err(StoreError::sled("read before commit"))?
            };
            undo.push((w.key.clone(), previous));
            match w.value {
                Some(value) => batch.insert(w.key, value),
                None => batch.remove(w.key),
            }
        }
        let number = in_flight.next;
        in_flight.next += 1;
        in_flight.undo.insert(number, undo);
        if let Err(e) = open.db.apply_batch(batch) {
            // sled may have applied part of the batch in memory.
            return Err(self.fail_locked(&mut in_flight, open, StoreError::sled("apply_batch")(e)));
        }
        Ok(number)
    }

    /// `fdatasync`s the log file unless a sync that started after this
    /// commit's flush has already succeeded.
    fn sync(&self, open: &Open) -> Result<(), StoreError> {
        let ticket = open.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = lock(&open.synced);
        if !self.is_writable() {
            return Err(StoreError::Stopped);
        }
        if *synced >= ticket {
            return Ok(());
        }
        // Every ticket up to `target` was taken after its flush returned, so
        // before this sync starts: the sync covers them all.
        let target = open.tickets.load(Ordering::SeqCst);
        #[cfg(test)]
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(StoreError::io("fdatasync", &open.log_path)(
                std::io::Error::other("injected by a test"),
            ));
        }
        open.log_file
            .sync_data()
            .map_err(StoreError::io("fdatasync", &open.log_path))?;
        *synced = target;
        Ok(())
    }

    /// A write failed: stop taking commits, undo every commit applied but not
    /// answered (newest first), and return `err`.
    fn fail(&self, open: &Open, err: StoreError) -> StoreError {
        let mut in_flight = lock(&self.in_flight);
        self.fail_locked(&mut in_flight, open, err)
    }

    fn fail_locked(&self, in_flight: &mut InFlight, open: &Open, err: StoreError) -> StoreError {
        self.state.fetch_max(WRITES_STOPPED, Ordering::AcqRel);
        let undone: Vec<Undo> = std::mem::take(&mut in_flight.undo).into_values().collect();
        #[cfg(test)]
        if self.skip_memory_undo.load(Ordering::SeqCst) {
            self.state.store(STOPPED, Ordering::Release);
            in_flight.failed.extend(undone);
            return err;
        }
        if apply_undo(&open.db, undone.iter().rev()).is_err() {
            // Memory may now show writes that are not durable: refuse reads too.
            self.state.store(STOPPED, Ordering::Release);
        }
        // A reopen applies them again: the failed batches may be on disk.
        in_flight.failed.extend(undone);
        err
    }

    /// Decodes an entry found under `key` (whose prefix has `prefix_len` bytes).
    fn entry<'v>(
        key: &[u8],
        value: &'v [u8],
        prefix_len: usize,
    ) -> Result<EntryView<'v>, StoreError> {
        let view = records::entry_view(records::access::<ArchivedEntryRecord>(key, value)?);
        if keys::entry_seq(key, prefix_len) != Some(view.seq) {
            return Err(corrupt(key, "the entry's seq differs from its key"));
        }
        Ok(view)
    }
}

/// Does the disk under `dir` take writes? At least
/// [`REOPEN_MIN_FREE_BYTES`] free, and a small file written and synced.
fn check_disk(dir: &Path) -> Result<(), StoreError> {
    use std::io::Write as _;
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| StoreError::io("statvfs", dir)(std::io::Error::other("path contains NUL")))?;
    // SAFETY: statvfs fills the struct we pass; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(StoreError::io("statvfs", dir)(
            std::io::Error::last_os_error(),
        ));
    }
    // u64 on 64-bit Linux, narrower on some other targets.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(stat.f_bavail).saturating_mul(u64::from(stat.f_frsize));
    if free < REOPEN_MIN_FREE_BYTES {
        return Err(StoreError::io("check free space", dir)(
            std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!("{free} bytes free, a reopen waits for {REOPEN_MIN_FREE_BYTES}"),
            ),
        ));
    }
    let probe = dir.join(PROBE_FILE);
    let written = File::create(&probe).and_then(|mut f| {
        f.write_all(&[0u8; PROBE_BYTES])?;
        f.sync_data()
    });
    let _ = std::fs::remove_file(&probe);
    written.map_err(StoreError::io("write a probe file", &probe))
}

/// Syncs sled's log file and drops its pages from the page cache, so that
/// the next open reads what the disk holds: after a failed writeback Linux
/// may keep pages in memory that never reached the disk, marked clean.
fn forget_cached_pages(log_path: &Path) -> Result<(), StoreError> {
    use std::os::fd::AsRawFd;
    let file = File::open(log_path).map_err(StoreError::io("open", log_path))?;
    file.sync_data()
        .map_err(StoreError::io("fdatasync", log_path))?;
    // SAFETY: advice on a descriptor we own; it changes no data.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
    Ok(())
}

/// sled's configuration for a store in `dir`. The segment size must never
/// change for an existing store (sled refuses to open it otherwise).
pub(crate) fn sled_config(dir: &Path, settings: &StoreSettings) -> sled::Config {
    sled::Config::new()
        .path(dir)
        .cache_capacity(settings.cache_bytes)
        .segment_size(SEGMENT_SIZE)
}

/// How long [`open_sled`] waits for sled's lock on the directory.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled, waiting a moment if its lock on `<dir>/db` is still held.
///
/// sled 0.34 locks the log file (`flock`) and unlocks it only when the last
/// reference to its `File` goes away, and its IO thread pool can hold one a
/// moment after the `Db` is dropped: a pool task hands over its result
/// (`threadpool::spawn`, `promise_filler.fill`) before its captured
/// `Arc<IoBufs>` is dropped. So reopening a store in the same process may
/// briefly meet its own old lock. A lock held by another process still
/// fails, after [`LOCK_WAIT`], with sled's message naming the file.
pub(crate) fn open_sled(config: &sled::Config) -> sled::Result<sled::Db> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match config.open() {
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock")
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            other => return other,
        }
    }
}

impl Store for SledStore {
    fn is_writable(&self) -> bool {
        SledStore::is_writable(self)
    }

    fn commit(&self, batch: &CommitBatch) -> Result<CommitStats, StoreError> {
        let open = self.writable()?;
        let started = Instant::now();
        let (writes, entries, bytes) = Self::encode(batch)?;
        let mut stats = CommitStats {
            ops: batch.ops.len(),
            entries,
            bytes,
            ..CommitStats::default()
        };
        if writes.is_empty() {
            return Ok(stats);
        }
        let number = self.apply(&open, writes)?;
        stats.apply = started.elapsed();

        let flush_started = Instant::now();
        if let Err(e) = open.db.flush() {
            return Err(self.fail(&open, StoreError::sled("flush")(e)));
        }
        stats.flush = flush_started.elapsed();

        let sync_started = Instant::now();
        if let Err(e) = self.sync(&open) {
            return Err(self.fail(&open, e));
        }
        stats.sync = sync_started.elapsed();

        if lock(&self.in_flight).undo.remove(&number).is_none() {
            // Another commit failed meanwhile and undid this one too.
            return Err(StoreError::Stopped);
        }
        Ok(stats)
    }

    fn lookup_dedupe(&self, keys: &[DedupeKey]) -> Result<Vec<Option<DedupeHit>>, StoreError> {
        let open = self.readable()?;
        keys.iter()
            .map(|k| {
                if !(component_ok(k.tenant.as_str())
                    && component_ok(k.sender.id.as_str())
                    && component_ok(&k.client_id))
                {
                    return Ok(None);
                }
                let key = keys::dedupe_key(&k.tenant, &k.sender, &k.client_id);
                let value = open.db.get(&key).map_err(StoreError::sled("read dedupe"))?;
                value
                    .map(|v| {
                        Ok(records::dedupe_hit(
                            records::access::<ArchivedDedupeRecord>(&key, &v)?,
                        ))
                    })
                    .transpose()
            })
            .collect()
    }

    fn read_entries(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        after: u64,
        limit: usize,
        visit: &mut dyn FnMut(EntryView<'_>),
    ) -> Result<usize, StoreError> {
        let open = self.readable()?;
        if limit == 0
            || after == u64::MAX
            || !component_ok(tenant.as_str())
            || !component_ok(conv.as_str())
        {
            return Ok(0);
        }
        let prefix = keys::entry_prefix(tenant, conv);
        let start = keys::entry_key_in(&prefix, after + 1);
        let end = keys::entry_key_in(&prefix, u64::MAX);
        let mut visited = 0;
        for item in open.db.range(start..=end) {
            let (key, value) = item.map_err(StoreError::sled("read entries"))?;
            visit(Self::entry(&key, &value, prefix.len())?);
            visited += 1;
            if visited == limit {
                break;
            }
        }
        Ok(visited)
    }

    fn read_entries_before(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        before: u64,
        limit: usize,
        visit: &mut dyn FnMut(EntryView<'_>),
    ) -> Result<bool, StoreError> {
        let open = self.readable()?;
        if before == 0 || !component_ok(tenant.as_str()) || !component_ok(conv.as_str()) {
            return Ok(false);
        }
        let prefix = keys::entry_prefix(tenant, conv);
        let start = keys::entry_key_in(&prefix, 0);
        let range = if before == u64::MAX {
            open.db.range(start..=keys::entry_key_in(&prefix, u64::MAX))
        } else {
            open.db.range(start..keys::entry_key_in(&prefix, before))
        };
        let mut newest_first = range.rev();
        let mut found = Vec::with_capacity(limit.min(128));
        while found.len() < limit {
            match newest_first.next() {
                Some(item) => found.push(item.map_err(StoreError::sled("read entries"))?),
                None => break,
            }
        }
        let more = newest_first
            .next()
            .transpose()
            .map_err(StoreError::sled("read entries"))?
            .is_some();
        for (key, value) in found.iter().rev() {
            visit(Self::entry(key, value, prefix.len())?);
        }
        Ok(more)
    }

    fn conv(&self, tenant: &TenantId, conv: &ConvId) -> Result<Option<ConvMeta>, StoreError> {
        let open = self.readable()?;
        if !component_ok(tenant.as_str()) || !component_ok(conv.as_str()) {
            return Ok(None);
        }
        open.conv(tenant, conv)
    }

    fn dedupe_fingerprints(&self, visit: &mut dyn FnMut(u64)) -> Result<u64, StoreError> {
        let open = self.readable()?;
        let mut count = 0;
        for item in open.db.scan_prefix([keys::TAG_DEDUPE]) {
            let (key, _) = item.map_err(StoreError::sled("read the dedupe index"))?;
            visit(shards::stable_hash(&[&key]));
            count += 1;
        }
        Ok(count)
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        let open = self.readable()?;
        let mut recovered = Recovered::default();
        for item in open.db.scan_prefix([keys::TAG_OPEN]) {
            let (key, _) = item.map_err(StoreError::sled("read open conversations"))?;
            let (tenant, conv) = keys::decode_tenant_id(&key)
                .ok_or_else(|| corrupt(&key, "malformed open-conversation key"))?;
            let conv = ConvId::from(conv);
            let meta = open
                .conv(&tenant, &conv)?
                .ok_or_else(|| corrupt(&key, "open conversation without a state record"))?;
            if meta.state == ConvState::Closed {
                // Cannot happen: the same batch writes the state and the index.
                continue;
            }
            let last_seq = open.last_seq(&tenant, &conv)?;
            let prefix = keys::cursor_prefix(&tenant, &conv);
            let mut cursors = Vec::new();
            for item in open.db.scan_prefix(&prefix) {
                let (key, value) = item.map_err(StoreError::sled("read cursors"))?;
                let who = keys::decode_cursor_who(&key, prefix.len())
                    .ok_or_else(|| corrupt(&key, "malformed cursor key"))?;
                let seq = <[u8; 8]>::try_from(&value[..])
                    .map(u64::from_be_bytes)
                    .map_err(|_| corrupt(&key, "cursor is not 8 bytes"))?;
                cursors.push((who, seq));
            }
            recovered.convs.push(RecoveredConv {
                tenant,
                conv,
                meta,
                last_seq,
                cursors,
            });
        }
        for item in open.db.scan_prefix([keys::TAG_VISITOR]) {
            let (key, value) = item.map_err(StoreError::sled("read visitors"))?;
            let (tenant, visitor) = keys::decode_tenant_id(&key)
                .ok_or_else(|| corrupt(&key, "malformed visitor key"))?;
            let visitor = UserId::from(visitor);
            let meta =
                records::visitor_meta(records::access::<ArchivedVisitorRecord>(&key, &value)?);
            recovered.visitors.push((tenant, visitor, meta));
        }
        Ok(recovered)
    }
}
