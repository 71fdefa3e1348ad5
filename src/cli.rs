//! The command line: `kefu serve` (bare `kefu` is `kefu serve`) and
//! `kefu token`.
//!
//! [`run`] parses argv, starts logging (text or JSON on stderr, level from
//! `RUST_LOG`, else `info`), loads the settings and hands them to the
//! server. Errors are one line on stderr; the exit code is 2 for a bad
//! command line or configuration, 1 for anything else that failed.

use std::error::Error;
use std::ffi::OsString;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use crate::auth::{self, AuthError, Claims};
use crate::config::{self, ConfigError, EnvLookup, LogFormat, ServeArgs, Settings, ENV_FLAGS};
use crate::ids::{is_valid_user_id, Role};

/// The whole command line.
#[derive(Parser, Debug)]
#[command(
    name = "kefu",
    version,
    about = "Self-hosted customer-service chat gateway",
    after_help = "Without a command, kefu runs `kefu serve` with its defaults."
)]
pub struct Cli {
    /// What to do; `None` (bare `kefu`) is `serve` with no flags.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the gateway (the default).
    Serve(ServeArgs),
    /// Print a signed token for a tenant's agent or visitor.
    Token(TokenArgs),
    /// Check the configuration (flags, `KEFU_*` environment, file) and print
    /// the effective settings as TOML, secrets redacted. Exits 2 if invalid.
    /// Writes nothing (not even the demo tenant's secret).
    CheckConfig(CheckConfigArgs),
}

/// Arguments of `kefu check-config`: the file, and any `serve` flags.
#[derive(Args, Clone, Debug, Default, PartialEq)]
pub struct CheckConfigArgs {
    /// The config file to check (as `serve --config`; overrides `--config`).
    #[arg(value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,

    /// The flags `serve` would be given, which take precedence over the file.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Flags of `kefu token`: the claims of the token, and where to find the
/// tenant's secret (the same config file and data directory as `serve`).
#[derive(Args, Clone, Debug, PartialEq)]
pub struct TokenArgs {
    /// Who the token is for: agent or visitor.
    #[arg(long, value_name = "agent|visitor", value_parser = parse_role)]
    pub role: Role,

    /// The agent's or visitor's id: 1 to 64 of A-Z a-z 0-9 _ . @ : -
    #[arg(long, value_name = "ID")]
    pub sub: String,

    /// The tenant whose secret signs the token.
    #[arg(long, value_name = "T", default_value = config::DEMO_TENANT)]
    pub tenant: String,

    /// Display name.
    #[arg(long, value_name = "N")]
    pub name: Option<String>,

    /// Agents: skills served, comma-separated.
    #[arg(long, value_name = "a,b", value_delimiter = ',')]
    pub skills: Vec<String>,

    /// Agents: languages spoken, comma-separated.
    #[arg(long, value_name = "en,zh", value_delimiter = ',')]
    pub langs: Vec<String>,

    /// Agents: concurrent conversations [default: the tenant's]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_chats: Option<u32>,

    /// Visitors: the skill their conversations need.
    #[arg(long, value_name = "S")]
    pub skill: Option<String>,

    /// Visitors: preferred language.
    #[arg(long, value_name = "L")]
    pub lang: Option<String>,

    /// Visitors: served before non-VIP visitors.
    #[arg(long)]
    pub vip: bool,

    /// How long the token is valid.
    #[arg(long, value_name = "DURATION", default_value = "24h", value_parser = config::parse_duration)]
    pub ttl: Duration,

