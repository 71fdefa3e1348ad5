//! The key layout of the one sled tree that holds everything.
//!
//! Every key starts with a one-byte tag naming its record kind, followed by
//! string components each terminated by a NUL byte (`0x00`), and for log
//! entries an 8-byte big-endian sequence number:
//!
//! | tag | key                                              | value                       |
//! |-----|--------------------------------------------------|-----------------------------|
//! | `M` | `M` `schema`                                     | schema version, u32 BE      |
//! | `E` | `E` tenant `0` conv `0` seq (u64 BE)             | [`EntryRecord`] (rkyv)      |
//! | `D` | `D` tenant `0` role `0` sender `0` client id     | [`DedupeRecord`] (rkyv)     |
//! | `C` | `C` tenant `0` conv                              | [`ConvRecord`] (rkyv)       |
//! | `O` | `O` tenant `0` conv                              | empty: the conv is not closed |
//! | `R` | `R` tenant `0` conv `0` role `0` user            | receipt cursor, u64 BE      |
//! | `V` | `V` tenant `0` visitor                           | [`VisitorRecord`] (rkyv)    |
//!
//! `role` is one byte: `v` (visitor) or `a` (agent).
//!
//! Why this shape:
//! - **Seq order for free.** Big-endian sequence numbers sort bytewise in
//!   numeric order, so a range scan over one conversation's `E` prefix yields
//!   its entries in `seq` order, and the last key of that prefix (one reverse
//!   step) is its last seq: recovery never reads entries.
//! - **Prefixes never overlap.** Each string component is terminated by NUL,
//!   and no component may contain NUL: tenant, user and conversation ids
//!   are restricted alphabets and client ids exclude control characters, and
//!   the store re-checks it ([`component_ok`]) because it is what isolation
//!   rests on. So `E a 0 c-1 0` is never a prefix of a key of tenant `ab` or
//!   of conversation `c-10`. Writes with a NUL in an id are refused; reads of
//!   such an id find nothing (nothing with it can have been written).
//! - **Open conversations are indexed.** `O` holds one empty value per
//!   conversation that is not closed, written in the same batch as its `C`
//!   record, so a restart reads the open conversations only, however many
//!   closed ones history holds.
//! - **Everything in one tree** so that one `apply_batch` covers entries,
//!   dedupe records, conversation state and cursors atomically (see the
//!   parent module).
//!
//! [`EntryRecord`]: super::records::EntryRecord
//! [`DedupeRecord`]: super::records::DedupeRecord
//! [`ConvRecord`]: super::records::ConvRecord
//! [`VisitorRecord`]: super::records::VisitorRecord

use crate::ids::{ConvId, Participant, Role, TenantId, UserId};

/// Store metadata (schema version).
pub(crate) const TAG_META: u8 = b'M';
/// A log entry.
pub(crate) const TAG_ENTRY: u8 = b'E';
/// A dedupe record: `(sender, client id)` to `(conv, seq)`.
pub(crate) const TAG_DEDUPE: u8 = b'D';
/// A conversation's state.
pub(crate) const TAG_CONV: u8 = b'C';
/// The index of conversations that are not closed.
pub(crate) const TAG_OPEN: u8 = b'O';
/// A receipt cursor.
pub(crate) const TAG_CURSOR: u8 = b'R';
/// A visitor's record (sticky agent).
pub(crate) const TAG_VISITOR: u8 = b'V';

/// The component terminator.
const SEP: u8 = 0;

/// The key of the schema version.
pub(crate) const SCHEMA_KEY: &[u8] = b"Mschema";
const _: () = assert!(SCHEMA_KEY[0] == TAG_META);

/// Can `s` be a key component? (It must not contain the terminator.)
pub(crate) fn component_ok(s: &str) -> bool {
    !s.as_bytes().contains(&SEP)
}

fn role_byte(role: Role) -> u8 {
    match role {
        Role::Visitor => b'v',
        Role::Agent => b'a',
    }
}

fn role_from_byte(b: u8) -> Option<Role> {
    match b {
        b'v' => Some(Role::Visitor),
        b'a' => Some(Role::Agent),
        _ => None,
    }
}

