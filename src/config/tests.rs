//! Loader tests. The environment is always a map passed to the loader,
//! never the process's, so tests cannot race on it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tempfile::TempDir;

use super::*;

/// `kefu serve`'s flags alone, to parse test command lines.
#[derive(Parser)]
struct Flags {
    #[command(flatten)]
    serve: ServeArgs,
}

fn flags(argv: &[&str]) -> ServeArgs {
    let argv = std::iter::once("kefu").chain(argv.iter().copied());
    Flags::try_parse_from(argv).unwrap().serve
}

/// A scratch directory: the data directory lives inside it, and so may a config file.
struct Scratch {
    dir: TempDir,
}

impl Scratch {
    fn new() -> Self {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn file(&self, toml: &str) -> PathBuf {
        let path = self.dir.path().join("kefu.toml");
        fs::write(&path, toml).unwrap();
        path
    }

    /// Loads with these flags (plus `--data-dir` inside the scratch
    /// directory unless given) and this environment.
    fn load(&self, argv: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let mut args = flags(argv);
        if args.data_dir.is_none() && !env.iter().any(|(k, _)| *k == "KEFU_DATA_DIR") {
            args.data_dir = Some(self.data());
        }
        let env: HashMap<String, OsString> = env
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        load_with_env(&args, &move |k| env.get(k).cloned())
    }

    fn load_file(&self, toml: &str) -> Result<Settings, ConfigError> {
        let path = self.file(toml);
        self.load(&["--config", path.to_str().unwrap()], &[])
    }

    fn error(&self, argv: &[&str], env: &[(&str, &str)]) -> String {
        self.load(argv, env).unwrap_err().to_string()
    }

    fn file_error(&self, toml: &str) -> String {
        self.load_file(toml).unwrap_err().to_string()
    }
}

const TENANT: &str = r#"
[[tenants]]
id = "acme"
secret = "0123456789abcdef0123456789abcdef"
"#;

fn with_tenant(toml: &str) -> String {
    format!("{toml}\n{TENANT}")
}

#[test]
fn defaults_without_any_source() {
    let s = Scratch::new();
    let settings = s.load(&[], &[]).unwrap();
    assert_eq!(
        settings.listen,
        "127.0.0.1:8080".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(
        settings.admin_listen,
        "127.0.0.1:9090".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(settings.shards, values::default_shards());
    assert_eq!(settings.cpus, None);
    assert_eq!(settings.data_dir, s.data());
    assert_eq!(settings.agent_grace, Duration::from_secs(30));
    assert_eq!(settings.log_format, LogFormat::Text);
    assert_eq!(settings.config_file, None);
    let d = Limits::default();
    let l = &settings.limits;
    assert_eq!(l.max_message_bytes, d.max_message_bytes);
    assert_eq!(l.max_text_bytes, d.max_text_bytes);
    assert_eq!(l.max_handshake_bytes, d.max_handshake_bytes);
    assert_eq!(l.handshake_timeout, d.handshake_timeout);
    assert_eq!(l.hello_timeout, d.hello_timeout);
    assert_eq!(l.outbound_limit_bytes, d.outbound_limit_bytes);
    assert_eq!(l.token_leeway, d.token_leeway);
    assert_eq!(l.msg_rate_limit, d.msg_rate_limit);
    assert_eq!(settings.store.cache_bytes, 256 << 20);

    // One tenant, demo, anonymous visitors, any origin, five chats.
    assert_eq!(settings.tenants.len(), 1);
    let demo = settings.tenants.get("demo").unwrap();
    assert!(demo.anonymous_visitors);
    assert!(demo.origins.is_empty());
    assert_eq!(demo.max_chats, 5);
    assert_eq!(demo.secret.len(), 64);
    assert_eq!(
        &demo.secret[..],
        fs::read_to_string(s.data().join(DEMO_SECRET_FILE))
            .unwrap()
            .trim()
            .as_bytes()
    );

    // A second start reads the same secret back.
    let again = s.load(&[], &[]).unwrap();
    assert_eq!(again.tenants.get("demo").unwrap().secret, demo.secret);
}

#[test]
fn every_flag_is_read() {
    let s = Scratch::new();
    let settings = s
        .load(
            &[
                "--listen=0.0.0.0:80",
                "--admin-listen=127.0.0.1:81",
                "--shards=1",
                "--agent-grace=2m",
                "--log-format=json",
                "--max-message-bytes=128KiB",
                "--max-text-bytes=8192",
                "--max-handshake-bytes=16k",
                "--handshake-timeout=3s",
                "--hello-timeout=500ms",
                "--outbound-limit=2MiB",
                "--token-leeway=0s",
                "--msg-rate-limit=0",
                "--store-cache-bytes=1GiB",
            ],
            &[],
        )
        .unwrap();
    assert_eq!(
        settings.listen,
        "0.0.0.0:80".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(
        settings.admin_listen,
        "127.0.0.1:81".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(settings.shards, 1);
    assert_eq!(settings.agent_grace, Duration::from_secs(120));
    assert_eq!(settings.log_format, LogFormat::Json);
    let l = &settings.limits;
    assert_eq!(l.max_message_bytes, 128 << 10);
    assert_eq!(l.max_text_bytes, 8192);
    assert_eq!(l.max_handshake_bytes, 16 << 10);
    assert_eq!(l.handshake_timeout, Duration::from_secs(3));
    assert_eq!(l.hello_timeout, Duration::from_millis(500));
    assert_eq!(l.outbound_limit_bytes, 2 << 20);
    assert_eq!(l.token_leeway, Duration::ZERO);
    assert_eq!(l.msg_rate_limit, 0, "0 disables the rate limit");
    assert_eq!(settings.store.cache_bytes, 1 << 30);
}

#[test]
fn every_file_key_is_read() {
    let s = Scratch::new();
    let settings = s
        .load_file(&with_tenant(
            r#"
listen = "0.0.0.0:80"
admin_listen = "127.0.0.1:81"
shards = 1
data_dir = "/tmp/kefu-elsewhere"
agent_grace = "1m"
log_format = "json"

[limits]
max_message_bytes = "128KiB"
max_text_bytes = 8192
max_handshake_bytes = 16384
handshake_timeout = "3s"
hello_timeout = "500ms"
outbound_limit_bytes = "2MiB"
token_leeway = "1s"
msg_rate_limit = 7

[store]
cache_bytes = "64MiB"
"#,
        ))
        .unwrap();
    assert_eq!(
        settings.listen,
        "0.0.0.0:80".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(
        settings.admin_listen,
        "127.0.0.1:81".parse::<std::net::SocketAddr>().unwrap()
    );
    assert_eq!(settings.shards, 1);
    // The flag the test harness passes wins over the file's data_dir.
    assert_eq!(settings.data_dir, s.data());
    assert_eq!(settings.agent_grace, Duration::from_secs(60));
    assert_eq!(settings.log_format, LogFormat::Json);
    let l = &settings.limits;
    assert_eq!(l.max_message_bytes, 128 << 10);
    assert_eq!(l.max_text_bytes, 8192);
    assert_eq!(l.max_handshake_bytes, 16384);
    assert_eq!(l.handshake_timeout, Duration::from_secs(3));
    assert_eq!(l.hello_timeout, Duration::from_millis(500));
    assert_eq!(l.outbound_limit_bytes, 2 << 20);
    assert_eq!(l.token_leeway, Duration::from_secs(1));
    assert_eq!(l.msg_rate_limit, 7);
    assert_eq!(settings.store.cache_bytes, 64 << 20);
    assert!(settings.config_file.is_some());
}

#[test]
fn data_dir_from_the_file_when_no_flag_or_env() {
    let s = Scratch::new();
    let path = s.file(&with_tenant(r#"data_dir = "/srv/kefu""#));
    let args = ServeArgs {
        config: Some(path),
        ..ServeArgs::default()
    };
    let settings = load_with_env(&args, &|_| None).unwrap();
    assert_eq!(settings.data_dir, PathBuf::from("/srv/kefu"));
}

#[test]
fn precedence_flag_over_env_over_file_over_default() {
    let s = Scratch::new();
    let file = s.file(&with_tenant(
        r#"
shards = 3
listen = "127.0.0.3:3333"
log_format = "text"
[limits]
hello_timeout = "3s"
outbound_limit_bytes = 3000
msg_rate_limit = 3
"#,
    ));
    let config = file.to_str().unwrap();
    let env = [
        ("KEFU_CONFIG", config),
        ("KEFU_SHARDS", "2"),
        ("KEFU_LISTEN", "127.0.0.2:2222"),
        ("KEFU_LOG_FORMAT", "json"),
        ("KEFU_HELLO_TIMEOUT", "2s"),
        ("KEFU_OUTBOUND_LIMIT", "2000"),
        ("KEFU_MSG_RATE_LIMIT", "2"),
    ];
    let all_flags = [
        "--shards=1",
        "--listen=127.0.0.1:1111",
        "--log-format=text",
        "--hello-timeout=1s",
        "--outbound-limit=1000",
        "--msg-rate-limit=1",
    ];

    // Flag beats environment.
    let st = s.load(&all_flags, &env).unwrap();
    assert_eq!(st.shards, 1);
    assert_eq!(st.listen.port(), 1111);
    assert_eq!(st.log_format, LogFormat::Text);
    assert_eq!(st.limits.hello_timeout, Duration::from_secs(1));
    assert_eq!(st.limits.outbound_limit_bytes, 1000);
    assert_eq!(st.limits.msg_rate_limit, 1);
    assert_eq!(st.config_file.as_deref(), Some(file.as_path()));

    // Environment beats file.
    let st = s.load(&[], &env).unwrap();
    assert_eq!(st.shards, 2);
    assert_eq!(st.listen.port(), 2222);
    assert_eq!(st.log_format, LogFormat::Json);
    assert_eq!(st.limits.hello_timeout, Duration::from_secs(2));
    assert_eq!(st.limits.outbound_limit_bytes, 2000);
    assert_eq!(st.limits.msg_rate_limit, 2);

    // File beats default.
    let st = s.load(&["--config", config], &[]).unwrap();
    assert_eq!(st.shards, 3);
    assert_eq!(st.listen.port(), 3333);
    assert_eq!(st.log_format, LogFormat::Text);
    assert_eq!(st.limits.hello_timeout, Duration::from_secs(3));
    assert_eq!(st.limits.outbound_limit_bytes, 3000);
    assert_eq!(st.limits.msg_rate_limit, 3);
    // Keys the file leaves out keep their defaults.
    assert_eq!(st.admin_listen.port(), 9090);
    assert_eq!(st.limits.max_text_bytes, 4096);

    // Mixed: each key independently.
    let st = s
        .load(
            &["--shards=1"],
            &[("KEFU_CONFIG", config), ("KEFU_LISTEN", "127.0.0.2:2222")],
        )
        .unwrap();
    assert_eq!((st.shards, st.listen.port()), (1, 2222));
    assert_eq!(st.limits.hello_timeout, Duration::from_secs(3));
}

#[test]
fn an_empty_env_var_is_unset() {
    let s = Scratch::new();
    let st = s
        .load(&[], &[("KEFU_SHARDS", ""), ("KEFU_LISTEN", "")])
        .unwrap();
    assert_eq!(st.listen.port(), 8080);
    assert_eq!(st.shards, values::default_shards());
}

#[test]
fn bad_env_values_name_the_variable() {
    let s = Scratch::new();
    let e = s.error(&[], &[("KEFU_SHARDS", "many")]);
    assert!(
        e.starts_with("environment variable KEFU_SHARDS=\"many\": "),
        "{e}"
    );
    let e = s.error(&[], &[("KEFU_HELLO_TIMEOUT", "10")]);
    assert!(
        e.contains("KEFU_HELLO_TIMEOUT") && e.contains("not a duration"),
        "{e}"
    );
    let e = s.error(&[], &[("KEFU_OUTBOUND_LIMIT", "1MB")]);
    assert!(
        e.contains("KEFU_OUTBOUND_LIMIT") && e.contains("unit"),
        "{e}"
    );
    let e = s.error(&[], &[("KEFU_LOG_FORMAT", "xml")]);
    assert!(e.contains("KEFU_LOG_FORMAT"), "{e}");
    let e = s.error(&[], &[("KEFU_CPUS", "0-")]);
    assert!(e.contains("KEFU_CPUS"), "{e}");
}

#[test]
fn bad_flag_values_are_refused_by_the_parser() {
    let argv = |a: &[&str]| Flags::try_parse_from(std::iter::once("kefu").chain(a.iter().copied()));
    for bad in [
        &["--shards", "x"][..],
        &["--agent-grace", "30"],
        &["--listen", "localhost"],
        &["--log-format", "xml"],
        &["--cpus", "3-1"],
        &["--outbound-limit", "1MB"],
        &["--msg-rate-limit", "-1"],
        &["--no-such-flag"],
    ] {
        let err = argv(bad).err().unwrap_or_else(|| panic!("{bad:?} parsed"));
        assert_eq!(err.exit_code(), 2, "{bad:?}");
    }
}

#[test]
fn durations_in_every_source() {
    let s = Scratch::new();
    let st = s
        .load(
            &["--agent-grace", "1h 30m"],
            &[
                ("KEFU_HANDSHAKE_TIMEOUT", "250ms"),
                ("KEFU_TOKEN_LEEWAY", "2m"),
            ],
        )
        .unwrap();
    assert_eq!(st.agent_grace, Duration::from_secs(5400));
    assert_eq!(st.limits.handshake_timeout, Duration::from_millis(250));
    assert_eq!(st.limits.token_leeway, Duration::from_secs(120));

    let e = s.file_error(&with_tenant("agent_grace = 30"));
    assert!(e.contains("kefu.toml:1:15") && e.contains("\"30s\""), "{e}");
    let e = s.file_error(&with_tenant("[limits]\nhello_timeout = \"soon\""));
    assert!(
        e.contains("kefu.toml:2:") && e.contains("not a duration"),
        "{e}"
    );
}

#[test]
fn unknown_keys_name_the_file_and_the_key() {
    let s = Scratch::new();
    let e = s.file_error(&with_tenant("shard = 2"));
    assert!(
        e.contains("kefu.toml:1:1") && e.contains("unknown field `shard`"),
        "{e}"
    );
    let e = s.file_error(&with_tenant("[limits]\nmax_text = 10"));
    assert!(
        e.contains("kefu.toml:2:1") && e.contains("unknown field `max_text`"),
        "{e}"
    );
    let e = s.file_error(&with_tenant("[store]\ncache = 10"));
    assert!(e.contains("unknown field `cache`"), "{e}");
    let e = s.file_error("[[tenants]]\nid = \"a\"\nsecret = \"s\"\nmax_chat = 3");
    assert!(
        e.contains("kefu.toml:4:1") && e.contains("unknown field `max_chat`"),
        "{e}"
    );
    let e = s.file_error(&with_tenant("[metrics]\nport = 1"));
    assert!(e.contains("unknown field `metrics`"), "{e}");
}

#[test]
fn file_syntax_and_type_errors_have_a_location() {
    let s = Scratch::new();
    let e = s.file_error("shards = ");
    assert!(
        e.starts_with(&format!("{}:1:", s.dir.path().join("kefu.toml").display())),
        "{e}"
    );
    let e = s.file_error(&with_tenant("shards = \"two\""));
    assert!(e.contains("kefu.toml:1:10"), "{e}");
    let e = s.file_error(&with_tenant("listen = \"nowhere\""));
    assert!(e.contains("kefu.toml:1:"), "{e}");
    let e = s.file_error(&with_tenant("cpus = [0, 0]"));
    assert!(e.contains("twice"), "{e}");
}

#[test]
fn tenants_from_the_file() {
    let s = Scratch::new();
    let st = s
        .load_file(
            r#"
[[tenants]]
id = "acme"
secret = "change-me"
anonymous_visitors = true
origins = ["https://shop.acme.example"]
max_chats = 7

[[tenants]]
id = "globex"
secret = "0123456789abcdef0123456789abcdef"
"#,
        )
        .unwrap();
    assert_eq!(st.tenants.len(), 2);
    let acme = st.tenants.get("acme").unwrap();
    assert_eq!(&acme.secret[..], b"change-me");
    assert!(acme.anonymous_visitors);
    assert_eq!(acme.origins, vec!["https://shop.acme.example".to_owned()]);
    assert_eq!(acme.max_chats, 7);
    let globex = st.tenants.get("globex").unwrap();
    assert!(
        !globex.anonymous_visitors,
        "anonymous visitors are off by default"
    );
    assert!(globex.origins.is_empty(), "any origin by default");
    assert_eq!(globex.max_chats, 5);
    assert!(
        st.tenants.get("demo").is_none(),
        "no demo tenant with a config file"
    );
    assert!(!s.data().exists(), "no demo secret made with a config file");
}

#[test]
fn file_problems() {
    let s = Scratch::new();
    let e = s.file_error("shards = 1");
    assert!(e.contains("no [[tenants]]"), "{e}");
    let missing = s.dir.path().join("nope.toml");
    let e = s
        .load(&["--config", missing.to_str().unwrap()], &[])
        .unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(
        e.to_string().contains("cannot read config file") && e.to_string().contains("nope.toml")
    );
}

/// Loads a file whose tenant is `tenant` (TOML lines) and returns the error.
fn tenant_error(s: &Scratch, tenant: &str) -> String {
    s.file_error(&format!("[[tenants]]\n{tenant}"))
}

#[test]
fn tenant_validation() {
    let s = Scratch::new();
    let secret = "secret = \"0123456789abcdef0123456789abcdef\"";

    let e = tenant_error(&s, &format!("id = \"a b\"\n{secret}"));
    assert!(
        e.contains("kefu.toml: tenants[0].id") && e.contains("\"a b\""),
        "{e}"
    );
    let e = tenant_error(&s, &format!("id = \"\"\n{secret}"));
    assert!(e.contains("tenants[0].id"), "{e}");
    let e = tenant_error(&s, &format!("id = \"{}\"\n{secret}", "a".repeat(65)));
    assert!(e.contains("tenants[0].id"), "{e}");

    let e = tenant_error(&s, "id = \"acme\"\nsecret = \"\"");
    assert!(
        e.contains("tenants[0].secret") && e.contains("must not be empty"),
        "{e}"
    );

    let e = tenant_error(&s, &format!("id = \"acme\"\n{secret}\nmax_chats = 0"));
    assert!(
        e.contains("tenants[0].max_chats") && e.contains("at least 1"),
        "{e}"
    );

    let e = tenant_error(&s, &format!("id = \"acme\"\n{secret}\nmax_chats = -1"));
    assert!(e.contains("kefu.toml:4:"), "{e}");

    let e = tenant_error(
        &s,
        &format!("id = \"acme\"\n{secret}\norigins = [\"https://*.acme.example\"]"),
    );
    assert!(
        e.contains("tenants[0].origins") && e.contains("wildcard"),
        "{e}"
    );
    let e = tenant_error(
        &s,
        &format!("id = \"acme\"\n{secret}\norigins = [\"https://acme.example/\"]"),
    );
    assert!(
        e.contains("tenants[0].origins") && e.contains("path"),
        "{e}"
    );

    let e = tenant_error(&s, "id = \"acme\"");
    assert!(e.contains("missing field `secret`"), "{e}");

    let e = s.file_error(&format!(
        "[[tenants]]\nid = \"acme\"\n{secret}\n[[tenants]]\nid = \"b\"\n{secret}\n[[tenants]]\nid = \"acme\"\n{secret}"
    ));
    assert!(
        e.contains("tenants[2].id") && e.contains("already used by tenants[0]"),
        "{e}"
    );

    // A short secret is only a warning.
    s.load_file("[[tenants]]\nid = \"acme\"\nsecret = \"short\"")
        .unwrap();
}

#[test]
fn validation_errors_name_their_source() {
    let s = Scratch::new();
    let cfg = s.file(&with_tenant("shards = 0"));
    let cfg = cfg.to_str().unwrap();

    let e = s.error(&["--shards=0"], &[]);
    assert_eq!(e, "--shards: must be at least 1");
    let e = s.error(&[], &[("KEFU_SHARDS", "0")]);
    assert_eq!(e, "environment variable KEFU_SHARDS: must be at least 1");
    let e = s.error(&["--config", cfg], &[]);
    assert_eq!(e, format!("{cfg}: shards: must be at least 1"));

    let e = s.error(&["--max-text-bytes=100000"], &[]);
    assert!(e.starts_with("--max-text-bytes: 100000 bytes is more than the largest message (65536 bytes, from limits.max_message_bytes (default))"), "{e}");
    let e = s.error(&["--max-message-bytes=1000"], &[]);
    assert!(
        e.starts_with("limits.max_text_bytes (default): 4096 bytes"),
        "{e}"
    );
    assert!(e.contains("from --max-message-bytes"), "{e}");
}

/// Regression: a text limit over what a stored entry can hold was
/// accepted, and every text above 96 KiB or so then failed to store,
/// answered `unavailable` ("retry later") forever.
#[test]
fn text_limit_is_at_most_what_a_stored_entry_holds() {
    let s = Scratch::new();
    let e = s.error(
        &["--max-message-bytes=1MiB", "--max-text-bytes=100000"],
        &[],
    );
    assert!(
        e.starts_with("--max-text-bytes: 100000 bytes is more than a stored entry can hold"),
        "{e}"
    );
    let l = s
        .load(&["--max-message-bytes=1MiB", "--max-text-bytes=64KiB"], &[])
        .unwrap()
        .limits;
    assert_eq!(l.max_text_bytes, super::validate::MAX_TEXT_BYTES_LIMIT);
}

#[test]
fn every_limit_is_checked() {
    let s = Scratch::new();
    for (flag, why) in [
        ("--max-message-bytes=0", "more than 0 bytes"),
        ("--max-text-bytes=0", "more than 0 bytes"),
        ("--max-handshake-bytes=0", "more than 0 bytes"),
        ("--outbound-limit=0", "more than 0 bytes"),
        ("--handshake-timeout=0s", "longer than 0s"),
        ("--hello-timeout=0ms", "longer than 0s"),
        ("--token-leeway=2h", "leeway is for clock skew"),
        ("--store-cache-bytes=0", "more than 0 bytes"),
    ] {
        let e = s.error(&[flag], &[]);
        let name = flag.split('=').next().unwrap();
        assert!(
            e.starts_with(&format!("{name}: ")) && e.contains(why),
            "{flag}: {e}"
        );
    }
    // Zero where zero means something is fine.
    s.load(
        &[
            "--msg-rate-limit=0",
            "--token-leeway=0s",
            "--agent-grace=0s",
        ],
        &[],
    )
    .unwrap();
}

#[test]
fn cpus_and_shards() {
    let s = Scratch::new();
    let allowed = values::allowed_cpus().unwrap_or_else(|| vec![0]);
    let first = allowed[0].to_string();

    // --cpus alone sets the shard count.
    let st = s.load(&["--cpus", &first], &[]).unwrap();
    assert_eq!((st.shards, st.cpus.clone()), (1, Some(vec![allowed[0]])));

    let e = s.error(&["--cpus", &first, "--shards=2"], &[]);
    assert!(
        e.starts_with("--cpus: lists 1 CPU(s) but --shards asks for 2 shards"),
        "{e}"
    );

    let e = s.error(&["--cpus=1023", "--shards=1"], &[]);
    if values::allowed_cpus().is_some_and(|a| !a.contains(&1023)) {
        assert!(e.contains("not one this process may run on"), "{e}");
    }
    // More shards than CPUs without --cpus is allowed (with a warning).
    s.load(&["--shards", &(allowed.len() + 1).to_string()], &[])
        .unwrap();
}

#[test]
fn listeners_must_differ() {
    let s = Scratch::new();
    let e = s.error(
        &["--listen=0.0.0.0:7000", "--admin-listen=127.0.0.1:7000"],
        &[],
    );
    assert!(e.starts_with("--admin-listen: 127.0.0.1:7000 is the main listener's port too (--listen is 0.0.0.0:7000)"), "{e}");
    s.load(&["--listen=127.0.0.1:0", "--admin-listen=127.0.0.1:0"], &[])
        .unwrap();
}

#[test]
fn settings_validate_on_its_own() {
    let s = Scratch::new();
    let mut st = s.load(&[], &[]).unwrap();
    st.validate().unwrap();
    st.shards = 0;
    assert_eq!(
        st.validate().unwrap_err().to_string(),
        "shards: must be at least 1"
    );
    st.shards = 1;
    st.cpus = Some(vec![]);
    assert_eq!(
        st.validate().unwrap_err().to_string(),
        "cpus: the CPU list is empty"
    );
    let cpu = values::allowed_cpus().map_or(0, |c| c[0]);
    st.cpus = Some(vec![cpu, cpu]);
    assert_eq!(
        st.validate().unwrap_err().to_string(),
        format!("cpus: CPU {cpu} is listed twice")
    );
    st.cpus = Some(vec![cpu]);
    st.validate().unwrap();
    st.tenants = Arc::new(Tenants::new([Tenant {
        id: TenantId::new("acme"),
        secret: Arc::from(&b""[..]),
        anonymous_visitors: false,
        origins: vec![],
        max_chats: 5,
    }]));
    let e = st.validate().unwrap_err().to_string();
    assert!(e.starts_with("tenants.acme.secret: "), "{e}");
}

#[test]
fn demo_secret_errors_are_data_dir_errors() {
    let s = Scratch::new();
    let blocker = s.dir.path().join("file");
    fs::write(&blocker, "").unwrap();
    let e = s
        .load(&["--data-dir", blocker.join("sub").to_str().unwrap()], &[])
        .unwrap_err();
    assert_eq!(e.exit_code(), 1);
    assert!(e.to_string().starts_with("data directory "), "{e}");
}

#[test]
fn log_format_is_peeked_before_loading() {
    let s = Scratch::new();
    let cfg = s.file(&with_tenant("log_format = \"json\""));
    let none = |_: &str| None;
    let args = ServeArgs {
        config: Some(cfg.clone()),
        ..ServeArgs::default()
    };
    assert_eq!(peek_log_format(&args, &none), LogFormat::Json);
    let env = |k: &str| (k == "KEFU_LOG_FORMAT").then(|| OsString::from("text"));
    assert_eq!(peek_log_format(&args, &env), LogFormat::Text);
    let env = |k: &str| (k == "KEFU_CONFIG").then(|| cfg.clone().into_os_string());
    assert_eq!(
        peek_log_format(&ServeArgs::default(), &env),
        LogFormat::Json
    );
    assert_eq!(
        peek_log_format(&ServeArgs::default(), &none),
        LogFormat::Text
    );
}
