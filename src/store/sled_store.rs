//! [`SledStore`]: the [`Store`] on sled 0.34. The design (layout, atomicity,
//! durability, failures) is explained in the parent module.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

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
/// A write failed and could not be undone: every call is refused.
const STOPPED: u8 = 2;

/// The durable log on sled: one tree, one `apply_batch` and one `fdatasync`
/// (shared with concurrent commits) per commit.
pub struct SledStore {
    /// The database; its default tree holds every record.
    db: sled::Db,
    /// sled's log file, `<dir>/db`: named in errors.
    log_path: PathBuf,
    /// Our own handle on the log file, for `fdatasync` (sled only
    /// `sync_file_range`s it).
    log_file: File,
    /// Commits applied in memory that have not returned yet, with how to undo
    /// them; held while applying so that the values read for the undo are
    /// the ones the batch replaces.
    in_flight: Mutex<InFlight>,
    /// Sync tickets handed out: one per commit whose flush has returned.
    tickets: AtomicU64,
    /// The highest ticket covered by a successful `fdatasync`; the lock also
    /// serialises the syncs, so that a failed sync is seen by every commit
    /// that comes after it.
    synced: Mutex<u64>,
    /// `HEALTHY`, `WRITES_STOPPED` or `STOPPED`.
    state: AtomicU8,
    /// Makes the next `fdatasync` fail, to test the failure path.
    #[cfg(test)]
    pub(super) fail_next_sync: std::sync::atomic::AtomicBool,
}