    /// The config file whose tenant signs the token [default: none, demo tenant]
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The data directory holding the demo secret (made if absent) [default: ./kefu-data]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Agents: print a link that opens the agent console logged in (the
    /// token goes in the URL's fragment, never sent to the server).
    #[arg(long)]
    pub url: bool,

    /// The gateway's address as browsers reach it, for --url [default: http:// and the listen address]
    #[arg(long, value_name = "URL", requires = "url")]
    pub base_url: Option<String>,
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("`{s}` is not a role (agent or visitor)"))
}

/// Why `kefu token` printed no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Flags that do not make a valid token (a bad `--sub`, a visitor flag on an agent).
    #[error("{0}")]
    Usage(String),
    /// The configuration could not be loaded.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The tenant is not one this configuration serves.
    #[error("tenant {tenant:?} is not served here: {known}")]
    UnknownTenant {
        /// The `--tenant` asked for.
        tenant: String,
        /// Which tenants there are, and where they come from.
        known: String,
    },
    /// Signing failed.
    #[error(transparent)]
    Auth(#[from] AuthError),
}

impl TokenError {
    /// The process exit code: 2 for a bad command line or configuration, else 1.
    pub fn exit_code(&self) -> u8 {
        match self {
            TokenError::Usage(_) | TokenError::UnknownTenant { .. } => 2,
            TokenError::Config(e) => e.exit_code(),
            TokenError::Auth(_) => 1,
        }
    }
}

/// Makes the token `kefu token` prints (without the newline): loads the
/// configuration as `kefu serve` would (so the demo secret is made if it
/// does not exist yet), and signs the claims with the tenant's secret.
pub fn token(args: &TokenArgs, env: EnvLookup<'_>) -> Result<String, TokenError> {
    let usage = |m: String| Err(TokenError::Usage(m));
    if !is_valid_user_id(&args.sub) {
        return usage(format!(
            "--sub {:?}: must be 1 to 64 characters of A-Z a-z 0-9 _ . @ : -",
            args.sub
        ));
    }
    let (role, misplaced) = match args.role {
        Role::Agent => (
            "an agent",
            [
                ("--skill", args.skill.is_some()),
                ("--lang", args.lang.is_some()),
                ("--vip", args.vip),
            ],
        ),
        Role::Visitor => (
            "a visitor",
            [
                ("--skills", !args.skills.is_empty()),
                ("--langs", !args.langs.is_empty()),
                ("--max-chats", args.max_chats.is_some()),
            ],
        ),
    };
    if let Some((flag, _)) = misplaced.iter().find(|(_, given)| *given) {
        return usage(format!("{flag} does not apply to {role} token"));
    }
    if args
        .skills
        .iter()
        .chain(&args.langs)
        .any(|s| s.trim().is_empty())
    {
        return usage("--skills and --langs take non-empty, comma-separated names".into());
    }
    if args.ttl.is_zero() {
        return usage("--ttl must be longer than 0s".into());
    }
    if args.url && args.role != Role::Agent {
        return usage("--url links to the agent console: it needs --role agent".into());
    }
    if let Some(base) = &args.base_url {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return usage(format!(
                "--base-url {base:?}: must start with http:// or https://"
            ));
        }
    }

    let serve = ServeArgs {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        ..ServeArgs::default()
    };
    let settings = config::load_with_env(&serve, env)?;
    let Some(tenant) = settings.tenants.get(&args.tenant) else {
        let mut ids: Vec<&str> = settings.tenants.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        let known = match &settings.config_file {
            Some(path) => format!("{} defines {}", path.display(), ids.join(", ")),
            None => format!(
                "without a config file the only tenant is {}",
                config::DEMO_TENANT
            ),
        };
        return Err(TokenError::UnknownTenant {
            tenant: args.tenant.clone(),
            known,
        });
    };

    let mut claims = Claims::new(
        tenant.id.as_str(),
        args.sub.clone(),
        args.role,
        auth::expiry_after(args.ttl),
    );
    claims.name = args.name.clone();
    claims.skills = args.skills.clone();
    claims.langs = args.langs.clone();
    claims.max_chats = args.max_chats;
    claims.skill = args.skill.clone();
    claims.lang = args.lang.clone();
    claims.vip = args.vip;
    let token = auth::issue(&tenant.secret, &claims)?;
    if !args.url {
        return Ok(token);
    }
    let base = match &args.base_url {
        Some(base) => base.clone(),
        None => default_base_url(settings.listen),
    };
    Ok(crate::server::assets::console_url(&base, &token))
}

