//! Identifiers shared by every layer: tenants, users, conversations, connections.
//!
//! Ids that cross shards are reference counted (`Arc<str>`) so that moving a
//! message between cores never copies the string. A conversation id carries the
//! 64-bit hash that places it, so any shard can find a conversation's owner
//! from the id alone, whatever the shard count was when it was created.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

macro_rules! arc_str_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Wraps a string as this id. Validation, where there is any, is the caller's.
            pub fn new(s: impl Into<Arc<str>>) -> Self {
                Self(s.into())
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.into())
            }
        }
    };
}

arc_str_id!(
    /// A tenant (a retailer): the unit of isolation. Nothing crosses tenants.
    TenantId
);
arc_str_id!(
    /// A visitor's or an agent's id within its tenant (the token's `sub`).
    UserId
);
arc_str_id!(
    /// A conversation id, `c-<16 hex placement hash>-<8 hex random>`.
    ConvId
);

impl ConvId {
    /// Makes the id of a new conversation placed by `placement` (the hash of
    /// its tenant and visitor), with a random suffix that keeps ids unique
    /// across that visitor's conversations and across restarts.
    pub fn generate(placement: u64) -> Self {
        let mut suffix = [0u8; 4];
        getrandom::fill(&mut suffix).expect("the OS random source failed");
        Self::new(format!(
            "c-{placement:016x}-{:08x}",
            u32::from_be_bytes(suffix)
        ))
    }

    /// The placement hash written into the id, or `None` for a string that
    /// is not a conversation id (which then answers `not_found`).
    pub fn placement(&self) -> Option<u64> {
        let s = self.as_str();
        let rest = s.strip_prefix("c-")?;
        let (hash, suffix) = rest.split_once('-')?;
        if hash.len() != 16 || suffix.is_empty() || suffix.len() > 16 {
            return None;
        }
        if !suffix.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(hash, 16).ok()
    }
}

/// The two kinds of client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A shopper, through the chat widget.
    Visitor,
    /// A support agent, through the console.
    Agent,
}

impl Role {
    /// The role as the protocol writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Agent => "agent",
        }
    }

    /// Parses the protocol's spelling.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "visitor" => Some(Role::Visitor),
            "agent" => Some(Role::Agent),
            _ => None,
        }
    }
}

/// One participant of a conversation: a role and an id, within a tenant.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Participant {
    /// Visitor or agent.
    pub role: Role,
    /// The user's id (the token's `sub`).
    pub id: UserId,
}

/// A connection anywhere in the process: the shard that holds its socket and
/// the id that shard gave it. Connection ids are never reused within a
/// process, so a stale reference finds nothing rather than a stranger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnRef {
    /// The shard that owns the socket.
    pub shard: usize,
    /// The connection's id on that shard.
    pub id: u64,
}

/// Is `s` a valid user id: 1..=64 characters of `[A-Za-z0-9_.@:-]`?
pub fn is_valid_user_id(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b':' | b'-'))
}

/// Is `s` a valid client message id: 1..=64 characters (any but control characters)?
pub fn is_valid_client_id(s: &str) -> bool {
    let n = s.chars().count();
    (1..=64).contains(&n) && !s.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_id_round_trips_its_placement() {
        let id = ConvId::generate(0xdead_beef_0123_4567);
        assert_eq!(id.placement(), Some(0xdead_beef_0123_4567));
        assert!(id.as_str().starts_with("c-deadbeef01234567-"));
    }

    #[test]
    fn malformed_conv_ids_have_no_placement() {
        for bad in [
            "",
            "c-",
            "c-12-34",
            "x-0123456789abcdef-01",
            "c-0123456789abcdef-",
            "c-0123456789abcdeg-00",
            "c-0123456789abcdef-zz",
        ] {
            assert_eq!(ConvId::from(bad).placement(), None, "{bad}");
        }
    }

    #[test]
    fn user_ids_follow_the_protocol_alphabet() {
        assert!(is_valid_user_id("alice"));
        assert!(is_valid_user_id("v-123@shop.example:1_2"));
        assert!(!is_valid_user_id(""));
        assert!(!is_valid_user_id("has space"));
        assert!(!is_valid_user_id(&"a".repeat(65)));
    }
}