/// The commits applied but not yet answered.
#[derive(Default)]
struct InFlight {
    /// The next commit's number (apply order).
    next: u64,
    /// Per commit, in apply order: each key it wrote and the value to put back
    /// (`None`: remove the key).
    undo: BTreeMap<u64, Vec<(IVec, Option<IVec>)>>,
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

impl SledStore {
    /// Opens (or creates) the store in `dir`: sled's files go directly in it.
    ///
    /// A new store gets the current [`SCHEMA_VERSION`], durably, before this
    /// returns; an existing one must have it. sled locks the directory: a
    /// store open elsewhere fails after a wait of up to 2 s (the wait is for
    /// a store dropped in this process, whose lock sled releases a moment
    /// late).
    pub fn open(dir: &Path, settings: &StoreSettings) -> Result<SledStore, StoreError> {
        let db = open_sled(&sled_config(dir, settings)).map_err(StoreError::sled("open"))?;
        let log_path = dir.join("db");
        let log_file = File::open(&log_path).map_err(StoreError::io("open", &log_path))?;
        // sled creates these names and writes `conf` without syncing any of it.
        sync_path(&dir.join("conf"))?;
        sync_path(dir)?;
        let store = SledStore {
            db,
            log_path,
            log_file,
            in_flight: Mutex::default(),
            tickets: AtomicU64::new(0),
            synced: Mutex::new(0),
            state: AtomicU8::new(HEALTHY),
            #[cfg(test)]
            fail_next_sync: Default::default(),
        };
        store.check_schema()?;
        Ok(store)
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
                self.db.flush().map_err(StoreError::sled("flush"))?;
                self.log_file
                    .sync_data()
                    .map_err(StoreError::io("fdatasync", &self.log_path))?;
            }
        }
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        match self.state.load(Ordering::Acquire) {
            HEALTHY => Ok(()),
            _ => Err(StoreError::Stopped),
        }
    }

    fn check_readable(&self) -> Result<(), StoreError> {
        match self.state.load(Ordering::Acquire) {
            STOPPED => Err(StoreError::Stopped),
            _ => Ok(()),
        }
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
    fn apply(&self, writes: Vec<Write>) -> Result<u64, StoreError> {
        let mut in_flight = lock(&self.in_flight);
        self.check_writable()?;
        let mut undo = Vec::with_capacity(writes.len());
        let mut batch = sled::Batch::default();
        for w in writes {
            let previous = if w.fresh {
                None
            } else {
                self.db
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
        if let Err(e) = self.db.apply_batch(batch) {
            // sled may have applied part of the batch in memory.
            return Err(self.fail_locked(&mut in_flight, StoreError::sled("apply_batch")(e)));
        }
        Ok(number)
    }

    /// `fdatasync`s the log file unless a sync that started after this
    /// commit's flush has already succeeded.
    fn sync(&self) -> Result<(), StoreError> {
        let ticket = self.tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut synced = lock(&self.synced);
        self.check_writable()?;
        if *synced >= ticket {
            return Ok(());
        }
        // Every ticket up to `target` was taken after its flush returned, so
        // before this sync starts: the sync covers them all.
        let target = self.tickets.load(Ordering::SeqCst);
        #[cfg(test)]
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(StoreError::io("fdatasync", &self.log_path)(
                std::io::Error::other("injected by a test"),
            ));
        }
        self.log_file
            .sync_data()
            .map_err(StoreError::io("fdatasync", &self.log_path))?;
        *synced = target;
        Ok(())
    }

    /// A write failed: stop taking commits, undo every commit applied but not
    /// answered (newest first), and return `err`.
    fn fail(&self, err: StoreError) -> StoreError {
        let mut in_flight = lock(&self.in_flight);
        self.fail_locked(&mut in_flight, err)
    }

    fn fail_locked(&self, in_flight: &mut InFlight, err: StoreError) -> StoreError {
        self.state.fetch_max(WRITES_STOPPED, Ordering::AcqRel);
        for (_, undo) in std::mem::take(&mut in_flight.undo).into_iter().rev() {
            let mut batch = sled::Batch::default();
            for (key, previous) in undo {
                match previous {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            if self.db.apply_batch(batch).is_err() {
                // Memory may now show writes that are not durable: refuse reads too.
                self.state.store(STOPPED, Ordering::Release);
                break;
            }
        }
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

    fn conv_inner(&self, tenant: &TenantId, conv: &ConvId) -> Result<Option<ConvMeta>, StoreError> {
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
    fn commit(&self, batch: &CommitBatch) -> Result<CommitStats, StoreError> {
        self.check_writable()?;
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
        let number = self.apply(writes)?;
        stats.apply = started.elapsed();

        let flush_started = Instant::now();
        if let Err(e) = self.db.flush() {
            return Err(self.fail(StoreError::sled("flush")(e)));
        }
        stats.flush = flush_started.elapsed();

        let sync_started = Instant::now();
        if let Err(e) = self.sync() {
            return Err(self.fail(e));
        }
        stats.sync = sync_started.elapsed();

        if lock(&self.in_flight).undo.remove(&number).is_none() {
            // Another commit failed meanwhile and undid this one too.
            return Err(StoreError::Stopped);
        }
        Ok(stats)
    }

    fn lookup_dedupe(&self, keys: &[DedupeKey]) -> Result<Vec<Option<DedupeHit>>, StoreError> {
        self.check_readable()?;
        keys.iter()
            .map(|k| {
                if !(component_ok(k.tenant.as_str())
                    && component_ok(k.sender.id.as_str())
                    && component_ok(&k.client_id))
                {
                    return Ok(None);
                }
                let key = keys::dedupe_key(&k.tenant, &k.sender, &k.client_id);
                let value = self.db.get(&key).map_err(StoreError::sled("read dedupe"))?;
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
        self.check_readable()?;
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
        for item in self.db.range(start..=end) {
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
        self.check_readable()?;
        if before == 0 || !component_ok(tenant.as_str()) || !component_ok(conv.as_str()) {
            return Ok(false);
        }
        let prefix = keys::entry_prefix(tenant, conv);
        let start = keys::entry_key_in(&prefix, 0);
        let range = if before == u64::MAX {
            self.db.range(start..=keys::entry_key_in(&prefix, u64::MAX))
        } else {
            self.db.range(start..keys::entry_key_in(&prefix, before))
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
        self.check_readable()?;
        if !component_ok(tenant.as_str()) || !component_ok(conv.as_str()) {
            return Ok(None);
        }
        self.conv_inner(tenant, conv)
    }

    fn dedupe_fingerprints(&self, visit: &mut dyn FnMut(u64)) -> Result<u64, StoreError> {
        self.check_readable()?;
        let mut count = 0;
        for item in self.db.scan_prefix([keys::TAG_DEDUPE]) {
            let (key, _) = item.map_err(StoreError::sled("read the dedupe index"))?;
            visit(shards::stable_hash(&[&key]));
            count += 1;
        }
        Ok(count)
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        self.check_readable()?;
        let mut recovered = Recovered::default();
        for item in self.db.scan_prefix([keys::TAG_OPEN]) {
            let (key, _) = item.map_err(StoreError::sled("read open conversations"))?;
            let (tenant, conv) = keys::decode_tenant_id(&key)
                .ok_or_else(|| corrupt(&key, "malformed open-conversation key"))?;
            let conv = ConvId::from(conv);
            let meta = self
                .conv_inner(&tenant, &conv)?
                .ok_or_else(|| corrupt(&key, "open conversation without a state record"))?;
            if meta.state == ConvState::Closed {
                // Cannot happen: the same batch writes the state and the index.
                continue;
            }
            let last_seq = self.last_seq(&tenant, &conv)?;
            let prefix = keys::cursor_prefix(&tenant, &conv);
            let mut cursors = Vec::new();
            for item in self.db.scan_prefix(&prefix) {
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
        for item in self.db.scan_prefix([keys::TAG_VISITOR]) {
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