/// `tag tenant 0 conv 0`, with room for `extra` more bytes.
fn tenant_conv_prefix(tag: u8, tenant: &TenantId, conv: &ConvId, extra: usize) -> Vec<u8> {
    let (t, c) = (tenant.as_str().as_bytes(), conv.as_str().as_bytes());
    let mut key = Vec::with_capacity(1 + t.len() + 1 + c.len() + 1 + extra);
    key.push(tag);
    key.extend_from_slice(t);
    key.push(SEP);
    key.extend_from_slice(c);
    key.push(SEP);
    key
}

/// `E tenant 0 conv 0`: the prefix of every entry of one conversation.
pub(crate) fn entry_prefix(tenant: &TenantId, conv: &ConvId) -> Vec<u8> {
    tenant_conv_prefix(TAG_ENTRY, tenant, conv, 8)
}

/// Appends `seq` to an [`entry_prefix`].
pub(crate) fn entry_key_in(prefix: &[u8], seq: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + 8);
    key.extend_from_slice(prefix);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// `E tenant 0 conv 0 seq`.
pub(crate) fn entry_key(tenant: &TenantId, conv: &ConvId, seq: u64) -> Vec<u8> {
    let mut key = entry_prefix(tenant, conv);
    key.extend_from_slice(&seq.to_be_bytes());
    key
}

/// The seq at the end of an entry key of `prefix_len` prefix bytes.
pub(crate) fn entry_seq(key: &[u8], prefix_len: usize) -> Option<u64> {
    let tail: [u8; 8] = key.get(prefix_len..)?.try_into().ok()?;
    Some(u64::from_be_bytes(tail))
}

/// `D tenant 0 role 0 sender 0 client_id`.
pub(crate) fn dedupe_key(tenant: &TenantId, sender: &Participant, client_id: &str) -> Vec<u8> {
    let (t, s, c) = (
        tenant.as_str().as_bytes(),
        sender.id.as_str().as_bytes(),
        client_id.as_bytes(),
    );
    let mut key = Vec::with_capacity(1 + t.len() + 3 + s.len() + 1 + c.len());
    key.push(TAG_DEDUPE);
    key.extend_from_slice(t);
    key.push(SEP);
    key.push(role_byte(sender.role));
    key.push(SEP);
    key.extend_from_slice(s);
    key.push(SEP);
    key.extend_from_slice(c);
    key
}

/// `tag tenant 0 id`: the `C`, `O` and `V` keys.
fn tenant_id_key(tag: u8, tenant: &TenantId, id: &str) -> Vec<u8> {
    let (t, i) = (tenant.as_str().as_bytes(), id.as_bytes());
    let mut key = Vec::with_capacity(1 + t.len() + 1 + i.len());
    key.push(tag);
    key.extend_from_slice(t);
    key.push(SEP);
    key.extend_from_slice(i);
    key
}

/// `C tenant 0 conv`.
pub(crate) fn conv_key(tenant: &TenantId, conv: &ConvId) -> Vec<u8> {
    tenant_id_key(TAG_CONV, tenant, conv.as_str())
}

/// `O tenant 0 conv`.
pub(crate) fn open_key(tenant: &TenantId, conv: &ConvId) -> Vec<u8> {
    tenant_id_key(TAG_OPEN, tenant, conv.as_str())
}

/// `V tenant 0 visitor`.
pub(crate) fn visitor_key(tenant: &TenantId, visitor: &UserId) -> Vec<u8> {
    tenant_id_key(TAG_VISITOR, tenant, visitor.as_str())
}

/// `R tenant 0 conv 0`: the prefix of every cursor of one conversation.
pub(crate) fn cursor_prefix(tenant: &TenantId, conv: &ConvId) -> Vec<u8> {
    tenant_conv_prefix(TAG_CURSOR, tenant, conv, 66)
}

/// `R tenant 0 conv 0 role 0 user`.
pub(crate) fn cursor_key(tenant: &TenantId, conv: &ConvId, who: &Participant) -> Vec<u8> {
    let mut key = cursor_prefix(tenant, conv);
    key.push(role_byte(who.role));
    key.push(SEP);
    key.extend_from_slice(who.id.as_str().as_bytes());
    key
}

