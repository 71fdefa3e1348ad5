//! Operations: configuration through the real binary.
//!
//! Precedence (flag over `KEFU_*` environment over file over default) as
//! `kefu check-config` prints it and as `kefu serve` applies it; the
//! errors of `check-config`, each naming its source, with exit code 2;
//! and `--cpus`.

mod common;

use std::path::Path;
use std::process::Command;

use common::{Gateway, Options};
use serde_json::json;

const SECRET: &str = "file-secret-do-not-print-0123456789abcdef";

/// Runs the `kefu` binary with `args`, no `KEFU_*` variables from the test's
/// own environment, and `env` added: (exit code, stdout, stderr).
fn kefu(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kefu"));
    cmd.args(args).env("RUST_LOG", "warn");
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KEFU_") {
            cmd.env_remove(name);
        }
    }
    for (name, value) in env {
        cmd.env(name, value);
    }
    let out = cmd.output().expect("run kefu");
    (
        out.status.code().expect("exited"),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

fn tenant(id: &str) -> String {
    format!("[[tenants]]\nid = \"{id}\"\nsecret = \"{SECRET}\"\n")
}

/// `check-config` output, parsed (it is TOML that loads to the same settings).
fn effective(stdout: &str) -> toml::Table {
    stdout
        .parse()
        .unwrap_or_else(|e| panic!("check-config printed no TOML ({e}):\n{stdout}"))
}

/// The three settings the precedence test follows, as check-config prints them.
fn three(t: &toml::Table) -> (String, String, i64) {
    (
        t["listen"].as_str().unwrap().to_owned(),
        t["drain_timeout"].as_str().unwrap().to_owned(),
        t["limits"]["max_text_bytes"].as_integer().unwrap(),
    )
}

#[test]
fn precedence_flag_then_env_then_file_then_default() {
    let dir = tempfile::tempdir().unwrap();
    let with_keys = write(
        dir.path(),
        "kefu.toml",
        &format!(
            "listen = \"127.0.0.1:7001\"\ndrain_timeout = \"41s\"\n\n[limits]\nmax_text_bytes = 1001\n\n{}",
            tenant("acme")
        ),
    );
    let tenants_only = write(dir.path(), "tenants.toml", &tenant("acme"));
    let env = [
        ("KEFU_LISTEN", "127.0.0.1:7002"),
        ("KEFU_DRAIN_TIMEOUT", "42s"),
        ("KEFU_MAX_TEXT_BYTES", "1002"),
    ];
    let flags = [
        "--listen",
        "127.0.0.1:7003",
        "--drain-timeout",
        "43s",
        "--max-text-bytes",
        "1003",
    ];
    let check = |file: &str, flags: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["check-config", file];
        args.extend_from_slice(flags);
        let (code, out, err) = kefu(&args, env);
        assert_eq!(code, 0, "check-config failed: {err}");
        three(&effective(&out))
    };
    let want = |listen: &str, drain: &str, text: i64| (listen.to_owned(), drain.to_owned(), text);

    // All three layers at once: the flag wins.
    assert_eq!(
        check(&with_keys, &flags, &env),
        want("127.0.0.1:7003", "43s", 1003)
    );
    // Without the flags: the environment.
    assert_eq!(
        check(&with_keys, &[], &env),
        want("127.0.0.1:7002", "42s", 1002)
    );
    // Without the environment either: the file.
    assert_eq!(
        check(&with_keys, &[], &[]),
        want("127.0.0.1:7001", "41s", 1001)
    );
    // Without the file's keys: the defaults.
    assert_eq!(
        check(&tenants_only, &[], &[]),
        want("127.0.0.1:8080", "30s", 4096)
    );
    // Flags over a file, with no environment; environment over defaults.
    assert_eq!(
        check(&with_keys, &flags, &[]),
        want("127.0.0.1:7003", "43s", 1003)
    );
    assert_eq!(
        check(&tenants_only, &[], &env),
        want("127.0.0.1:7002", "42s", 1002)
    );
    // An empty variable counts as unset.
    assert_eq!(
        check(&with_keys, &[], &[("KEFU_DRAIN_TIMEOUT", "")]).1,
        "41s"
    );

    // The config file itself can come from the environment.
    let (code, out, err) = kefu(&["check-config"], &[("KEFU_CONFIG", &with_keys)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(effective(&out)["listen"].as_str(), Some("127.0.0.1:7001"));
}

#[test]
fn check_config_prints_everything_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let file = write(
        dir.path(),
        "kefu.toml",
        &format!(
            "{}origins = [\"https://shop.acme.example\"]\nmax_chats = 3\n\n{}anonymous_visitors = true\n",
            tenant("acme"),
            tenant("beta")
        ),
    );
    let (code, out, err) = kefu(&["check-config", &file], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(SECRET), "a secret was printed:\n{out}");
    assert!(!err.contains(SECRET), "a secret was logged:\n{err}");
    let t = effective(&out);
    let tenants = t["tenants"].as_array().unwrap();
    assert_eq!(tenants.len(), 2);
    for tenant in tenants {
        assert_eq!(tenant["secret"].as_str(), Some("<redacted>"), "{out}");
    }
    assert_eq!(tenants[0]["id"].as_str(), Some("acme"));
    assert_eq!(tenants[0]["max_chats"].as_integer(), Some(3));
    assert_eq!(
        tenants[0]["origins"].as_array().unwrap()[0].as_str(),
        Some("https://shop.acme.example")
    );
    assert_eq!(tenants[1]["anonymous_visitors"].as_bool(), Some(true));
    // Every setting is printed, so the output is the whole effective configuration.
    for key in [
        "listen",
        "admin_listen",
        "shards",
        "data_dir",
        "agent_grace",
        "drain_timeout",
        "log_format",
    ] {
        assert!(t.contains_key(key), "{key} missing:\n{out}");
    }
    for key in [
        "max_message_bytes",
        "max_text_bytes",
        "max_handshake_bytes",
        "handshake_timeout",
        "hello_timeout",
        "outbound_limit_bytes",
        "token_leeway",
        "msg_rate_limit",
        "idle_timeout",
        "max_connections_per_shard",
        "max_connections_per_ip",
    ] {
        assert!(
            t["limits"].as_table().unwrap().contains_key(key),
            "limits.{key} missing:\n{out}"
        );
    }
    assert!(t["store"]["cache_bytes"].as_integer().unwrap() > 0);

    // What it prints is itself a config file that checks to the same output.
    let again = write(dir.path(), "again.toml", &out);
    let (code, out2, err) = kefu(&["check-config", &again], &[]);
    // The secrets are now "<redacted>", which is a (short) secret like any other.
    assert_eq!(code, 0, "{err}");
    assert_eq!(out2, out);

    // Without a config file: the demo tenant. Checking writes nothing, not
    // even the data directory or the demo secret that `serve` would make.
    let data = dir.path().join("data");
    let data_arg = data.to_str().unwrap();
    let (code, out, err) = kefu(&["check-config", "--data-dir", data_arg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!data.exists(), "check-config made {}", data.display());
    assert_eq!(
        effective(&out)["tenants"].as_array().unwrap()[0]["id"].as_str(),
        Some("demo")
    );
    // Once the secret exists (made here by `kefu token`), it is redacted too.
    let (code, _, err) = kefu(
        &[
            "token",
            "--role",
            "agent",
            "--sub",
            "a",
            "--data-dir",
            data_arg,
        ],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    let demo_secret = std::fs::read_to_string(data.join("demo.secret")).unwrap();
    let (code, out, err) = kefu(&["check-config", "--data-dir", data_arg], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains(demo_secret.trim()), "{out}");
    assert!(out.contains("secret = \"<redacted>\""), "{out}");
}

/// One bad configuration: what it is, the arguments, the environment, and
/// every text the error message must contain.
type Case<'a> = (String, Vec<String>, Vec<(&'a str, &'a str)>, Vec<String>);

#[test]
fn check_config_errors_name_their_source_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("nope.toml");
    // A case whose config file holds `content`, checked by `check-config FILE`.
    let in_file =
        |name: &str, content: &str, what: &str, wants: &dyn Fn(&str) -> Vec<String>| -> Case {
            let f = write(d, name, content);
            let wants = wants(&f);
            (what.into(), vec!["check-config".into(), f], vec![], wants)
        };
    let cases: Vec<Case> = vec![
        // (what, args, env, every text the message must contain)
        in_file(
            "unknown.toml",
            &format!("{}max_chat = 3\n", tenant("acme")),
            "unknown key",
            &|f| vec![format!("{f}:4:"), "max_chat".into()],
        ),
        in_file(
            "unknown-top.toml",
            &format!("listne = \"127.0.0.1:1\"\n{}", tenant("acme")),
            "unknown top-level key",
            &|f| vec![format!("{f}:1:"), "listne".into()],
        ),
        in_file(
            "duration.toml",
            &format!("[limits]\nidle_timeout = \"soon\"\n\n{}", tenant("acme")),
            "bad duration in the file",
            &|f| vec![format!("{f}:2:"), "soon".into(), "duration".into()],
        ),
        in_file(
            "bare.toml",
            &format!("drain_timeout = 30\n{}", tenant("acme")),
            "duration without a unit in the file",
            &|f| vec![format!("{f}:1:"), "unit".into()],
        ),
        {
            let f = write(d, "ok.toml", &tenant("acme"));
            (
                "bad duration in the environment".into(),
                vec!["check-config".into(), f],
                vec![("KEFU_AGENT_GRACE", "30")],
                vec!["KEFU_AGENT_GRACE".into(), "duration".into()],
            )
        },
        {
            let f = write(d, "ok2.toml", &tenant("acme"));
            (
                "bad duration on the command line".into(),
                vec![
                    "check-config".into(),
                    f,
                    "--hello-timeout".into(),
                    "later".into(),
                ],
                vec![],
                vec!["--hello-timeout".into(), "later".into()],
            )
        },
        in_file(
            "dup.toml",
            &format!("{}\n{}\n{}", tenant("acme"), tenant("beta"), tenant("acme")),
            "duplicate tenant",
            &|f| {
                vec![
                    f.into(),
                    "tenants[2].id".into(),
                    "\"acme\"".into(),
                    "tenants[0]".into(),
                ]
            },
        ),
        in_file(
            "origin.toml",
            &format!(
                "{}origins = [\"https://shop.acme.example/\"]\n",
                tenant("acme")
            ),
            "bad origin",
            &|f| {
                vec![
                    f.into(),
                    "tenants[0].origins".into(),
                    "https://shop.acme.example/".into(),
                ]
            },
        ),
        (
            "missing file".into(),
            vec!["check-config".into(), missing.to_str().unwrap().into()],
            vec![],
            vec![
                "cannot read config file".into(),
                missing.to_str().unwrap().into(),
            ],
        ),
        (
            "missing file from the environment".into(),
            vec!["check-config".into()],
            vec![("KEFU_CONFIG", missing.to_str().unwrap())],
            vec![missing.to_str().unwrap().into()],
        ),
        in_file("none.toml", "shards = 1\n", "no tenants", &|f| {
            vec![f.into(), "no [[tenants]]".into()]
        }),
        in_file(
            "shards.toml",
            &format!("shards = 0\n{}", tenant("acme")),
            "invalid value in the file",
            &|f| vec![format!("{f}: shards"), "at least 1".into()],
        ),
        {
            let f = write(d, "ok3.toml", &tenant("acme"));
            (
                "invalid value from the environment".into(),
                vec!["check-config".into(), f],
                vec![("KEFU_SHARDS", "0")],
                vec!["environment variable KEFU_SHARDS".into()],
            )
        },
    ];
    for (what, args, env, wants) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (code, out, err) = kefu(&args, &env);
        assert_eq!(code, 2, "{what}: exit code; stderr: {err}");
        assert_eq!(out, "", "{what}: nothing on stdout");
        for want in &wants {
            assert!(
                err.contains(want.as_str()),
                "{what}: {want:?} not in: {err}"
            );
        }
        assert!(
            err.contains("error"),
            "{what}: the message says it is an error: {err}"
        );
        assert!(!err.contains(SECRET), "{what}: secret in {err}");
    }
}

/// `kefu serve` applies the same precedence as `check-config` prints.
#[test]
fn serve_applies_env_over_file_and_flag_over_env() {
    let config = format!(
        "[limits]\nmax_text_bytes = 10\n\n{}anonymous_visitors = true\n",
        tenant("acme")
    );
    let text = |n: usize| "x".repeat(n);
    let accepts = |gw: &Gateway, n: usize| -> bool {
        let (mut c, _) = gw.anonymous("acme");
        c.send(json!({"type": "msg", "id": "m-1", "text": text(n)}));
        let (v, _) = c.recv_until(|v| v["type"] == "ack" || v["type"] == "error");
        match v["type"].as_str() {
            Some("ack") => true,
            _ => {
                assert_eq!(v["code"], "too_large", "{v}");
                false
            }
        }
    };
    // The file alone: 10 bytes.
    let gw = Gateway::start(Options::default().config(&config));
    assert!(accepts(&gw, 10) && !accepts(&gw, 11));
    drop(gw);
    // The environment over the file: 20.
    let gw = Gateway::start(
        Options::default()
            .config(&config)
            .env("KEFU_MAX_TEXT_BYTES", "20"),
    );
    assert!(accepts(&gw, 20) && !accepts(&gw, 21));
    drop(gw);
    // The flag over both: 30.
    let gw = Gateway::start(
        Options::default()
            .config(&config)
            .env("KEFU_MAX_TEXT_BYTES", "20")
            .arg("--max-text-bytes")
            .arg("30"),
    );
    assert!(accepts(&gw, 30) && !accepts(&gw, 31));
}

/// The CPU list this test process may run on, from its affinity mask.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is valid; the kernel fills at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        assert_eq!(
            libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set),
            0
        );
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

