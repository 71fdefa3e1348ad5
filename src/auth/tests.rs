use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::b64::encode_url;
use super::*;
use crate::ids::TenantId;

const ACME_SECRET: &str = "acme-secret-0123456789abcdef-0123456789";
const GLOBEX_SECRET: &str = "globex-secret-0123456789abcdef-01234567";
const LEEWAY: Duration = Duration::from_secs(5);

fn tenants() -> Tenants {
    Tenants::new([
        Tenant {
            id: TenantId::new("acme"),
            secret: Arc::from(ACME_SECRET.as_bytes()),
            anonymous_visitors: false,
            origins: vec![],
            max_chats: 4,
        },
        Tenant {
            id: TenantId::new("globex"),
            secret: Arc::from(GLOBEX_SECRET.as_bytes()),
            anonymous_visitors: true,
            origins: vec![],
            max_chats: 5,
        },
    ])
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Any JSON claims, signed with `alg` and `secret`.
fn sign(alg: Algorithm, secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn agent_claims() -> Value {
    json!({"tenant": "acme", "sub": "alice", "role": "agent", "exp": now() + 3600})
}

fn visitor_claims() -> Value {
    json!({"tenant": "acme", "sub": "v-123", "role": "visitor", "exp": now() + 3600})
}

/// `claims` with `key` set to `value` (or removed, for `Value::Null`).
fn with(mut claims: Value, key: &str, value: Value) -> Value {
    let map = claims.as_object_mut().unwrap();
    if value.is_null() {
        map.remove(key);
    } else {
        map.insert(key.to_owned(), value);
    }
    claims
}

fn acme(claims: &Value) -> String {
    sign(Algorithm::HS256, ACME_SECRET, claims)
}

/// Verifies a token that must be refused, checking that the error says
/// nothing of the token or the secrets.
fn reject(token: &str) -> AuthError {
    let err = verify(token, &tenants(), LEEWAY).expect_err("token was accepted");
    let text = format!("{err} {err:?}");
    for secret in [ACME_SECRET, GLOBEX_SECRET] {
        assert!(!text.contains(secret), "{text}");
    }
    if token.len() > 8 {
        assert!(!text.contains(token), "{text}");
        for part in token.split('.').filter(|p| p.len() > 8) {
            assert!(!text.contains(part), "{text}");
        }
    }
    err
}

/// A token with this raw header and payload JSON and this signature text.
fn crafted(header: &str, payload: &Value, signature: &str) -> String {
    format!(
        "{}.{}.{signature}",
        encode_url(header.as_bytes()),
        encode_url(payload.to_string().as_bytes())
    )
}

#[test]
fn a_valid_agent_token() {
    let claims = json!({
        "tenant": "acme", "sub": "alice@acme:1", "role": "agent", "exp": now() + 60,
        "name": "Alice", "skills": ["billing", "vip"], "langs": ["en", "zh"], "max_chats": 3,
        "skill": "ignored", "lang": "ignored", "vip": true,
        "iat": now(), "iss": "acme-backend", "aud": "kefu", "jti": "x"
    });
    let id = verify(&acme(&claims), &tenants(), LEEWAY).unwrap();
    assert_eq!(id.tenant.id.as_str(), "acme");
    assert_eq!(id.role, Role::Agent);
    assert_eq!(id.id.as_str(), "alice@acme:1");
    assert_eq!(id.name.as_deref(), Some("Alice"));
    assert_eq!(id.skills, vec![Arc::from("billing"), Arc::from("vip")]);
    assert_eq!(id.langs, vec![Arc::from("en"), Arc::from("zh")]);
    assert_eq!(id.max_chats, Some(3));
    assert_eq!(id.effective_max_chats(), 3);
    // Visitor claims on an agent are dropped.
    assert_eq!(
        (id.skill.clone(), id.lang.clone(), id.vip),
        (None, None, false)
    );
    assert_eq!(id.issued_token, None);

    let plain = verify(&acme(&agent_claims()), &tenants(), LEEWAY).unwrap();
    assert_eq!(plain.max_chats, None);
    assert_eq!(plain.effective_max_chats(), 4, "the tenant's max_chats");
    assert!(plain.name.is_none() && plain.skills.is_empty() && plain.langs.is_empty());
}

#[test]
fn a_valid_visitor_token() {
    let claims = json!({
        "tenant": "globex", "sub": "v-123", "role": "visitor", "exp": now() + 60,
        "name": "Ann", "skill": "billing", "lang": "zh", "vip": true,
        "skills": ["ignored"], "langs": ["ignored"], "max_chats": 9
    });
    let id = verify(
        &sign(Algorithm::HS256, GLOBEX_SECRET, &claims),
        &tenants(),
        LEEWAY,
    )
    .unwrap();
    assert_eq!(id.tenant.id.as_str(), "globex");
    assert_eq!(id.role, Role::Visitor);
    assert_eq!(id.id.as_str(), "v-123");
    assert_eq!(id.name.as_deref(), Some("Ann"));
    assert_eq!(id.skill.as_deref(), Some("billing"));
    assert_eq!(id.lang.as_deref(), Some("zh"));
    assert!(id.vip);
    // Agent claims on a visitor are dropped.
    assert!(id.skills.is_empty() && id.langs.is_empty() && id.max_chats.is_none());

    let plain = verify(&acme(&visitor_claims()), &tenants(), LEEWAY).unwrap();
    assert!(!plain.vip && plain.skill.is_none() && plain.lang.is_none());
}

#[test]
fn alg_none_is_refused() {
    for header in [
        r#"{"alg":"none","typ":"JWT"}"#,
        r#"{"alg":"None"}"#,
        r#"{"alg":"NONE"}"#,
    ] {
        let token = crafted(header, &agent_claims(), "");
        let err = reject(&token);
        assert_eq!(err.reason(), "bad_algorithm", "{header}");
        // With a signature that would be right for HS256 too.
        let real = acme(&agent_claims());
        let sig = real.rsplit('.').next().unwrap();
        assert_eq!(
            reject(&crafted(header, &agent_claims(), sig)).reason(),
            "bad_algorithm"
        );
    }
    let err = reject(&crafted(r#"{"alg":"none"}"#, &agent_claims(), ""));
    assert_eq!(err, AuthError::BadAlgorithm(Some("none".into())));
    assert_eq!(
        err.to_string(),
        "token algorithm none is not accepted (only HS256)"
    );
}

#[test]
fn other_hmac_algorithms_are_refused_even_with_the_right_secret() {
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let err = reject(&sign(alg, ACME_SECRET, &agent_claims()));
        assert_eq!(err.reason(), "bad_algorithm", "{alg:?}");
    }
    let err = reject(&sign(Algorithm::HS512, ACME_SECRET, &agent_claims()));
    assert_eq!(err, AuthError::BadAlgorithm(Some("HS512".into())));
}

#[test]
fn odd_alg_headers_are_refused() {
    let claims = agent_claims();
    for header in [
        r#"{"alg":"hs256"}"#,
        r#"{"alg":"HS256 "}"#,
        r#"{"alg":"RS256"}"#,
        r#"{"alg":"ES256"}"#,
        r#"{"alg":256}"#,
        r#"{"alg":["HS256"]}"#,
        r#"{"typ":"JWT"}"#,
    ] {
        assert_eq!(
            reject(&crafted(header, &claims, "c2ln")).reason(),
            "bad_algorithm",
            "{header}"
        );
    }
}

#[test]
fn a_relabelled_hs512_signature_fails() {
    // An HS512 token whose header is rewritten to claim HS256.
    let real = sign(Algorithm::HS512, ACME_SECRET, &agent_claims());
    let sig = real.rsplit('.').next().unwrap();
    let token = crafted(r#"{"alg":"HS256","typ":"JWT"}"#, &agent_claims(), sig);
    assert_eq!(reject(&token), AuthError::BadSignature);
}

#[test]
fn expiry_and_leeway() {
    let at = |exp: u64| acme(&with(agent_claims(), "exp", json!(exp)));
    assert_eq!(reject(&at(now() - 100)), AuthError::Expired);
    assert_eq!(reject(&at(now() - 100)).reason(), "expired");
    // Three seconds late is within a five-second leeway...
    verify(&at(now() - 3), &tenants(), LEEWAY).unwrap();
    // ...but not within none.
    let err = verify(&at(now() - 3), &tenants(), Duration::ZERO).unwrap_err();
    assert_eq!(err, AuthError::Expired);
    // A huge leeway does not overflow (it is capped).
    verify(&at(now() - 3), &tenants(), Duration::from_secs(u64::MAX)).unwrap();
}

#[test]
fn exp_is_required_and_numeric() {
    let err = reject(&acme(&with(agent_claims(), "exp", Value::Null)));
    assert_eq!(err, AuthError::BadClaims("`exp` is missing"));
    for bad in [json!("tomorrow"), json!(-5), json!(null)] {
        let claims = with(agent_claims(), "exp", Value::Null);
        let mut claims = claims.as_object().unwrap().clone();
        claims.insert("exp".into(), bad.clone());
        assert_eq!(
            reject(&acme(&Value::Object(claims))).reason(),
            "bad_claims",
            "{bad}"
        );
    }
}

#[test]
fn not_before_is_honoured() {
    let token = acme(&with(agent_claims(), "nbf", json!(now() + 600)));
    assert_eq!(reject(&token).reason(), "bad_claims");
    verify(
        &acme(&with(agent_claims(), "nbf", json!(now() - 1))),
        &tenants(),
        LEEWAY,
    )
    .unwrap();
}

#[test]
fn another_tenants_secret_fails() {
    // Claims acme, signed with globex's secret.
    let token = sign(Algorithm::HS256, GLOBEX_SECRET, &agent_claims());
    assert_eq!(reject(&token), AuthError::BadSignature);
    assert_eq!(reject(&token).reason(), "bad_signature");
}

#[test]
fn a_tampered_payload_fails() {
    let token = acme(&agent_claims());
    let parts: Vec<&str> = token.split('.').collect();
    let forged = with(agent_claims(), "sub", json!("mallory"));
    let token = format!(
        "{}.{}.{}",
        parts[0],
        encode_url(forged.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(reject(&token), AuthError::BadSignature);
    // And a mangled signature.
    let token = acme(&agent_claims());
    let (body, sig) = token.rsplit_once('.').unwrap();
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    assert_eq!(
        reject(&format!("{body}.{flipped}{}", &sig[1..])),
        AuthError::BadSignature
    );
    assert_eq!(
        reject(&format!("{body}.{}", &sig[..20])),
        AuthError::BadSignature
    );
}

#[test]
fn tenants_must_be_known() {
    let err = reject(&sign(
        Algorithm::HS256,
        ACME_SECRET,
        &with(agent_claims(), "tenant", json!("initech")),
    ));
    assert_eq!(err, AuthError::UnknownTenant(Some("initech".into())));
    assert_eq!(err.reason(), "unknown_tenant");
    // An unprintable tenant claim is not echoed.
    let odd = "x\u{1b}[31m";
    let err = reject(&acme(&with(agent_claims(), "tenant", json!(odd))));
    assert_eq!(err, AuthError::UnknownTenant(None));
    assert!(!err.to_string().contains('\u{1b}'));

    assert_eq!(
        reject(&acme(&with(agent_claims(), "tenant", Value::Null))).reason(),
        "bad_claims"
    );
    assert_eq!(
        reject(&acme(&with(agent_claims(), "tenant", json!(7)))).reason(),
        "bad_claims"
    );
}

#[test]
fn sub_must_be_a_valid_user_id() {
    for bad in [
        json!(""),
        json!("has space"),
        json!("a".repeat(65)),
        json!("ü"),
        json!(12),
        Value::Null,
    ] {
        let err = reject(&acme(&with(agent_claims(), "sub", bad.clone())));
        assert_eq!(err.reason(), "bad_claims", "{bad}");
    }
    verify(
        &acme(&with(agent_claims(), "sub", json!("a".repeat(64)))),
        &tenants(),
        LEEWAY,
    )
    .unwrap();
}

#[test]
fn role_must_be_visitor_or_agent() {
    for bad in [
        json!("admin"),
        json!("Agent"),
        json!(""),
        json!(1),
        Value::Null,
    ] {
        let err = reject(&acme(&with(agent_claims(), "role", bad.clone())));
        assert_eq!(
            err,
            AuthError::BadClaims("`role` must be \"visitor\" or \"agent\""),
            "{bad}"
        );
    }
}

#[test]
fn optional_claims_are_typed_and_in_range() {
    for (key, bad) in [
        ("max_chats", json!(0)),
        ("max_chats", json!(-1)),
        ("max_chats", json!("5")),
        ("skills", json!("billing")),
        ("skills", json!([1])),
        ("name", json!(5)),
        ("vip", json!("yes")),
    ] {
        let err = reject(&acme(&with(agent_claims(), key, bad.clone())));
        assert_eq!(err.reason(), "bad_claims", "{key}={bad}");
    }
}

#[test]
fn malformed_tokens() {
    let good = acme(&agent_claims());
    let (header, rest) = good.split_once('.').unwrap();
    for bad in [
        String::new(),
        "abc".into(),
        "a.b".into(),
        format!("{good}.x"),
        header.to_string(),
        format!("!!.{rest}"),
        format!("{}.{rest}", encode_url(b"not json")),
        format!("{}.{rest}", encode_url(b"[1,2]")),
        format!("{header}.{}.sig", encode_url(b"\"a string\"")),
        format!("{header}.e30=.sig"),
    ] {
        let err = verify(&bad, &tenants(), LEEWAY).unwrap_err();
        assert_eq!(err.reason(), "malformed", "{bad:?}: {err}");
    }
    // A signature that is not base64url.
    let (body, _) = good.rsplit_once('.').unwrap();
    assert_eq!(reject(&format!("{body}.!!!!")).reason(), "malformed");
}

#[test]
fn anonymous_visitors_round_trip() {
    let tenants = tenants();
    let globex = tenants.get("globex").unwrap();
    let id = anonymous_visitor(globex, ANONYMOUS_TOKEN_TTL).unwrap();
    assert_eq!(id.role, Role::Visitor);
    assert_eq!(id.tenant.id.as_str(), "globex");
    let s = id.id.as_str();
    assert!(s.starts_with("v-") && s.len() == 18, "{s}");
    assert!(s[2..]
        .bytes()
        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
    assert!(crate::ids::is_valid_user_id(s));

    let token = id.issued_token.clone().expect("a token is issued");
    let back = verify(&token, &tenants, Duration::ZERO).unwrap();
    assert_eq!(back.id, id.id);
    assert_eq!(back.role, Role::Visitor);
    assert_eq!(back.tenant.id, id.tenant.id);
    assert_eq!(
        back.issued_token, None,
        "a presented token is not re-issued"
    );

    // It lasts the ttl asked for.
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(&super::b64::decode_url(payload).unwrap()).unwrap();
    let exp = claims["exp"].as_u64().unwrap();
    let expected = now() + ANONYMOUS_TOKEN_TTL.as_secs();
    assert!(exp.abs_diff(expected) <= 2, "{exp} vs {expected}");
    assert_eq!(claims["tenant"], "globex");
    assert_eq!(claims["role"], "visitor");

    // Two visitors get two ids.
    let other = anonymous_visitor(globex, ANONYMOUS_TOKEN_TTL).unwrap();
    assert_ne!(other.id, id.id);

    // The token never shows in Debug output.
    let debug = format!("{id:?}");
    assert!(
        debug.contains("<redacted>") && !debug.contains(&token),
        "{debug}"
    );
}

#[test]
fn anonymous_visitors_need_the_tenants_consent() {
    let tenants = tenants();
    let err = anonymous_visitor(tenants.get("acme").unwrap(), ANONYMOUS_TOKEN_TTL).unwrap_err();
    assert_eq!(err, AuthError::AnonymousNotAllowed("acme".into()));
    assert_eq!(err.reason(), "anonymous_not_allowed");
}

#[test]
fn issue_round_trips_every_claim() {
    let mut claims = Claims::new(
        "acme",
        "bob",
        Role::Agent,
        expiry_after(Duration::from_secs(60)),
    );
    claims.name = Some("Bob".into());
    claims.skills = vec!["billing".into()];
    claims.langs = vec!["en".into()];
    claims.max_chats = Some(2);
    let token = issue(ACME_SECRET.as_bytes(), &claims).unwrap();
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(&super::b64::decode_url(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "HS256");
    let id = verify(&token, &tenants(), LEEWAY).unwrap();
    assert_eq!(id.id.as_str(), "bob");
    assert_eq!(id.name.as_deref(), Some("Bob"));
    assert_eq!(id.skills, vec![Arc::from("billing")]);
    assert_eq!(id.max_chats, Some(2));

    // The typed claims survive a JSON round trip, absent fields omitted.
    let visitor = Claims::new("acme", "v-1", Role::Visitor, 10);
    let json = serde_json::to_value(&visitor).unwrap();
    assert_eq!(
        json,
        json!({"tenant": "acme", "sub": "v-1", "role": "visitor", "exp": 10})
    );
    assert_eq!(serde_json::from_value::<Claims>(json).unwrap(), visitor);
}

#[test]
fn issue_refuses_what_verify_would() {
    let bad_sub = Claims::new(
        "acme",
        "has space",
        Role::Agent,
        expiry_after(Duration::from_secs(60)),
    );
    assert_eq!(issue(b"k", &bad_sub).unwrap_err().reason(), "bad_claims");
    let mut zero = Claims::new(
        "acme",
        "bob",
        Role::Agent,
        expiry_after(Duration::from_secs(60)),
    );
    zero.max_chats = Some(0);
    assert_eq!(issue(b"k", &zero).unwrap_err().reason(), "bad_claims");
}

#[test]
fn reasons_are_distinct_labels() {
    let all = [
        AuthError::Malformed("x"),
        AuthError::BadAlgorithm(None),
        AuthError::UnknownTenant(None),
        AuthError::BadSignature,
        AuthError::Expired,
        AuthError::BadClaims("x"),
        AuthError::AnonymousNotAllowed("t".into()),
        AuthError::Internal("x"),
    ];
    let labels: Vec<&str> = all.iter().map(AuthError::reason).collect();
    assert_eq!(
        labels,
        [
            "malformed",
            "bad_algorithm",
            "unknown_tenant",
            "bad_signature",
            "expired",
            "bad_claims",
            "anonymous_not_allowed",
            "internal"
        ]
    );
}

#[test]
fn leeway_rounds_up_and_is_capped() {
    assert_eq!(leeway_secs(Duration::ZERO), 0);
    assert_eq!(leeway_secs(Duration::from_millis(1)), 1);
    assert_eq!(leeway_secs(Duration::from_secs(5)), 5);
    assert_eq!(leeway_secs(Duration::from_secs(u64::MAX)), 86400);
}
