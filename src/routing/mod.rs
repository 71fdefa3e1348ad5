//! TEMPORARY stand-in with the agreed API; replaced by wip-routing on merge.
#![allow(missing_docs, dead_code, unused_variables)]
use crate::ids::*;
use crate::model::*;
use std::sync::Arc;
pub struct AgentProfile { pub id: UserId, pub name: Option<Arc<str>>, pub skills: Vec<Arc<str>>, pub langs: Vec<Arc<str>>, pub max_chats: u32 }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AgentStatus { Online, Away }
#[derive(Clone, Debug)]
pub struct ConvInfo { pub conv: ConvId, pub visitor: UserId, pub skill: Option<Arc<str>>, pub lang: Option<Arc<str>>, pub vip: bool, pub queued_ms: u64 }
pub enum RouterAction {
    Assign { conv: ConvId, agent: AgentRef, conns: Vec<ConnRef>, previous: Option<UserId>, waited_ms: u64 },
    Requeue { conv: ConvId, previous: UserId },
    QueuePosition { conv: ConvId, position: u32 },
    Subscribe { conv: ConvId, agent: UserId, conn: ConnRef },
    AgentWelcome { conn: ConnRef, convs: Vec<ConvId> },
    StatusEcho { conns: Vec<ConnRef>, status: AgentStatus },
}
#[derive(Debug)]
pub enum TransferError { Forbidden, NotFound, BadRequest }
#[derive(Default, Debug, Clone)]
pub struct RouterStats { pub queue_len: usize, pub agents_online: usize, pub agents_away: usize, pub agents_in_grace: usize, pub assigned: usize }
pub struct TenantRouter;
impl TenantRouter {
    pub fn new(tenant: TenantId, grace_ms: u64, sticky_window_ms: u64) -> Self { TenantRouter }
    pub fn agent_connected(&mut self, profile: AgentProfile, conn: ConnRef, now_ms: u64) -> Vec<RouterAction> { vec![] }
    pub fn agent_disconnected(&mut self, agent: &UserId, conn: ConnRef, now_ms: u64) -> Vec<RouterAction> { vec![] }
    pub fn set_status(&mut self, agent: &UserId, status: AgentStatus, now_ms: u64) -> Vec<RouterAction> { vec![] }
    pub fn enqueue(&mut self, info: ConvInfo, now_ms: u64) -> Vec<RouterAction> { vec![] }
    pub fn conv_closed(&mut self, conv: &ConvId, now_ms: u64) -> Vec<RouterAction> { vec![] }
    pub fn assign_rejected(&mut self, conv: &ConvId, now_ms: u64) -> Vec<RouterAction> { vec![] }
    pub fn transfer(&mut self, conv: &ConvId, from: &UserId, to: Option<&UserId>, now_ms: u64) -> Result<Vec<RouterAction>, TransferError> { Ok(vec![]) }
    pub fn tick(&mut self, now_ms: u64) -> Vec<RouterAction> { vec![] }
    pub fn restore_queued(&mut self, info: ConvInfo, front: bool, excluded: Option<UserId>) {}
    pub fn restore_assigned(&mut self, info: ConvInfo, agent: AgentRef, assigned_ms: u64, now_ms: u64) {}
    pub fn restore_last_agent(&mut self, visitor: UserId, agent: UserId, assigned_ms: u64) {}
    pub fn stats(&self) -> RouterStats { RouterStats::default() }
}
