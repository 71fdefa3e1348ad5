//! Operations: SIGHUP reloads the tenants without dropping connections.
//!
//! The test waits for each reload through the gateway's own log (JSON
//! lines on stderr): one "tenants reloaded" per shard once every shard has
//! taken the new tenants, or the control thread's error for a file that
//! does not load.

mod common;

use std::time::Duration;

use common::wire::{claims, jwt};
use common::{metric_by_label, Client, Gateway, Options};
use jsonwebtoken::Algorithm::HS256;
use serde_json::{json, Value};

const ACME_OLD: &str = "acme-secret-before-rotation-0123456789abcdef";
const ACME_NEW: &str = "acme-secret-after-rotation-0123456789abcdef!";
const BETA: &str = "beta-secret-0123456789abcdef0123456789abcdef";
const GAMMA: &str = "gamma-secret-0123456789abcdef0123456789abcdef";

const SHARDS: usize = 2;
const WAIT: Duration = Duration::from_secs(10);

fn tenant(id: &str, secret: &str) -> String {
    format!("[[tenants]]\nid = \"{id}\"\nsecret = \"{secret}\"\nanonymous_visitors = true\n\n")
}

fn token(tenant: &str, secret: &str, sub: &str, role: &str) -> String {
    jwt(HS256, secret.as_bytes(), &claims(tenant, sub, role))
}

/// A gateway logging JSON at info, so the test can see reloads happen.
fn start(config: &str) -> Gateway {
    Gateway::start(
        Options::shards(SHARDS)
            .config(config)
            .arg("--log-format")
            .arg("json")
            .arg("--drain-timeout")
            .arg("3s")
            .env("RUST_LOG", "info"),
    )
}

fn log_line(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"))
}

/// Rewrites the config file, sends SIGHUP and waits until every shard has
/// taken the new tenants.
fn reload(gw: &Gateway, config: &str) {
    std::fs::write(gw.config_path(), config).unwrap();
    gw.signal(libc::SIGHUP);
    for _ in 0..SHARDS {
        gw.wait_for_log(WAIT, |l| {
            let v = log_line(l);
            v["fields"]["message"] == "tenants reloaded" && v["fields"]["shard"].is_u64()
        });
    }
}

/// Rewrites the config file with something that does not load, sends
/// SIGHUP and waits for the gateway to say it changed nothing.
fn reload_refused(gw: &Gateway, config: &str) -> String {
    std::fs::write(gw.config_path(), config).unwrap();
    gw.signal(libc::SIGHUP);
    let line = gw.wait_for_log(WAIT, |l| {
        log_line(l)["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("nothing changed"))
    });
    let v = log_line(&line);
    assert_eq!(v["level"], "ERROR", "{line}");
    v["fields"]["error"].as_str().unwrap_or_default().to_owned()
}

/// Says hello with `token` and returns the close code the gateway answers with.
fn refused(gw: &Gateway, hello: Value) -> u16 {
    let mut c = gw.connect();
    c.send(hello);
    c.expect_close()
}

/// Proves a connection is still open and served: a status round trip.
fn still_served(agent: &mut Client, status: &str) {
    agent.send(json!({"type": "status", "status": status}));
    let (echo, _) = agent.recv_until(|v| v["type"] == "status");
    assert_eq!(echo, json!({"type": "status", "status": status}));
}

/// `kefu_config_reloads_total`: (ok, failed).
fn reloads(gw: &Gateway) -> (f64, f64) {
    let by = metric_by_label(&gw.metrics(), "kefu_config_reloads_total", "result");
    (by["ok"], by["failed"])
}

#[test]
fn sighup_adds_rotates_and_removes_tenants_without_dropping_others() {
    let before = tenant("acme", ACME_OLD) + &tenant("beta", BETA);
    let mut gw = start(&before);

    // Connections before the reload: acme agents with the old secret (enough
    // of them that both shards hold some), beta's agent and visitor.
    let mut acme: Vec<Client> = (0..6)
        .map(|i| {
            let t = token("acme", ACME_OLD, &format!("agent-{i}"), "agent");
            gw.login(&t).0
        })
        .collect();
    let (mut acme_visitor, welcome) = gw.anonymous("acme");
    let acme_visitor_token = welcome["token"].as_str().unwrap().to_owned();
    let ack = acme_visitor.say("before", None, "hello before the reload");
    let conv = ack["conv"].as_str().unwrap().to_owned();
    let (mut beta_agent, _) = gw.login(&token("beta", BETA, "bob", "agent"));
    let (mut beta_visitor, _) = gw.anonymous("beta");

    // Reload: acme's secret rotated, beta removed, gamma added.
    let after = tenant("acme", ACME_NEW) + &tenant("gamma", GAMMA);
    reload(&gw, &after);

    // The removed tenant's connections are closed with 4401 ...
    assert_eq!(beta_agent.expect_close(), 4401);
    assert_eq!(beta_visitor.expect_close(), 4401);
    // ... and it is refused from now on.
    assert_eq!(
        refused(&gw, json!({"type": "hello", "tenant": "beta"})),
        4401
    );
    assert_eq!(
        refused(
            &gw,
            json!({"type": "hello", "token": token("beta", BETA, "bob", "agent")})
        ),
        4401
    );

    // The other tenant's connections, opened with the old secret, stay and are served.
    for agent in &mut acme {
        still_served(agent, "away");
    }
    let ack = acme_visitor.say("after", None, "hello after the reload");
    assert_eq!(
        ack["conv"],
        conv.as_str(),
        "same conversation, same connection"
    );

    // The rotated secret: new tokens signed with it are accepted, tokens
    // signed with the old one are refused for new connections.
    let (_, welcome) = gw.login(&token("acme", ACME_NEW, "carol", "agent"));
    assert_eq!(welcome["tenant"], "acme");
    assert_eq!(
        refused(
            &gw,
            json!({"type": "hello", "token": token("acme", ACME_OLD, "dave", "agent")})
        ),
        4401
    );
    // Tokens the gateway issued itself (anonymous visitors) were signed with
    // the old secret too: the visitor comes back as a new anonymous visitor.
    assert_eq!(
        refused(&gw, json!({"type": "hello", "token": acme_visitor_token})),
        4401
    );
    let (_, welcome) = gw.anonymous("acme");
    assert_eq!(welcome["tenant"], "acme");

    // The new tenant is accepted, by token and anonymously.
    let (_, welcome) = gw.login(&token("gamma", GAMMA, "erin", "agent"));
    assert_eq!(welcome["tenant"], "gamma");
    let (mut gamma_visitor, _) = gw.anonymous("gamma");
    gamma_visitor.say("g-1", None, "hello gamma");

    // The process still serves, and counted the reload.
    assert_eq!(Gateway::http_get(gw.admin, "/ready").0, 200);
    assert_eq!(reloads(&gw), (1.0, 0.0));
    let status = gw.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status}");
}