/// `http://` and the listen address, with a wildcard address replaced by
/// the loopback address of its family.
fn default_base_url(listen: std::net::SocketAddr) -> String {
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr.ip() {
            std::net::IpAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::IpAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}")
}

/// The clap command, with `[env: KEFU_...]` added to the help of every flag
/// the environment can set.
pub fn command() -> clap::Command {
    Cli::command()
        .mut_subcommand("serve", |c| config::document_env(c, ENV_FLAGS))
        .mut_subcommand("token", |c| {
            config::document_env(c, &["config", "data-dir"])
        })
}

/// Parses a command line (the first item is the program name).
pub fn parse_from<I, T>(argv: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = command().try_get_matches_from(argv)?;
    Cli::from_arg_matches(&matches)
}

/// The `kefu` binary: parses argv, starts logging, and runs `serve` with
/// the loaded settings, or prints a token. Returns the exit code.
pub fn run(serve: impl FnOnce(Settings) -> Result<(), Box<dyn Error>>) -> ExitCode {
    let code = run_with(
        std::env::args_os(),
        &config::process_env,
        // Not locked: `serve` prints its ready line from another thread.
        &mut io::stdout(),
        serve,
    );
    ExitCode::from(code)
}

/// [`run`] with its inputs and output passed in, for tests.
pub(crate) fn run_with(
    argv: impl IntoIterator<Item = OsString>,
    env: EnvLookup<'_>,
    out: &mut dyn Write,
    serve: impl FnOnce(Settings) -> Result<(), Box<dyn Error>>,
) -> u8 {
    let cli = match parse_from(argv) {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with code 0; usage errors to stderr with 2.
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve(ServeArgs::default())) {
        Command::Serve(args) => {
            init_tracing(config::peek_log_format(&args, env), env);
            let settings = match config::load_with_env(&args, env) {
                Ok(settings) => settings,
                Err(e) => return fail(&e, e.exit_code()),
            };
            tracing::info!(
                listen = %settings.listen,
                admin_listen = %settings.admin_listen,
                shards = settings.shards,
                data_dir = %settings.data_dir.display(),
                tenants = settings.tenants.len(),
                "starting"
            );
            match serve(settings) {
                Ok(()) => 0,
                Err(e) => fail(&*e, 1),
            }
        }
        Command::CheckConfig(args) => {
            let mut serve = args.serve.clone();
            if args.file.is_some() {
                serve.config = args.file.clone();
            }
            init_tracing(config::peek_log_format(&serve, env), env);
            match config::check_with_env(&serve, env) {
                Ok(settings) => match write!(out, "{}", settings.to_toml_redacted())
                    .and_then(|()| out.flush())
                {
                    Ok(()) => 0,
                    Err(e) => fail(&e, 1),
                },
                Err(e) => fail(&e, e.exit_code()),
            }
        }
        Command::Token(args) => {
            let serve = ServeArgs {
                config: args.config.clone(),
                ..ServeArgs::default()
            };
            init_tracing(config::peek_log_format(&serve, env), env);
            match token(&args, env) {
                Ok(token) => match writeln!(out, "{token}").and_then(|()| out.flush()) {
                    Ok(()) => 0,
                    Err(e) => fail(&e, 1),
                },
                Err(e) => fail(&e, e.exit_code()),
            }
        }
    }
}

/// Prints `error` as one line on stderr, with the causes its message does
/// not already include, and returns `code`.
fn fail(error: &dyn Error, code: u8) -> u8 {
    eprintln!("kefu: error: {}", one_line(error));
    code
}

fn one_line(error: &dyn Error) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let text = c.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = c.source();
    }
    line.replace('\n', " ")
}

