//! Tokens: the load generator signs its own, as a retailer's backend would.
//!
//! The tenant's HS256 secret comes from `--secret`, `--secret-file` (for
//! instance the gateway's `DATA_DIR/demo.secret`, whose text is the key)
//! or the gateway's own `--config` file (`[[tenants]] id, secret`). Without
//! a secret, visitors can still come as anonymous visitors of a tenant
//! that allows them; agents always need a token.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};

/// How long signed tokens last: long enough for any soak.
pub const TOKEN_TTL_SECS: u64 = 7 * 24 * 3600;

/// `visitor` or `agent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// A shopper.
    Visitor,
    /// A support agent.
    Agent,
}

impl Role {
    /// The claim's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Visitor => "visitor",
            Role::Agent => "agent",
        }
    }
}

/// The claims of PROTOCOL.md that the load generator sets.
#[derive(Debug, Serialize)]
struct Claims<'a> {
    /// Tenant id.
    tenant: &'a str,
    /// Visitor or agent id.
    sub: &'a str,
    /// `visitor` or `agent`.
    role: &'a str,
    /// Expiry, unix seconds.
    exp: u64,
    /// Agents: concurrent conversations.
    #[serde(skip_serializing_if = "Option::is_none")]
    max_chats: Option<u32>,
}

/// Signs tokens for one tenant.
#[derive(Clone)]
pub struct Signer {
    /// The tenant id.
    tenant: String,
    /// The HS256 key.
    key: EncodingKey,
    /// `exp` of every token signed.
    exp: u64,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the key.
        f.debug_struct("Signer")
            .field("tenant", &self.tenant)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `tenant` with the secret's bytes as key.
    pub fn new(tenant: &str, secret: &[u8]) -> Self {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        Signer {
            tenant: tenant.to_string(),
            key: EncodingKey::from_secret(secret),
            exp: now + TOKEN_TTL_SECS,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// A token for `sub` in `role`; agents get `max_chats`.
    pub fn sign(&self, role: Role, sub: &str, max_chats: Option<u32>) -> String {
        let claims = Claims {
            tenant: &self.tenant,
            sub,
            role: role.as_str(),
            exp: self.exp,
            max_chats: if role == Role::Agent { max_chats } else { None },
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.key)
            .expect("HS256 signing of plain claims cannot fail")
    }
}

/// The part of the gateway's TOML config the load generator reads.
#[derive(Deserialize)]
struct ConfigFile {
    /// `[[tenants]]`; every other key is ignored.
    #[serde(default)]
    tenants: Vec<ConfigTenant>,
}

/// One `[[tenants]]` entry (only the keys needed here).
#[derive(Deserialize)]
struct ConfigTenant {
    /// Tenant id.
    id: String,
    /// HS256 secret.
    secret: String,
}

/// The secret of `tenant` in the gateway config file at `path`.
pub fn secret_from_config(path: &Path, tenant: &str) -> Result<Vec<u8>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let file: ConfigFile =
        toml::from_str(&text).map_err(|e| format!("parsing {}: {e}", path.display()))?;
    file.tenants
        .into_iter()
        .find(|t| t.id == tenant)
        .map(|t| t.secret.into_bytes())
        .ok_or_else(|| format!("{}: no [[tenants]] with id = {tenant:?}", path.display()))
}

/// The secret in a file: its text, surrounding whitespace trimmed (as the
/// gateway reads `demo.secret`).
pub fn secret_from_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let secret = bytes.trim_ascii();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(secret.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    #[test]
    fn tokens_verify_with_the_secret_and_carry_the_claims() {
        let signer = Signer::new("acme", b"s3cret");
        let token = signer.sign(Role::Agent, "alice", Some(1000));
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert_eq!(data.claims["tenant"], "acme");
        assert_eq!(data.claims["sub"], "alice");
        assert_eq!(data.claims["role"], "agent");
        assert_eq!(data.claims["max_chats"], 1000);
        let visitor = signer.sign(Role::Visitor, "v1", Some(1000));
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &visitor,
            &DecodingKey::from_secret(b"s3cret"),
            &Validation::new(Algorithm::HS256),
        )
        .unwrap();
        assert!(data.claims.get("max_chats").is_none());
    }

    #[test]
    fn secrets_from_config_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("kefu.toml");
        std::fs::write(
            &config,
            "listen = \"127.0.0.1:1\"\n[[tenants]]\nid = \"a\"\nsecret = \"sa\"\n\
             [[tenants]]\nid = \"b\"\nsecret = \"sb\"\nmax_chats = 3\n",
        )
        .unwrap();
        assert_eq!(secret_from_config(&config, "b").unwrap(), b"sb");
        assert!(secret_from_config(&config, "c").is_err());
        let file = dir.path().join("demo.secret");
        std::fs::write(&file, "abcd\n").unwrap();
        assert_eq!(secret_from_file(&file).unwrap(), b"abcd");
    }
}
