//! Tokens: who a connection is.
//!
//! A token is a JWT signed HS256 with its tenant's secret (PROTOCOL.md,
//! "Identity and tokens"). [`verify`] turns one into an [`Identity`];
//! [`anonymous_visitor`] makes an identity, and a token for it, for a
//! visitor who came without one; [`issue`] signs claims (also for
//! `kefu token`).
//!
//! No error or log here ever contains a token or a secret: errors carry
//! only a short reason and, where safe, the claim at fault.

mod b64;

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{is_valid_user_id, Role, UserId};
use crate::tenants::{Tenant, Tenants};

/// How long a token issued to an anonymous visitor lasts, unless the caller
/// chooses otherwise: 30 days, so a returning shopper finds its
/// conversation, without a token that lives forever.
pub const ANONYMOUS_TOKEN_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The claims of a kefu token, exactly the table of PROTOCOL.md. Claims
/// not listed there (`iat`, `iss`, `jti`...) are ignored when verifying.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The tenant whose secret signs the token (required).
    pub tenant: String,
    /// The visitor's or agent's id, 1..64 chars of `[A-Za-z0-9_.@:-]` (required).
    pub sub: String,
    /// `"visitor"` or `"agent"` (required).
    #[serde(with = "role_claim")]
    pub role: Role,
    /// Expiry, unix seconds (required).
    pub exp: u64,
    /// Display name, shown to the other side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Agents: the skills they serve; routing gives them only conversations
    /// needing one of these (or none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skills: Vec<String>,
    /// Agents: languages they speak, preferred for visitors with a `lang`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub langs: Vec<String>,
    /// Agents: concurrent conversations; absent means the tenant's `max_chats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_chats: Option<u32>,
    /// Visitors: the skill their conversations need.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    /// Visitors: preferred language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Visitors: served before non-VIP visitors in the queue.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub vip: bool,
}

impl Claims {
    /// Claims with the required fields and nothing else.
    pub fn new(tenant: impl Into<String>, sub: impl Into<String>, role: Role, exp: u64) -> Self {
        Claims {
            tenant: tenant.into(),
            sub: sub.into(),
            role,
            exp,
            name: None,
            skills: Vec::new(),
            langs: Vec::new(),
            max_chats: None,
            skill: None,
            lang: None,
            vip: false,
        }
    }
}

/// The `exp` of a token that lives `ttl` from now (rounded up to a second).
pub fn expiry_after(ttl: Duration) -> u64 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    now.saturating_add(ttl)
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
}

mod role_claim {
    use serde::{de, Deserialize, Deserializer, Serializer};

    use crate::ids::Role;

    pub fn serialize<S: Serializer>(role: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(role.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let s = String::deserialize(d)?;
        Role::parse(&s).ok_or_else(|| de::Error::custom("role must be visitor or agent"))
    }
}

/// Who a connection is, once its token (or its tenant's anonymous access)
/// has been accepted. Claims of the other role are dropped: a visitor's
/// identity has no `skills`, `langs` or `max_chats`, an agent's no
/// `skill`, `lang` or `vip`.
#[derive(Clone)]
pub struct Identity {
    /// The tenant: everything this connection does stays inside it.
    pub tenant: Arc<Tenant>,
    /// Visitor or agent.
    pub role: Role,
    /// The token's `sub`, or the id made up for an anonymous visitor.
    pub id: UserId,
    /// Display name, if the token has one.
    pub name: Option<Arc<str>>,
    /// Agents: skills served (routing eligibility).
    pub skills: Vec<Arc<str>>,
    /// Agents: languages spoken (routing preference).
    pub langs: Vec<Arc<str>>,
    /// Agents: the token's concurrent conversation limit; `None`: the tenant's.
    pub max_chats: Option<u32>,
    /// Visitors: skill their conversations need.
    pub skill: Option<Arc<str>>,
    /// Visitors: preferred language.
    pub lang: Option<Arc<str>>,
    /// Visitors: jump the non-VIP queue.
    pub vip: bool,
    /// The token the gateway signed for an anonymous visitor, to return in
    /// `welcome`; `None` when the client brought its own.
    pub issued_token: Option<String>,
}

impl Identity {
    fn from_claims(tenant: Arc<Tenant>, c: Claims) -> Self {
        let arcs = |v: Vec<String>| v.into_iter().map(Arc::from).collect();
        let agent = c.role == Role::Agent;
        Identity {
            tenant,
            role: c.role,
            id: UserId::new(c.sub),
            name: c.name.map(Arc::from),
            skills: if agent { arcs(c.skills) } else { Vec::new() },
            langs: if agent { arcs(c.langs) } else { Vec::new() },
            max_chats: c.max_chats.filter(|_| agent),
            skill: c.skill.filter(|_| !agent).map(Arc::from),
            lang: c.lang.filter(|_| !agent).map(Arc::from),
            vip: c.vip && !agent,
            issued_token: None,
        }
    }

