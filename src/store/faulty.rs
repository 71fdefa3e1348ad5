//! [`FaultyStore`]: a [`Store`] wrapper that fails on demand, so that tests
//! (and a hidden command-line flag of the gateway) can exercise what the
//! gateway does when the disk fails: `unavailable` errors, seqs reused, no
//! ack for anything not stored.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::{CommitBatch, CommitStats, Recovered, Store, StoreError};
use crate::ids::{ConvId, TenantId};
use crate::model::{ConvMeta, DedupeHit, DedupeKey, EntryView};

/// Which calls a [`FaultyStore`] fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FaultMode {
    /// Pass every call through.
    #[default]
    Healthy,
    /// Fail every `commit` (writing nothing); reads pass through.
    FailCommits,
    /// Fail every call.
    FailAll,
}

impl FaultMode {
    fn from_u8(v: u8) -> FaultMode {
        match v {
            1 => FaultMode::FailCommits,
            2 => FaultMode::FailAll,
            _ => FaultMode::Healthy,
        }
    }

    fn as_u8(self) -> u8 {
        match self {
            FaultMode::Healthy => 0,
            FaultMode::FailCommits => 1,
            FaultMode::FailAll => 2,
        }
    }
}

/// The shared switch a test flips to inject faults; clones share one mode.
#[derive(Clone, Debug, Default)]
pub struct FaultSwitch(Arc<AtomicU8>);

impl FaultSwitch {
    /// A switch in `mode`.
    pub fn new(mode: FaultMode) -> Self {
        FaultSwitch(Arc::new(AtomicU8::new(mode.as_u8())))
    }

    /// Sets the mode; it applies to every call that starts afterwards.
    pub fn set(&self, mode: FaultMode) {
        self.0.store(mode.as_u8(), Ordering::SeqCst);
    }

    /// The current mode.
    pub fn get(&self) -> FaultMode {
        FaultMode::from_u8(self.0.load(Ordering::SeqCst))
    }
}

/// Wraps a store and fails its calls while its [`FaultSwitch`] says so. A
/// failed call does not reach the inner store: a failed commit writes
/// nothing, as a disk failure caught before the write would.
pub struct FaultyStore<S: Store> {
    /// The store calls go to when healthy.
    inner: S,
    /// The mode, shared with whoever injects the faults.
    switch: FaultSwitch,
}

impl<S: Store> FaultyStore<S> {
    /// Wraps `inner`, failing calls as `switch` says.
    pub fn new(inner: S, switch: FaultSwitch) -> Self {
        FaultyStore { inner, switch }
    }

    /// The switch (clone it to flip it from elsewhere).
    pub fn switch(&self) -> &FaultSwitch {
        &self.switch
    }

    /// The wrapped store, to look behind the faults.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn check(&self, op: &'static str, is_commit: bool) -> Result<(), StoreError> {
        match self.switch.get() {
            FaultMode::Healthy => Ok(()),
            FaultMode::FailCommits if !is_commit => Ok(()),
            FaultMode::FailCommits | FaultMode::FailAll => Err(StoreError::Injected { op }),
        }
    }
}

impl<S: Store> Store for FaultyStore<S> {
    fn commit(&self, batch: &CommitBatch) -> Result<CommitStats, StoreError> {
        self.check("commit", true)?;
        self.inner.commit(batch)
    }

    fn is_writable(&self) -> bool {
        self.switch.get() == FaultMode::Healthy && self.inner.is_writable()
    }

    fn dedupe_fingerprints(&self, visit: &mut dyn FnMut(u64)) -> Result<u64, StoreError> {
        self.check("dedupe_fingerprints", false)?;
        self.inner.dedupe_fingerprints(visit)
    }

    fn lookup_dedupe(&self, keys: &[DedupeKey]) -> Result<Vec<Option<DedupeHit>>, StoreError> {
        self.check("lookup_dedupe", false)?;
        self.inner.lookup_dedupe(keys)
    }

    fn read_entries(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        after: u64,
        limit: usize,
        visit: &mut dyn FnMut(EntryView<'_>),
    ) -> Result<usize, StoreError> {
        self.check("read_entries", false)?;
        self.inner.read_entries(tenant, conv, after, limit, visit)
    }

    fn read_entries_before(
        &self,
        tenant: &TenantId,
        conv: &ConvId,
        before: u64,
        limit: usize,
        visit: &mut dyn FnMut(EntryView<'_>),
    ) -> Result<bool, StoreError> {
        self.check("read_entries_before", false)?;
        self.inner
            .read_entries_before(tenant, conv, before, limit, visit)
    }

    fn conv(&self, tenant: &TenantId, conv: &ConvId) -> Result<Option<ConvMeta>, StoreError> {
        self.check("conv", false)?;
        self.inner.conv(tenant, conv)
    }

    fn recover(&self) -> Result<Recovered, StoreError> {
        self.check("recover", false)?;
        self.inner.recover()
    }
}
