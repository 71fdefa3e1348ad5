//! TEMPORARY stand-in with the agreed API; replaced by wip-config on merge.
#![allow(missing_docs, dead_code, unused_variables)]
use crate::ids::*;
use crate::tenants::*;
use std::sync::Arc;
use std::time::Duration;
pub struct Identity {
    pub tenant: Arc<Tenant>, pub role: Role, pub id: UserId, pub name: Option<Arc<str>>,
    pub skills: Vec<Arc<str>>, pub langs: Vec<Arc<str>>, pub max_chats: Option<u32>,
    pub skill: Option<Arc<str>>, pub lang: Option<Arc<str>>, pub vip: bool, pub issued_token: Option<String>,
}
#[derive(Debug, thiserror::Error)]
#[error("auth")]
pub struct AuthError;
impl AuthError { pub fn reason(&self) -> &'static str { "malformed" } }
pub fn verify(token: &str, tenants: &Tenants, leeway: Duration) -> Result<Identity, AuthError> { Err(AuthError) }
pub fn anonymous_visitor(tenant: &Arc<Tenant>, ttl: Duration) -> Result<Identity, AuthError> { Err(AuthError) }