    /// The agent's concurrent conversation limit: the token's, else the tenant's.
    pub fn effective_max_chats(&self) -> u32 {
        self.max_chats.unwrap_or(self.tenant.max_chats)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("tenant", &self.tenant.id)
            .field("role", &self.role)
            .field("id", &self.id)
            .field("name", &self.name)
            .field("skills", &self.skills)
            .field("langs", &self.langs)
            .field("max_chats", &self.max_chats)
            .field("skill", &self.skill)
            .field("lang", &self.lang)
            .field("vip", &self.vip)
            .field(
                "issued_token",
                &self.issued_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why a token (or an anonymous visitor) was refused. [`AuthError::reason`]
/// is a short stable label for metrics. Messages never contain the token or
/// a secret; claim values appear only when they are short and plain.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a JWT: not three base64url parts, or a header or payload that is
    /// not a JSON object.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is not `HS256` (`none`, `HS512`, `RS256`...).
    #[error("token algorithm {} is not accepted (only HS256)", .0.as_deref().unwrap_or("(unreadable)"))]
    BadAlgorithm(Option<String>),
    /// The `tenant` claim names no tenant of this gateway.
    #[error("unknown tenant {}", .0.as_deref().unwrap_or("(unreadable)"))]
    UnknownTenant(Option<String>),
    /// The signature does not match the tenant's secret.
    #[error("bad token signature")]
    BadSignature,
    /// The token's `exp` has passed (beyond the accepted leeway).
    #[error("token expired")]
    Expired,
    /// A claim is missing, of the wrong type, or out of range.
    #[error("bad token claims: {0}")]
    BadClaims(&'static str),
    /// A visitor came without a token to a tenant that requires one.
    #[error("tenant {0} does not accept visitors without a token")]
    AnonymousNotAllowed(String),
    /// The gateway could not sign a token or get random bytes.
    #[error("internal error: {0}")]
    Internal(&'static str),
}

impl AuthError {
    /// A short stable label, for a metrics label or a log field.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed",
            AuthError::BadAlgorithm(_) => "bad_algorithm",
            AuthError::UnknownTenant(_) => "unknown_tenant",
            AuthError::BadSignature => "bad_signature",
            AuthError::Expired => "expired",
            AuthError::BadClaims(_) => "bad_claims",
            AuthError::AnonymousNotAllowed(_) => "anonymous_not_allowed",
            AuthError::Internal(_) => "internal",
        }
    }
}

/// A claim value fit to appear in an error: short and of plain characters
/// (it comes from an unverified token), else `None`.
fn plain(s: &str) -> Option<String> {
    (s.len() <= 64 && !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_owned())
}

/// The leeway jsonwebtoken is given: whole seconds, rounded up so that a
/// sub-second leeway is not silently zero, and capped at a day so that
/// `now - leeway` cannot underflow whatever the caller passes.
fn leeway_secs(leeway: Duration) -> u64 {
    let secs = leeway.as_secs() + u64::from(leeway.subsec_nanos() > 0);
    secs.min(24 * 3600)
}

/// Verifies `token` and returns who it names.
///
/// In order: the header must be a JSON object whose `alg` is exactly
/// `HS256` (`none`, `HS384`, `HS512` and everything else are refused before
/// any key is touched); the unverified `tenant` claim picks the tenant,
/// which must exist; then jsonwebtoken checks the signature with that
/// tenant's secret, the algorithm pinned to HS256, `exp` required and not
/// past `now - leeway`, and `nbf` if present. Only then are the claims
/// read: `sub` must be a valid user id, `role` visitor or agent,
/// `max_chats` at least 1. An `aud` claim is not checked (kefu has no
/// audience of its own).
///
/// The signature comparison is constant-time. With the `rust_crypto`
/// backend (jsonwebtoken 10.4, `src/crypto/rust_crypto/hmac.rs`), the HS256
/// verifier recomputes the MAC with `hmac` 0.12 and calls
/// `Mac::verify_slice`, which in `digest` 0.10.7 (`src/mac.rs`) first
/// refuses a tag of the wrong length (the length is public) and then
/// compares with `subtle::ConstantTimeEq::ct_eq`, which does not stop at
/// the first differing byte.
pub fn verify(token: &str, tenants: &Tenants, leeway: Duration) -> Result<Identity, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed(
            "a token has three dot-separated parts",
        ));
    };

    let header = json_object(header, "header")?;
    match header.get("alg") {
        Some(Value::String(alg)) if alg == "HS256" => {}
        Some(Value::String(alg)) => return Err(AuthError::BadAlgorithm(plain(alg))),
        _ => return Err(AuthError::BadAlgorithm(None)),
    }