#[test]
fn sighup_with_a_broken_file_changes_nothing() {
    let config = tenant("acme", ACME_OLD);
    let gw = start(&config);
    let (mut agent, _) = gw.login(&token("acme", ACME_OLD, "alice", "agent"));
    let (mut visitor, _) = gw.anonymous("acme");
    visitor.say("m-1", None, "before");

    let broken: [(&str, String); 4] = [
        ("not TOML", "[[tenants]\nid = ".to_owned()),
        (
            "unknown key",
            format!("{}max_chat = 3\n", tenant("acme", ACME_NEW)),
        ),
        (
            "duplicate tenant",
            tenant("acme", ACME_NEW) + &tenant("acme", GAMMA),
        ),
        ("no tenants at all", "shards = 1\n".to_owned()),
    ];
    for (what, text) in &broken {
        let error = reload_refused(&gw, text);
        assert!(
            error.contains("kefu-test.toml"),
            "{what}: the error names the file: {error}"
        );
        // Nothing changed: the old secret still works for new connections,
        // the connections stay, and the gateway is up and ready.
        let (_, welcome) = gw.login(&token("acme", ACME_OLD, "bob", "agent"));
        assert_eq!(welcome["tenant"], "acme", "{what}");
        assert_eq!(
            refused(
                &gw,
                json!({"type": "hello", "token": token("acme", ACME_NEW, "bob", "agent")})
            ),
            4401,
            "{what}: the broken file's secret was not taken"
        );
        still_served(&mut agent, "away");
        still_served(&mut agent, "online");
        assert_eq!(Gateway::http_get(gw.admin, "/ready").0, 200, "{what}");
        assert_eq!(Gateway::http_get(gw.addr, "/health").0, 200, "{what}");
    }
    assert_eq!(reloads(&gw), (0.0, broken.len() as f64));
    let ack = visitor.say("m-2", None, "after");
    assert!(ack["seq"].as_u64().unwrap() >= 2, "{ack}");

    // A good file after the broken ones is taken.
    reload(&gw, &tenant("acme", ACME_NEW));
    gw.login(&token("acme", ACME_NEW, "carol", "agent"));
    still_served(&mut agent, "away");
    assert_eq!(reloads(&gw), (1.0, broken.len() as f64));
}

#[test]
fn sighup_without_a_config_file_keeps_the_demo_tenant() {
    let gw = Gateway::start(
        Options::shards(1)
            .arg("--log-format")
            .arg("json")
            .env("RUST_LOG", "info"),
    );
    let (mut visitor, _) = gw.anonymous("demo");
    gw.signal(libc::SIGHUP);
    gw.wait_for_log(WAIT, |l| l.contains("no config file to reload"));
    visitor.say("m-1", None, "still here");
    gw.anonymous("demo");
}