/// Splits the `tenant 0 id` after a `C`, `O` or `V` tag.
pub(crate) fn decode_tenant_id(key: &[u8]) -> Option<(TenantId, &str)> {
    let rest = key.get(1..)?;
    let at = rest.iter().position(|&b| b == SEP)?;
    let tenant = std::str::from_utf8(&rest[..at]).ok()?;
    let id = std::str::from_utf8(&rest[at + 1..]).ok()?;
    if !component_ok(id) {
        return None;
    }
    Some((TenantId::from(tenant), id))
}

/// The participant at the end of a cursor key of `prefix_len` prefix bytes.
pub(crate) fn decode_cursor_who(key: &[u8], prefix_len: usize) -> Option<Participant> {
    let rest = key.get(prefix_len..)?;
    let (&role, rest) = rest.split_first()?;
    let (&sep, user) = rest.split_first()?;
    if sep != SEP {
        return None;
    }
    let user = std::str::from_utf8(user).ok()?;
    if !component_ok(user) {
        return None;
    }
    Some(Participant {
        role: role_from_byte(role)?,
        id: UserId::from(user),
    })
}

/// A key as lowercase hex, for error messages.
pub(crate) fn hex(key: &[u8]) -> String {
    use std::fmt::Write;
    key.iter()
        .fold(String::with_capacity(key.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> TenantId {
        TenantId::from(s)
    }

    fn c(s: &str) -> ConvId {
        ConvId::from(s)
    }

    #[test]
    fn entry_keys_sort_by_seq() {
        let a = entry_key(&t("acme"), &c("c-1"), 255);
        let b = entry_key(&t("acme"), &c("c-1"), 256);
        let z = entry_key(&t("acme"), &c("c-1"), u64::MAX);
        assert!(a < b && b < z);
        let prefix = entry_prefix(&t("acme"), &c("c-1"));
        assert_eq!(entry_seq(&b, prefix.len()), Some(256));
        assert_eq!(entry_key_in(&prefix, 256), b);
    }

    #[test]
    fn prefixes_of_neighbouring_ids_do_not_overlap() {
        let c1 = entry_prefix(&t("a"), &c("c-1"));
        let c10 = entry_key(&t("a"), &c("c-10"), 1);
        assert!(!c10.starts_with(&c1));
        let a = entry_prefix(&t("a"), &c("c-1"));
        let ab = entry_key(&t("ab"), &c("c-1"), 1);
        assert!(!ab.starts_with(&a));
        let r = cursor_prefix(&t("a"), &c("c-1"));
        let r10 = cursor_key(
            &t("a"),
            &c("c-10"),
            &Participant {
                role: Role::Agent,
                id: UserId::from("x"),
            },
        );
        assert!(!r10.starts_with(&r));
    }

    #[test]
    fn keys_decode() {
        let key = open_key(&t("acme"), &c("c-9"));
        let (tenant, conv) = decode_tenant_id(&key).unwrap();
        assert_eq!((tenant.as_str(), conv), ("acme", "c-9"));
        let who = Participant {
            role: Role::Visitor,
            id: UserId::from("v-1"),
        };
        let key = cursor_key(&t("acme"), &c("c-9"), &who);
        let prefix = cursor_prefix(&t("acme"), &c("c-9"));
        assert_eq!(decode_cursor_who(&key, prefix.len()), Some(who));
        assert_eq!(hex(b"E\0\xff"), "4500ff");
    }

    #[test]
    fn dedupe_keys_separate_roles_and_senders() {
        let v = Participant {
            role: Role::Visitor,
            id: UserId::from("u"),
        };
        let a = Participant {
            role: Role::Agent,
            id: UserId::from("u"),
        };
        assert_ne!(dedupe_key(&t("x"), &v, "m"), dedupe_key(&t("x"), &a, "m"));
        assert_ne!(dedupe_key(&t("x"), &v, "m"), dedupe_key(&t("xu"), &v, "m"));
        assert!(!component_ok("a\0b"));
        assert!(component_ok("c-1"));
    }
}
