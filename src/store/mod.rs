//! TEMPORARY stand-in with the agreed API; replaced by wip-store on merge.
#![allow(missing_docs, dead_code)]
use crate::ids::*;
use crate::model::*;
use std::time::Duration;
pub enum Op {
    Entry { tenant: TenantId, conv: ConvId, entry: Entry },
    Dedupe { key: DedupeKey, hit: DedupeHit },
    Conv { tenant: TenantId, conv: ConvId, meta: ConvMeta },
    Cursor { tenant: TenantId, conv: ConvId, who: Participant, seq: u64 },
    Visitor { tenant: TenantId, visitor: UserId, meta: VisitorMeta },
}
#[derive(Default)]
pub struct CommitBatch {
    pub ops: Vec<Op>,
}
#[derive(Default, Debug, Clone)]
pub struct CommitStats {
    pub ops: usize,
    pub entries: usize,
    pub bytes: usize,
    pub apply: Duration,
    pub flush: Duration,
    pub sync: Duration,
}
#[derive(Debug, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);
pub trait Store: Send + Sync + 'static {
    fn commit(&self, batch: &CommitBatch) -> Result<CommitStats, StoreError>;
    fn lookup_dedupe(&self, keys: &[DedupeKey]) -> Result<Vec<Option<DedupeHit>>, StoreError>;
    fn read_entries(&self, tenant: &TenantId, conv: &ConvId, after: u64, limit: usize, visit: &mut dyn FnMut(EntryView<'_>)) -> Result<usize, StoreError>;
    fn read_entries_before(&self, tenant: &TenantId, conv: &ConvId, before: u64, limit: usize, visit: &mut dyn FnMut(EntryView<'_>)) -> Result<bool, StoreError>;
    fn conv(&self, tenant: &TenantId, conv: &ConvId) -> Result<Option<ConvMeta>, StoreError>;
    fn recover(&self) -> Result<Recovered, StoreError>;
}
pub struct Recovered {
    pub convs: Vec<RecoveredConv>,
    pub visitors: Vec<(TenantId, UserId, VisitorMeta)>,
}
pub struct RecoveredConv {
    pub tenant: TenantId,
    pub conv: ConvId,
    pub meta: ConvMeta,
    pub last_seq: u64,
    pub cursors: Vec<(Participant, u64)>,
}