    let unverified = json_object(payload, "payload")?;
    let tenant_id = match unverified.get("tenant") {
        Some(Value::String(t)) => t,
        Some(_) => return Err(AuthError::BadClaims("`tenant` must be a string")),
        None => return Err(AuthError::BadClaims("`tenant` is missing")),
    };
    let tenant = tenants
        .get(tenant_id)
        .ok_or_else(|| AuthError::UnknownTenant(plain(tenant_id)))?
        .clone();

    let mut validation = Validation::new(Algorithm::HS256);
    validation.algorithms = vec![Algorithm::HS256];
    validation.leeway = leeway_secs(leeway);
    validation.set_required_spec_claims(&["exp"]);
    validation.validate_exp = true;
    validation.validate_nbf = true;
    validation.validate_aud = false;
    let key = DecodingKey::from_secret(&tenant.secret);
    let verified = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
        .map_err(|e| map_jwt_error(e.kind()))?
        .claims;

    let claims = claims_from(verified)?;
    Ok(Identity::from_claims(tenant, claims))
}

/// Decodes one base64url part of a token into a JSON object.
fn json_object(part: &str, what: &'static str) -> Result<Map<String, Value>, AuthError> {
    let bytes = b64::decode_url(part).ok_or(AuthError::Malformed(match what {
        "header" => "the header is not base64url",
        _ => "the payload is not base64url",
    }))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthError::Malformed(match what {
            "header" => "the header is not a JSON object",
            _ => "the payload is not a JSON object",
        })),
    }
}

fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::BadClaims("the token is not valid yet (`nbf`)"),
        ErrorKind::MissingRequiredClaim(_) => AuthError::BadClaims("`exp` is missing"),
        ErrorKind::InvalidClaimFormat(_) => {
            AuthError::BadClaims("`exp` (or `nbf`) must be a number of seconds")
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => AuthError::BadAlgorithm(None),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed("the token does not decode"),
        // Key-format and provider errors cannot happen with an HMAC secret;
        // if they ever do, the token is not accepted.
        _ => AuthError::BadSignature,
    }
}

/// Reads verified claims, with a precise reason for the common mistakes.
fn claims_from(map: Map<String, Value>) -> Result<Claims, AuthError> {
    match map.get("sub") {
        Some(Value::String(sub)) if is_valid_user_id(sub) => {}
        Some(Value::String(_)) => {
            return Err(AuthError::BadClaims(
                "`sub` must be 1 to 64 characters of A-Z a-z 0-9 _ . @ : -",
            ))
        }
        _ => return Err(AuthError::BadClaims("`sub` is missing or not a string")),
    }
    match map.get("role") {
        Some(Value::String(role)) if Role::parse(role).is_some() => {}
        _ => {
            return Err(AuthError::BadClaims(
                "`role` must be \"visitor\" or \"agent\"",
            ))
        }
    }
    let claims: Claims = serde_json::from_value(Value::Object(map)).map_err(|_| {
        AuthError::BadClaims(
            "a claim has the wrong type (name, skill, lang: strings; skills, langs: arrays of strings; max_chats: a number; vip: true or false)",
        )
    })?;
    check_claims(&claims)?;
    Ok(claims)
}

/// The checks both [`verify`] and [`issue`] make on typed claims.
fn check_claims(c: &Claims) -> Result<(), AuthError> {
    if !is_valid_user_id(&c.sub) {
        return Err(AuthError::BadClaims(
            "`sub` must be 1 to 64 characters of A-Z a-z 0-9 _ . @ : -",
        ));
    }
    if c.max_chats == Some(0) {
        return Err(AuthError::BadClaims("`max_chats` must be at least 1"));
    }
    Ok(())
}

/// Signs `claims` with `secret`, HS256. Refuses claims that [`verify`]
/// would refuse (a bad `sub`, `max_chats` 0).
pub fn issue(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    check_claims(claims)?;
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|_| AuthError::Internal("could not sign the token"))
}

/// Admits a visitor without a token, if `tenant` accepts anonymous
/// visitors: makes up the id `v-` + 16 random hex digits and signs a token
/// for it, valid for `ttl` (callers use [`ANONYMOUS_TOKEN_TTL`]), returned in
/// [`Identity::issued_token`] for the `welcome` frame.
pub fn anonymous_visitor(tenant: &Arc<Tenant>, ttl: Duration) -> Result<Identity, AuthError> {
    if !tenant.anonymous_visitors {
        return Err(AuthError::AnonymousNotAllowed(tenant.id.to_string()));
    }
    let mut random = [0u8; 8];
    getrandom::fill(&mut random).map_err(|_| AuthError::Internal("no random bytes"))?;
    let id = format!("v-{:016x}", u64::from_be_bytes(random));
    let claims = Claims::new(tenant.id.as_str(), id, Role::Visitor, expiry_after(ttl));
    let token = issue(&tenant.secret, &claims)?;
    let mut identity = Identity::from_claims(tenant.clone(), claims);
    identity.issued_token = Some(token);
    Ok(identity)
}

#[cfg(test)]
mod tests;
