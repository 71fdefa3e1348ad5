//! The tenant directory: who may connect, with which secret.
//!
//! A [`Tenants`] is an immutable snapshot shared read-only by every shard
//! (`Arc`, no lock). A reload builds a new snapshot and hands it to each shard.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::ids::TenantId;

/// One tenant (a retailer).
#[derive(Clone)]
pub struct Tenant {
    /// The tenant's id, the `tenant` claim of its tokens.
    pub id: TenantId,
    /// The HS256 key of this tenant's tokens.
    pub secret: Arc<[u8]>,
    /// Accept visitors without a token (the gateway then issues one).
    pub anonymous_visitors: bool,
    /// Allowed `Origin` headers, exact match. Empty: any origin.
    pub origins: Vec<String>,
    /// Default concurrent conversations per agent, when the token has no `max_chats`.
    pub max_chats: u32,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("anonymous_visitors", &self.anonymous_visitors)
            .field("origins", &self.origins)
            .field("max_chats", &self.max_chats)
            .finish()
    }
}

impl Tenant {
    /// May a browser page from `origin` connect as this tenant? Connections
    /// without an `Origin` header are not browsers and are not checked.
    pub fn allows_origin(&self, origin: Option<&str>) -> bool {
        match origin {
            None => true,
            Some(_) if self.origins.is_empty() => true,
            Some(origin) => self.origins.iter().any(|allowed| allowed == origin),
        }
    }
}

/// Every tenant, by id.
#[derive(Clone, Debug, Default)]
pub struct Tenants {
    by_id: HashMap<TenantId, Arc<Tenant>>,
}

impl Tenants {
    /// Builds the directory. Ids must be unique (validated with the config).
    pub fn new(tenants: impl IntoIterator<Item = Tenant>) -> Self {
        Tenants {
            by_id: tenants
                .into_iter()
                .map(|t| (t.id.clone(), Arc::new(t)))
                .collect(),
        }
    }

    /// The tenant with this id.
    pub fn get(&self, id: &str) -> Option<&Arc<Tenant>> {
        self.by_id.get(id)
    }

    /// Every tenant, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_id.values()
    }

    /// How many tenants there are.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Is the directory empty?
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
