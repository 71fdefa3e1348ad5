//! Checks the settings as a whole before anything starts.

use std::net::SocketAddr;
use std::time::Duration;

use super::values::allowed_cpus;
use super::{ConfigError, Origins, Settings};
use crate::ids::is_valid_user_id;
use crate::tenants::Tenant;

/// A secret shorter than this draws a warning: HS256 keys should carry at
/// least as many random bytes as the hash's output (RFC 7518, 3.2).
pub const MIN_SECRET_BYTES: usize = 32;

/// The largest chat text accepted as a limit. A stored entry (key and
/// encoded value) holds at most [`crate::store::MAX_RECORD_BYTES`] (96 KiB);
/// this leaves a third of it for the entry's ids, names and framing. A
/// larger text would pass the limit and then fail to store, answered with
/// `unavailable` ("retry later") forever.
pub const MAX_TEXT_BYTES_LIMIT: usize = 64 * 1024;

/// The largest token leeway accepted: clock skew is seconds, an hour is
/// already generous, and more would quietly extend every token's life.
pub const MAX_TOKEN_LEEWAY: Duration = Duration::from_secs(3600);

impl Settings {
    /// Checks that the settings make sense together: at least one shard,
    /// enough allowed CPUs for them, distinct listeners, positive limits,
    /// a chat text that fits in a message, and well-formed tenants. Warns
    /// (through `tracing`) about tenant secrets shorter than 32 bytes.
    ///
    /// [`super::load`] runs this itself; this is for settings built
    /// another way, so its errors name keys but not sources.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check(self, &Origins::default(), true)
    }
}

/// Checks `s`, naming each bad value's source from `origins`. Tenants are
/// checked only if `tenants` (the loader checks them from the file, where
/// it can name each entry's position).
pub(crate) fn check(s: &Settings, origins: &Origins, tenants: bool) -> Result<(), ConfigError> {
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        key: key.to_owned(),
        origin: origins.get(key).cloned(),
        reason,
    };

    if s.shards == 0 {
        return Err(invalid("shards", "must be at least 1".into()));
    }
    if s.drain_timeout.is_zero() {
        return Err(invalid("drain_timeout", "must be more than 0".into()));
    }
    let allowed = allowed_cpus();
    match &s.cpus {
        Some(cpus) => {
            if cpus.is_empty() {
                return Err(invalid("cpus", "the CPU list is empty".into()));
            }
            if cpus.len() < s.shards {
                return Err(invalid(
                    "cpus",
                    format!(
                        "lists {} CPU(s) but {} asks for {} shards; list at least one CPU per shard",
                        cpus.len(),
                        origins.describe("shards"),
                        s.shards
                    ),
                ));
            }
            for (i, cpu) in cpus.iter().enumerate() {
                if cpus[..i].contains(cpu) {
                    return Err(invalid("cpus", format!("CPU {cpu} is listed twice")));
                }
            }
            if let Some(allowed) = &allowed {
                if let Some(cpu) = cpus.iter().find(|cpu| !allowed.contains(cpu)) {
                    return Err(invalid(
                        "cpus",
                        format!(
                            "CPU {cpu} is not one this process may run on (allowed: {})",
                            cpu_ranges(allowed)
                        ),
                    ));
                }
            }
        }
        None => {
            if let Some(allowed) = &allowed {
                if s.shards > allowed.len() {
                    tracing::warn!(
                        shards = s.shards,
                        cpus = allowed.len(),
                        "more shards than CPUs this process may run on; shards will share cores"
                    );
                }
            }
        }
    }

    if listeners_clash(s.listen, s.admin_listen) {
        return Err(invalid(
            "admin_listen",
            format!(
                "{} is the main listener's port too ({} is {}); metrics must have a port of their own",
                s.admin_listen,
                origins.describe("listen"),
                s.listen
            ),
        ));
    }

    let l = &s.limits;
    let positive = [
        ("limits.max_message_bytes", l.max_message_bytes),
        ("limits.max_text_bytes", l.max_text_bytes),
        ("limits.max_handshake_bytes", l.max_handshake_bytes),
        ("limits.outbound_limit_bytes", l.outbound_limit_bytes),
    ];
    for (key, value) in positive {
        if value == 0 {
            return Err(invalid(key, "must be more than 0 bytes".into()));
        }
    }
    for (key, value) in [
        ("limits.handshake_timeout", l.handshake_timeout),
        ("limits.hello_timeout", l.hello_timeout),
        ("limits.idle_timeout", l.idle_timeout),
    ] {
        if value.is_zero() {
            return Err(invalid(key, "must be longer than 0s".into()));
        }
    }
    if l.token_leeway > MAX_TOKEN_LEEWAY {
        return Err(invalid(
            "limits.token_leeway",
            format!(
                "{} is more than the allowed {}; leeway is for clock skew",
                humantime::format_duration(l.token_leeway),
                humantime::format_duration(MAX_TOKEN_LEEWAY)
            ),
        ));
    }
    if l.max_text_bytes > l.max_message_bytes {
        return Err(invalid(
            "limits.max_text_bytes",
            format!(
                "{} bytes is more than the largest message ({} bytes, from {}); a chat text must fit in one message",
                l.max_text_bytes,
                l.max_message_bytes,
                origins.describe("limits.max_message_bytes")
            ),
        ));
    }
    if l.max_text_bytes > MAX_TEXT_BYTES_LIMIT {
        return Err(invalid(
            "limits.max_text_bytes",
            format!(
                "{} bytes is more than a stored entry can hold ({MAX_TEXT_BYTES_LIMIT} bytes of text at most)",
                l.max_text_bytes
            ),
        ));
    }
    if s.store.cache_bytes == 0 {
        return Err(invalid(
            "store.cache_bytes",
            "must be more than 0 bytes".into(),
        ));
    }

    if tenants {
        let mut all: Vec<_> = s.tenants.iter().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        for tenant in all {
            check_tenant(tenant).map_err(|(field, reason)| {
                invalid(&format!("tenants.{}.{field}", tenant.id), reason)
            })?;
        }
    }
    Ok(())
}