/// Logs to stderr, as text or JSON, filtered by `RUST_LOG` (default `info`);
/// colours only when stderr is a terminal (not in journald or a file).
/// Does nothing if logging was already set up (tests).
fn init_tracing(format: LogFormat, env: EnvLookup<'_>) {
    let (filter, bad) = match env("RUST_LOG").filter(|v| !v.is_empty()) {
        None => (EnvFilter::new("info"), None),
        Some(spec) => match EnvFilter::try_new(spec.to_string_lossy()) {
            Ok(filter) => (filter, None),
            Err(e) => (EnvFilter::new("info"), Some(e)),
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_env_filter(filter);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    if let Some(e) = bad {
        tracing::warn!("RUST_LOG is not a valid filter ({e}); logging at info");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::fs;

    use super::*;
    use crate::auth::verify;

    fn env_map(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<OsString> {
        let map: HashMap<String, OsString> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), OsString::from(v)))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("kefu")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    fn token_args(args: &[&str]) -> TokenArgs {
        match parse_from(argv(&[&["token"], args].concat()))
            .unwrap()
            .command
        {
            Some(Command::Token(t)) => t,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bare_kefu_is_serve() {
        assert!(parse_from(argv(&[])).unwrap().command.is_none());
        match parse_from(argv(&[
            "serve",
            "--shards",
            "2",
            "--outbound-limit",
            "1MiB",
        ]))
        .unwrap()
        .command
        {
            Some(Command::Serve(a)) => {
                assert_eq!(a.shards, Some(2));
                assert_eq!(a.limits.outbound_limit, Some(config::ByteSize(1 << 20)));
            }
            other => panic!("{other:?}"),
        }
        // Serve flags belong to `serve`.
        assert!(parse_from(argv(&["--shards", "2"])).is_err());
    }

    #[test]
    fn help_names_every_env_var() {
        let cmd = command();
        let serve = cmd.find_subcommand("serve").unwrap();
        let help = serve
            .clone()
            .term_width(1000)
            .render_long_help()
            .to_string();
        for flag in ENV_FLAGS {
            assert!(
                help.contains(&format!("--{flag} ")),
                "--{flag} missing:\n{help}"
            );
            let var = config::env_var_for(flag);
            assert!(
                help.contains(&format!("[env: {var}]")),
                "{var} missing:\n{help}"
            );
        }
        // And every serve flag can come from the environment (hidden
        // testing aids excepted).
        let longs: Vec<String> = serve
            .get_arguments()
            .filter(|a| !a.is_hide_set())
            .filter_map(|a| a.get_long().map(str::to_owned))
            .filter(|l| l != "help")
            .collect();
        assert_eq!(longs.len(), ENV_FLAGS.len(), "{longs:?}");
        command().debug_assert();
    }

    #[test]
    fn token_flags() {
        let t = token_args(&["--role", "agent", "--sub", "alice"]);
        assert_eq!(t.role, Role::Agent);
        assert_eq!(t.tenant, "demo");
        assert_eq!(t.ttl, Duration::from_secs(24 * 3600));
        let t = token_args(&[
            "--role=agent",
            "--sub=bob",
            "--tenant=acme",
            "--name=Bob",
            "--skills=billing,vip",
            "--langs",
            "en,zh",
            "--max-chats=3",
            "--ttl=2m",
        ]);
        assert_eq!(t.skills, ["billing", "vip"]);
        assert_eq!(t.langs, ["en", "zh"]);
        assert_eq!(t.max_chats, Some(3));
        assert_eq!(t.ttl, Duration::from_secs(120));
        for bad in [
            &["token", "--sub", "alice"][..],
            &["token", "--role", "admin", "--sub", "a"],
            &["token", "--role", "agent"],
            &["token", "--role", "agent", "--sub", "a", "--max-chats", "0"],
            &["token", "--role", "agent", "--sub", "a", "--ttl", "10"],
        ] {
            assert_eq!(parse_from(argv(bad)).unwrap_err().exit_code(), 2, "{bad:?}");
        }
    }

    #[test]
    fn token_output_verifies_with_the_demo_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let env = env_map(&[("KEFU_DATA_DIR", data.to_str().unwrap())]);

        let agent = token(
            &token_args(&[
                "--role=agent",
                "--sub=alice",
                "--name=Alice",
                "--skills=billing",
                "--langs=en,zh",
                "--max-chats=2",
            ]),
            &env,
        )
        .unwrap();
        assert!(
            data.join(config::DEMO_SECRET_FILE).exists(),
            "demo secret made"
        );
        let visitor = token(
            &token_args(&[
                "--role=visitor",
                "--sub=v-9",
                "--skill=billing",
                "--lang=zh",
                "--vip",
            ]),
            &env,
        )
        .unwrap();

        // The server, started on the same data directory, accepts both.
        let settings = config::load_with_env(&ServeArgs::default(), &env).unwrap();
        let leeway = settings.limits.token_leeway;
        let a = verify(&agent, &settings.tenants, leeway).unwrap();
        assert_eq!(
            (a.role, a.id.as_str(), a.tenant.id.as_str()),
            (Role::Agent, "alice", "demo")
        );
        assert_eq!(a.name.as_deref(), Some("Alice"));
        assert_eq!(a.skills.len(), 1);
        assert_eq!(a.langs.len(), 2);
        assert_eq!(a.max_chats, Some(2));
        let v = verify(&visitor, &settings.tenants, leeway).unwrap();
        assert_eq!((v.role, v.id.as_str()), (Role::Visitor, "v-9"));
        assert_eq!(
            (v.skill.as_deref(), v.lang.as_deref(), v.vip),
            (Some("billing"), Some("zh"), true)
        );
    }

    #[test]
    fn token_for_a_config_file_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("kefu.toml");
        fs::write(
            &file,
            "[[tenants]]\nid = \"acme\"\nsecret = \"0123456789abcdef0123456789abcdef\"\n",
        )
        .unwrap();
        let cfg = file.to_str().unwrap();
        let none = env_map(&[]);
        let t = token(
            &token_args(&["--role=agent", "--sub=al", "--tenant=acme", "--config", cfg]),
            &none,
        )
        .unwrap();
        let settings = config::load_with_env(
            &ServeArgs {
                config: Some(file.clone()),
                ..ServeArgs::default()
            },
            &none,
        )
        .unwrap();
        assert_eq!(
            verify(&t, &settings.tenants, Duration::ZERO)
                .unwrap()
                .tenant
                .id
                .as_str(),
            "acme"
        );

        let e = token(
            &token_args(&["--role=agent", "--sub=al", "--config", cfg]),
            &none,
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("\"demo\" is not served here")
                && e.to_string().contains("defines acme"),
            "{e}"
        );
    }

    #[test]
    fn token_refuses_flags_that_make_no_sense() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_map(&[("KEFU_DATA_DIR", dir.path().to_str().unwrap())]);
        for (args, why) in [
            (&["--role=agent", "--sub=a b"][..], "--sub"),
            (
                &["--role=agent", "--sub=a", "--vip"],
                "--vip does not apply to an agent",
            ),
            (
                &["--role=agent", "--sub=a", "--skill=x"],
                "--skill does not apply",
            ),
            (
                &["--role=visitor", "--sub=a", "--skills=x"],
                "--skills does not apply to a visitor",
            ),
            (
                &["--role=visitor", "--sub=a", "--max-chats=2"],
                "--max-chats",
            ),
            (&["--role=agent", "--sub=a", "--skills=a,,b"], "non-empty"),
            (&["--role=agent", "--sub=a", "--ttl=0s"], "--ttl"),
            (
                &["--role=agent", "--sub=a", "--tenant=acme"],
                "only tenant is demo",
            ),
        ] {
            let e = token(&token_args(args), &env).unwrap_err();
            assert_eq!(e.exit_code(), 2, "{args:?}");
            assert!(e.to_string().contains(why), "{args:?}: {e}");
        }
    }

    #[test]
    fn token_url_links_to_the_console() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_map(&[("KEFU_DATA_DIR", dir.path().to_str().unwrap())]);
        let url = token(&token_args(&["--role=agent", "--sub=alice", "--url"]), &env).unwrap();
        let jwt = url
            .strip_prefix("http://127.0.0.1:8080/console#token=")
            .unwrap_or_else(|| panic!("{url}"));
        let settings = config::load_with_env(&ServeArgs::default(), &env).unwrap();
        verify(jwt, &settings.tenants, Duration::ZERO).unwrap();

        let url = token(
            &token_args(&[
                "--role=agent",
                "--sub=alice",
                "--url",
                "--base-url=https://chat.acme.example/",
            ]),
            &env,
        )
        .unwrap();
        assert!(
            url.starts_with("https://chat.acme.example/console#token=ey"),
            "{url}"
        );
        assert_eq!(
            default_base_url("0.0.0.0:80".parse().unwrap()),
            "http://127.0.0.1:80"
        );
        assert_eq!(
            default_base_url("[::]:81".parse().unwrap()),
            "http://[::1]:81"
        );

        for (args, why) in [
            (&["--role=visitor", "--sub=v", "--url"][..], "--role agent"),
            (
                &[
                    "--role=agent",
                    "--sub=a",
                    "--url",
                    "--base-url=chat.example",
                ],
                "http://",
            ),
        ] {
            let e = token(&token_args(args), &env).unwrap_err();
            assert!(e.to_string().contains(why), "{args:?}: {e}");
        }
        // --base-url only goes with --url.
        assert!(parse_from(argv(&[
            "token",
            "--role=agent",
            "--sub=a",
            "--base-url=http://x"
        ]))
        .is_err());
    }

    #[test]
    fn run_prints_one_token_line() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_map(&[("KEFU_DATA_DIR", dir.path().to_str().unwrap())]);
        let mut out = Vec::new();
        let code = run_with(
            argv(&["token", "--role", "agent", "--sub", "alice"]),
            &env,
            &mut out,
            |_| panic!("not serving"),
        );
        assert_eq!(code, 0);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with('\n') && text.lines().count() == 1,
            "{text:?}"
        );
        let settings = config::load_with_env(&ServeArgs::default(), &env).unwrap();
        verify(text.trim_end(), &settings.tenants, Duration::ZERO).unwrap();
    }

    #[test]
    fn run_serves_with_the_loaded_settings() {
        let dir = tempfile::tempdir().unwrap();
        let env = env_map(&[
            ("KEFU_DATA_DIR", dir.path().to_str().unwrap()),
            ("KEFU_SHARDS", "1"),
        ]);
        let mut seen = None;
        let code = run_with(argv(&[]), &env, &mut io::sink(), |s| {
            seen = Some(s);
            Ok(())
        });
        assert_eq!(code, 0);
        let s = seen.expect("serve was called");
        assert_eq!((s.shards, s.listen.port()), (1, 8080));

        let code = run_with(
            argv(&["serve", "--listen=127.0.0.1:0"]),
            &env,
            &mut io::sink(),
            |_| Err("boom".into()),
        );
        assert_eq!(code, 1, "a failing server exits 1");
        let code = run_with(
            argv(&["serve", "--shards=0"]),
            &env,
            &mut io::sink(),
            |_| panic!("must not serve a bad config"),
        );
        assert_eq!(code, 2, "a bad config exits 2");
        let code = run_with(
            argv(&["serve", "--bogus"]),
            &env,
            &mut io::sink(),
            |_| panic!(),
        );
        assert_eq!(code, 2, "a bad command line exits 2");
    }

    #[test]
    fn errors_are_one_line_with_their_causes() {
        #[derive(Debug)]
        struct Outer(io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("cannot start\nthe store")
            }
        }
        impl Error for Outer {
            fn source(&self) -> Option<&(dyn Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(io::Error::other("disk full"));
        assert_eq!(one_line(&e), "cannot start the store: disk full");
    }
}