/// `Cpus_allowed_list` of each of the gateway's shard threads.
fn shard_affinity(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap().path();
        let Ok(comm) = std::fs::read_to_string(task.join("comm")) else {
            continue;
        };
        if !comm.starts_with("kefu-shard") {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_owned();
        out.push((comm.trim().to_owned(), cpus));
    }
    out.sort();
    out
}

#[test]
fn cpus_pins_the_shards_and_too_few_cpus_are_refused() {
    // `--cpus 0` alone runs (one shard, from the list's length).
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().to_str().unwrap();
    let (code, out, err) = kefu(&["check-config", "--data-dir", data, "--cpus", "0"], &[]);
    assert_eq!(code, 0, "{err}");
    let t = effective(&out);
    assert_eq!(t["shards"].as_integer(), Some(1));
    assert_eq!(t["cpus"].as_array().unwrap().len(), 1);

    // A real gateway on the last CPU this test may use: its shard thread is
    // pinned there, and it serves.
    let cpu = *allowed_cpus().last().unwrap();
    // (glommio names the executor thread and its blocking helpers alike;
    // the helpers float, the executor is pinned.)
    let gw = Gateway::start(Options::shards(1).arg("--cpus").arg(cpu.to_string()));
    let threads = shard_affinity(gw.pid());
    let pinned: Vec<_> = threads
        .iter()
        .filter(|(_, cpus)| !cpus.contains([',', '-']))
        .collect();
    assert_eq!(pinned.len(), 1, "one pinned shard thread: {threads:?}");
    assert_eq!(pinned[0].1, cpu.to_string(), "{threads:?}");
    let (mut visitor, _) = gw.anonymous("demo");
    visitor.say("m-1", None, "pinned");

    // Two shards on one CPU: refused before anything starts, naming both settings.
    for args in [
        &["serve", "--data-dir", data, "--shards", "2", "--cpus", "0"][..],
        &[
            "check-config",
            "--data-dir",
            data,
            "--shards",
            "2",
            "--cpus",
            "0",
        ],
    ] {
        let (code, out, err) = kefu(args, &[]);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(!out.contains("kefu ready"), "{out}");
        assert!(
            err.contains("--cpus") && err.contains("--shards") && err.contains("2 shards"),
            "{args:?}: {err}"
        );
    }
    // From the environment, the message names the variables.
    let (code, _, err) = kefu(
        &["check-config", "--data-dir", data],
        &[("KEFU_SHARDS", "2"), ("KEFU_CPUS", "0")],
    );
    assert_eq!(code, 2);
    assert!(
        err.contains("KEFU_CPUS") && err.contains("KEFU_SHARDS"),
        "{err}"
    );
    // A CPU the process may not use, and a malformed list.
    let (code, _, err) = kefu(&["check-config", "--data-dir", data, "--cpus", "1000"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("CPU 1000"), "{err}");
    let (code, _, err) = kefu(&["check-config", "--data-dir", data, "--cpus", "3-1"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--cpus") && err.contains("backwards"), "{err}");
}

/// The `[default: ...]` of every `serve` flag, as `--help` prints it, is the
/// value `check-config` reports when nothing sets it: the help text and the
/// defaults in the code cannot drift apart.
#[test]
fn help_defaults_are_the_real_defaults() {
    use kefu::config::{parse_duration, ByteSize};
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path(), "kefu.toml", &tenant("acme"));
    let (code, out, err) = kefu(&["check-config", &file], &[]);
    assert_eq!(code, 0, "{err}");
    let effective = effective(&out);
    let (code, help, _) = kefu(&["serve", "--help"], &[]);
    assert_eq!(code, 0);
    let help = help.split_whitespace().collect::<Vec<_>>().join(" ");

    enum Kind {
        Text,
        Bytes,
        Duration,
    }
    use Kind::*;
    let flags = [
        ("listen", "listen", Text),
        ("admin-listen", "admin_listen", Text),
        ("data-dir", "data_dir", Text),
        ("agent-grace", "agent_grace", Duration),
        ("drain-timeout", "drain_timeout", Duration),
        ("log-format", "log_format", Text),
        ("max-message-bytes", "limits.max_message_bytes", Bytes),
        ("max-text-bytes", "limits.max_text_bytes", Bytes),
        ("max-handshake-bytes", "limits.max_handshake_bytes", Bytes),
        ("handshake-timeout", "limits.handshake_timeout", Duration),
        ("hello-timeout", "limits.hello_timeout", Duration),
        ("outbound-limit", "limits.outbound_limit_bytes", Bytes),
        ("token-leeway", "limits.token_leeway", Duration),
        ("msg-rate-limit", "limits.msg_rate_limit", Text),
        ("idle-timeout", "limits.idle_timeout", Duration),
        (
            "max-connections-per-shard",
            "limits.max_connections_per_shard",
            Text,
        ),
        (
            "max-connections-per-ip",
            "limits.max_connections_per_ip",
            Text,
        ),
        ("store-cache-bytes", "store.cache_bytes", Bytes),
    ];
    for (flag, key, kind) in flags {
        let at = help
            .find(&format!("--{flag} <"))
            .unwrap_or_else(|| panic!("--{flag} not in the help"));
        let entry = &help[at..at + help[at..].find("[env:").unwrap()];
        let default = entry
            .split_once("[default: ")
            .and_then(|(_, rest)| rest.split_once(']'))
            .unwrap_or_else(|| panic!("--{flag}: no [default: ...] in {entry:?}"))
            .0;
        let mut value = &effective;
        let mut path: Vec<&str> = key.split('.').collect();
        let last = path.pop().unwrap();
        for table in path {
            value = value[table].as_table().unwrap();
        }
        let actual = &value[last];
        let actual_text = match actual {
            toml::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match kind {
            Text => assert_eq!(default, actual_text, "--{flag}"),
            Bytes => assert_eq!(
                default.parse::<ByteSize>().unwrap().0,
                actual.as_integer().unwrap() as u64,
                "--{flag}: {default} vs {actual_text}"
            ),
            Duration => assert_eq!(
                parse_duration(default).unwrap(),
                parse_duration(&actual_text).unwrap(),
                "--{flag}"
            ),
        }
    }
}