/// Would the two listeners take the same port? Port 0 (any free port) never
/// clashes; the unspecified address (`0.0.0.0`, `::`) clashes with every
/// address on its port.
fn listeners_clash(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Checks one tenant; on failure returns the field at fault and why.
/// Warns when the secret is shorter than [`MIN_SECRET_BYTES`].
pub(crate) fn check_tenant(t: &Tenant) -> Result<(), (&'static str, String)> {
    let id = t.id.as_str();
    if !is_valid_user_id(id) {
        return Err((
            "id",
            format!("tenant id {id:?} must be 1 to 64 characters of A-Z a-z 0-9 _ . @ : -"),
        ));
    }
    if t.secret.is_empty() {
        return Err((
            "secret",
            format!("tenant {id:?}: the secret must not be empty"),
        ));
    }
    if t.max_chats == 0 {
        return Err(("max_chats", format!("tenant {id:?}: must be at least 1")));
    }
    for origin in &t.origins {
        check_origin(origin)
            .map_err(|why| ("origins", format!("tenant {id:?}: {origin:?} {why}")))?;
    }
    if t.secret.len() < MIN_SECRET_BYTES {
        tracing::warn!(
            tenant = id,
            bytes = t.secret.len(),
            "the tenant's secret is shorter than {MIN_SECRET_BYTES} bytes; use {MIN_SECRET_BYTES} or more random bytes"
        );
    }
    Ok(())
}

/// Is `origin` written the way a browser sends its `Origin` header
/// (`scheme://host[:port]`, lowercase, no path, no default port)? The
/// gateway compares origins exactly, so anything else could never match.
pub(crate) fn check_origin(origin: &str) -> Result<(), String> {
    if origin.contains('*') {
        return Err("has a wildcard; list every allowed origin instead".into());
    }
    let Some((scheme, rest)) = origin.split_once("://") else {
        return Err("must look like scheme://host[:port], e.g. https://shop.example".into());
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_lowercase())
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !scheme_ok {
        return Err(format!(
            "has a bad scheme {scheme:?} (lowercase letters, digits, + - .)"
        ));
    }
    if rest.contains(['/', '?', '#']) {
        return Err(
            "has a path: an origin is only scheme://host[:port], without a trailing /".into(),
        );
    }
    if rest.contains('@') {
        return Err("has a user name: an origin is only scheme://host[:port]".into());
    }
    if !rest.is_ascii() {
        return Err(
            "has a non-ASCII host: write it in punycode (xn--...), as browsers send it".into(),
        );
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let Some((addr, after)) = v6.split_once(']') else {
            return Err("has an unclosed [ in its host".into());
        };
        if addr.is_empty()
            || !addr
                .chars()
                .all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.')
        {
            return Err("has a bad IPv6 host".into());
        }
        match after {
            "" => (addr, None),
            _ => match after.strip_prefix(':') {
                Some(port) => (addr, Some(port)),
                None => return Err("has text after its IPv6 host".into()),
            },
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.is_empty() {
        return Err("has no host".into());
    }
    if host.chars().any(|c| c.is_ascii_uppercase()) {
        return Err("must be lowercase, as browsers send it".into());
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-.:".contains(c))
    {
        return Err("has characters a host name cannot have".into());
    }
    if let Some(port) = port {
        let number = port
            .parse::<u16>()
            .ok()
            .filter(|&p| p != 0 && port.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| format!("has a bad port {port:?}"))?;
        if (scheme, number) == ("http", 80) || (scheme, number) == ("https", 443) {
            return Err(format!(
                "names the default port {number}, which browsers leave out: write {scheme}://{host}"
            ));
        }
    }
    Ok(())
}

/// `0-3,6` for a sorted list of CPUs.
fn cpu_ranges(cpus: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cpus.len() {
        let start = cpus[i];
        let mut end = start;
        while i + 1 < cpus.len() && cpus[i + 1] == end + 1 {
            i += 1;
            end = cpus[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_checked() {
        for good in [
            "https://shop.acme.example",
            "http://localhost:3000",
            "https://[::1]:8443",
            "http://127.0.0.1",
            "capacitor://localhost",
            "https://xn--bcher-kva.example",
        ] {
            assert_eq!(check_origin(good), Ok(()), "{good}");
        }
        for (bad, why) in [
            ("https://*.acme.example", "wildcard"),
            ("*", "wildcard"),
            ("shop.acme.example", "scheme://host"),
            ("https://shop.acme.example/", "path"),
            ("https://shop.acme.example/chat", "path"),
            ("https://Shop.Acme.Example", "lowercase"),
            ("HTTPS://shop.example", "scheme"),
            ("https://", "no host"),
            ("https://shop.example:0", "port"),
            ("https://shop.example:99999", "port"),
            ("https://shop.example:+80", "port"),
            ("https://shop.example:443", "default port"),
            ("http://shop.example:80", "default port"),
            ("https://user@shop.example", "user name"),
            ("https://bücher.example", "punycode"),
            ("https://[::1", "unclosed"),
            ("https://[::1]x", "after"),
            ("https://shop example", "characters"),
        ] {
            let err = check_origin(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn cpu_ranges_are_compact() {
        assert_eq!(cpu_ranges(&[0, 1, 2, 3, 6, 8, 9]), "0-3,6,8-9");
        assert_eq!(cpu_ranges(&[5]), "5");
    }

    #[test]
    fn listener_clashes() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(listeners_clash(a("127.0.0.1:80"), a("127.0.0.1:80")));
        assert!(listeners_clash(a("0.0.0.0:80"), a("127.0.0.1:80")));
        assert!(!listeners_clash(a("127.0.0.1:80"), a("127.0.0.2:80")));
        assert!(!listeners_clash(a("127.0.0.1:0"), a("127.0.0.1:0")));
        assert!(!listeners_clash(a("127.0.0.1:80"), a("127.0.0.1:81")));
    }
}
