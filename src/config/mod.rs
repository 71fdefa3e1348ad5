//! Configuration: command line, environment, TOML file, defaults.
//!
//! Each setting is taken from the first of these that has it:
//!
//! 1. the flag (`--max-text-bytes 2048`),
//! 2. the environment variable named after the flag (`KEFU_MAX_TEXT_BYTES`;
//!    an empty variable counts as unset),
//! 3. the config file (`[limits] max_text_bytes = 2048`),
//! 4. the default, documented on each field of [`Settings`].
//!
//! The environment is read here rather than by clap, through a lookup
//! function the caller passes ([`load_with_env`]), so that tests use an
//! environment of their own instead of the process's, and so that an error
//! can name the variable a bad value came from. Every error names where its
//! value came from: a flag, a variable, `file: key`, or a default.
//!
//! Tenants come only from the file (`[[tenants]]`, at least one). Without a
//! file the gateway serves one tenant, `demo`, which accepts anonymous
//! visitors and whose secret is made on first start and kept in the data
//! directory ([`demo_secret`]).
//!
//! Paths in the file (`data_dir`) are relative to the working directory, as
//! they are on the command line, not to the file's directory.

mod args;
mod demo;
mod file;
mod render;
mod settings;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

pub use args::{env_var_for, LimitArgs, ServeArgs};
pub use demo::{demo_secret, DEMO_SECRET_FILE};
pub use settings::{Limits, LogFormat, Settings, StoreSettings};
pub use values::{parse_duration, ByteSize, CpuList};

pub(crate) use args::document_env;

use crate::ids::TenantId;
use crate::tenants::{Tenant, Tenants};
use file::FileConfig;

/// The id of the tenant served when there is no config file.
pub const DEMO_TENANT: &str = "demo";

/// A tenant's default `max_chats` when its `[[tenants]]` entry has none:
/// 5 concurrent conversations per agent (PROTOCOL.md).
pub const DEFAULT_MAX_CHATS: u32 = 5;

/// Default main listener: loopback until the operator chooses to expose it.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// Default admin listener: loopback, apart from the chat port.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";

/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "./kefu-data";

/// Default drain bound (see [`Settings::drain_timeout`]).
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Default agent grace period (see [`Settings::agent_grace`]).
pub const DEFAULT_AGENT_GRACE: Duration = Duration::from_secs(30);

/// Every flag of `kefu serve` that an environment variable can stand in for.
pub const ENV_FLAGS: &[&str] = &[
    "listen",
    "admin-listen",
    "shards",
    "cpus",
    "data-dir",
    "config",
    "agent-grace",
    "drain-timeout",
    "log-format",
    "max-message-bytes",
    "max-text-bytes",
    "max-handshake-bytes",
    "handshake-timeout",
    "hello-timeout",
    "outbound-limit",
    "token-leeway",
    "msg-rate-limit",
    "idle-timeout",
    "max-connections-per-shard",
    "max-connections-per-ip",
    "store-cache-bytes",
];

/// Looks up an environment variable: the process environment in
/// production ([`process_env`]), a map in tests.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<OsString>;

/// The process environment, for [`load_with_env`].
pub fn process_env(name: &str) -> Option<OsString> {
    std::env::var_os(name)
}

/// Where a setting's value came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, e.g. `--shards`.
    Flag(String),
    /// An environment variable, e.g. `KEFU_SHARDS`.
    Env(String),
    /// A key of a file: the config file, or the demo secret file (empty key).
    File {
        /// The file.
        path: PathBuf,
        /// The key within it, e.g. `limits.hello_timeout`; empty for the whole file.
        key: String,
    },
    /// No source set it: the built-in default.
    Default,
}

/// Names a setting and where its value came from: `--shards`,
/// `environment variable KEFU_SHARDS`, `kefu.toml: shards`, `shards (default)`.
fn describe(key: &str, origin: Option<&Origin>) -> String {
    match origin {
        None => key.to_owned(),
        Some(Origin::Flag(flag)) => flag.clone(),
        Some(Origin::Env(var)) => format!("environment variable {var}"),
        Some(Origin::File { path, key }) if key.is_empty() => path.display().to_string(),
        Some(Origin::File { path, key }) => format!("{}: {key}", path.display()),
        Some(Origin::Default) => format!("{key} (default)"),
    }
}

fn file_location(path: &Path, line: usize, column: usize) -> String {
    if line == 0 {
        path.display().to_string()
    } else {
        format!("{}:{line}:{column}", path.display())
    }
}

/// Why the configuration was refused. Each message names the source of the
/// bad value (flag, environment variable, `file:line:column` or `file: key`)
/// and fits on one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {}: {source}", path.display())]
    ReadFile {
        /// The file named by `--config` or `KEFU_CONFIG`.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The config file is not TOML, or does not fit the schema: an unknown
    /// key, a wrong type, a value that does not parse.
    #[error("{}: {message}", file_location(path, *line, *column))]
    File {
        /// The config file.
        path: PathBuf,
        /// 1-based line of the offending text (0: unknown).
        line: usize,
        /// 1-based column of the offending text (0: unknown).
        column: usize,
        /// What is wrong, naming the key.
        message: String,
    },
    /// An environment variable holds a value that does not parse.
    #[error("environment variable {var}={value:?}: {reason}")]
    Env {
        /// The variable, e.g. `KEFU_SHARDS`.
        var: String,
        /// Its value (lossily decoded when it is not UTF-8).
        value: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A value parsed but is not acceptable.
    #[error("{}: {reason}", describe(key, origin.as_ref()))]
    Invalid {
        /// The setting, named as in the file: `shards`, `limits.max_text_bytes`, `tenants[0].secret`.
        key: String,
        /// Where the value came from, when known.
        origin: Option<Origin>,
        /// What is wrong with it.
        reason: String,
    },
    /// The config file has no `[[tenants]]`.
    #[error(
        "{}: no [[tenants]] defined; add one, or run without a config file to get the demo tenant",
        path.display()
    )]
    NoTenants {
        /// The config file.
        path: PathBuf,
    },
    /// The data directory or the demo secret in it could not be made or read.
    #[error("data directory {}: {source}", path.display())]
    DataDir {
        /// The data directory.
        path: PathBuf,
        /// What went wrong.
        source: io::Error,
    },
}

impl ConfigError {
    /// The process exit code for this error: 2 for a bad configuration
    /// (the operator must change something), 1 for a failing environment
    /// (an unwritable data directory).
    pub fn exit_code(&self) -> u8 {
        match self {
            ConfigError::DataDir { .. } => 1,
            _ => 2,
        }
    }
}

/// Where each setting came from, by key.
#[derive(Debug, Default)]
pub(crate) struct Origins(BTreeMap<String, Origin>);

impl Origins {
    pub(crate) fn get(&self, key: &str) -> Option<&Origin> {
        self.0.get(key)
    }

    pub(crate) fn describe(&self, key: &str) -> String {
        describe(key, self.get(key))
    }
}

/// Resolves each setting through the layers, recording where it came from.
struct Layers<'a> {
    env: EnvLookup<'a>,
    file: Option<PathBuf>,
    origins: Origins,
}

impl Layers<'_> {
    /// The value of `key` from the flag `flag`, else its environment
    /// variable, else the file; `None` (origin: default) if none has it.
    fn pick<T>(
        &mut self,
        key: &str,
        flag: &str,
        cli: Option<T>,
        file: Option<T>,
        parse: impl Fn(&OsStr) -> Result<T, String>,
    ) -> Result<Option<T>, ConfigError> {
        let (value, origin) = if let Some(v) = cli {
            (Some(v), Origin::Flag(format!("--{flag}")))
        } else if let Some((v, var)) = self.env_value(flag, &parse)? {
            (Some(v), Origin::Env(var))
        } else if let (Some(v), Some(path)) = (file, &self.file) {
            let origin = Origin::File {
                path: path.to_owned(),
                key: key.to_owned(),
            };
            (Some(v), origin)
        } else {
            (None, Origin::Default)
        };
        self.origins.0.insert(key.to_owned(), origin);
        Ok(value)
    }

    fn env_value<T>(
        &self,
        flag: &str,
        parse: impl Fn(&OsStr) -> Result<T, String>,
    ) -> Result<Option<(T, String)>, ConfigError> {
        let var = env_var_for(flag);
        match (self.env)(&var) {
            Some(raw) if !raw.is_empty() => match parse(&raw) {
                Ok(v) => Ok(Some((v, var))),
                Err(reason) => Err(ConfigError::Env {
                    var,
                    value: raw.to_string_lossy().into_owned(),
                    reason,
                }),
            },
            _ => Ok(None),
        }
    }
}

/// An environment parser for any `FromStr` value.
fn parsed<T: FromStr>(raw: &OsStr) -> Result<T, String>
where
    T::Err: fmt::Display,
{
    raw.to_str()
        .ok_or_else(|| "not valid UTF-8".to_owned())?
        .trim()
        .parse()
        .map_err(|e: T::Err| e.to_string())
}

fn path(raw: &OsStr) -> Result<PathBuf, String> {
    Ok(PathBuf::from(raw))
}

fn duration(raw: &OsStr) -> Result<Duration, String> {
    parse_duration(raw.to_str().ok_or_else(|| "not valid UTF-8".to_owned())?)
}

/// Builds the effective settings from the flags in `args`, the process
/// environment, the config file and the defaults, and validates them.
///
/// Without a config file this makes the data directory and the demo
/// tenant's secret if they do not exist yet.
pub fn load(args: &ServeArgs) -> Result<Settings, ConfigError> {
    load_with_env(args, &process_env)
}

/// [`load`], with the environment read through `env` instead of the process's.
pub fn load_with_env(args: &ServeArgs, env: EnvLookup<'_>) -> Result<Settings, ConfigError> {
    load_inner(args, env, true)
}

/// [`load_with_env`] for `kefu check-config`: the same settings, checked
/// the same way, but nothing is written. Without a config file the demo
/// tenant's secret is read if the data directory has one, and a
/// placeholder stands in for it if not (check-config prints every secret
/// redacted, so the difference never shows).
pub fn check_with_env(args: &ServeArgs, env: EnvLookup<'_>) -> Result<Settings, ConfigError> {
    load_inner(args, env, false)
}

/// Loads the settings; `make_demo_secret`: make the demo secret (and the
/// data directory) if there is no config file and no secret yet.
fn load_inner(
    args: &ServeArgs,
    env: EnvLookup<'_>,
    make_demo_secret: bool,
) -> Result<Settings, ConfigError> {
    let mut layers = Layers {
        env,
        file: None,
        origins: Origins::default(),
    };
    let config_file = layers.pick("config", "config", args.config.clone(), None, path)?;
    let file = match &config_file {
        Some(p) => file::read(p)?,
        None => FileConfig::default(),
    };
    layers.file = config_file.clone();
    let l = &mut layers;
    let a = &args.limits;
    let f = &file.limits;
    let defaults = Limits::default();

    let listen = l
        .pick("listen", "listen", args.listen, file.listen, parsed)?
        .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
    let admin_listen = l
        .pick(
            "admin_listen",
            "admin-listen",
            args.admin_listen,
            file.admin_listen,
            parsed,
        )?
        .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.parse().expect("valid default"));
    let cpus = l.pick("cpus", "cpus", args.cpus.clone(), file.cpus.clone(), parsed)?;
    let shards = l
        .pick("shards", "shards", args.shards, file.shards, parsed)?
        .unwrap_or_else(|| match &cpus {
            Some(cpus) => cpus.as_slice().len(),
            None => values::default_shards(),
        });
    let data_dir = l
        .pick(
            "data_dir",
            "data-dir",
            args.data_dir.clone(),
            file.data_dir.clone(),
            path,
        )?
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
    let agent_grace = l
        .pick(
            "agent_grace",
            "agent-grace",
            args.agent_grace,
            file.agent_grace,
            duration,
        )?
        .unwrap_or(DEFAULT_AGENT_GRACE);
    let drain_timeout = l
        .pick(
            "drain_timeout",
            "drain-timeout",
            args.drain_timeout,
            file.drain_timeout,
            duration,
        )?
        .unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    let log_format = l
        .pick(
            "log_format",
            "log-format",
            args.log_format,
            file.log_format,
            parsed,
        )?
        .unwrap_or_default();

    let bytes = |v: Option<ByteSize>, default: usize| v.map_or(default, ByteSize::as_usize);
    let limits = Limits {
        max_message_bytes: bytes(
            l.pick(
                "limits.max_message_bytes",
                "max-message-bytes",
                a.max_message_bytes,
                f.max_message_bytes,
                parsed,
            )?,
            defaults.max_message_bytes,
        ),
        max_text_bytes: bytes(
            l.pick(
                "limits.max_text_bytes",
                "max-text-bytes",
                a.max_text_bytes,
                f.max_text_bytes,
                parsed,
            )?,
            defaults.max_text_bytes,
        ),
        max_handshake_bytes: bytes(
            l.pick(
                "limits.max_handshake_bytes",
                "max-handshake-bytes",
                a.max_handshake_bytes,
                f.max_handshake_bytes,
                parsed,
            )?,
            defaults.max_handshake_bytes,
        ),
        handshake_timeout: l
            .pick(
                "limits.handshake_timeout",
                "handshake-timeout",
                a.handshake_timeout,
                f.handshake_timeout,
                duration,
            )?
            .unwrap_or(defaults.handshake_timeout),
        hello_timeout: l
            .pick(
                "limits.hello_timeout",
                "hello-timeout",
                a.hello_timeout,
                f.hello_timeout,
                duration,
            )?
            .unwrap_or(defaults.hello_timeout),
        outbound_limit_bytes: bytes(
            l.pick(
                "limits.outbound_limit_bytes",
                "outbound-limit",
                a.outbound_limit,
                f.outbound_limit_bytes,
                parsed,
            )?,
            defaults.outbound_limit_bytes,
        ),
        token_leeway: l
            .pick(
                "limits.token_leeway",
                "token-leeway",
                a.token_leeway,
                f.token_leeway,
                duration,
            )?
            .unwrap_or(defaults.token_leeway),
        msg_rate_limit: l
            .pick(
                "limits.msg_rate_limit",
                "msg-rate-limit",
                a.msg_rate_limit,
                f.msg_rate_limit,
                parsed,
            )?
            .unwrap_or(defaults.msg_rate_limit),
        idle_timeout: l
            .pick(
                "limits.idle_timeout",
                "idle-timeout",
                a.idle_timeout,
                f.idle_timeout,
                duration,
            )?
            .unwrap_or(defaults.idle_timeout),
        max_connections_per_shard: l
            .pick(
                "limits.max_connections_per_shard",
                "max-connections-per-shard",
                a.max_connections_per_shard,
                f.max_connections_per_shard,
                parsed,
            )?
            .unwrap_or(defaults.max_connections_per_shard),
        max_connections_per_ip: l
            .pick(
                "limits.max_connections_per_ip",
                "max-connections-per-ip",
                a.max_connections_per_ip,
                f.max_connections_per_ip,
                parsed,
            )?
            .unwrap_or(defaults.max_connections_per_ip),
    };
    let store = StoreSettings {
        cache_bytes: l
            .pick(
                "store.cache_bytes",
                "store-cache-bytes",
                args.store_cache_bytes,
                file.store.cache_bytes,
                parsed,
            )?
            .map_or(StoreSettings::default().cache_bytes, |b| b.0),
    };

    let tenants = match &config_file {
        Some(path) => file_tenants(path, file.tenants)?,
        None => vec![demo_tenant(&data_dir, make_demo_secret)?],
    };
    let settings = Settings {
        listen,
        admin_listen,
        shards,
        cpus: cpus.map(CpuList::into_vec),
        data_dir,
        agent_grace,
        drain_timeout,
        limits,
        store,
        tenants: Arc::new(Tenants::new(tenants)),
        config_file,
        log_format,
        fault_injection: args.fault_injection,
    };
    validate::check(&settings, &layers.origins, false)?;
    Ok(settings)
}

/// Reads the tenants of a config file again (for SIGHUP). The file must
/// parse and its tenants must validate; other settings in it are not
/// reloaded (they need a restart), and are not checked here beyond parsing.
pub fn reload_tenants(path: &Path) -> Result<Tenants, ConfigError> {
    let file = file::read(path)?;
    Ok(Tenants::new(file_tenants(path, file.tenants)?))
}

/// The log format, from the flag, the environment or the config file,
/// without loading anything else: logging starts before the settings are
/// loaded, so that their warnings are seen. Any problem reading it is left
/// for [`load`] to report; meanwhile the format is text.
pub(crate) fn peek_log_format(args: &ServeArgs, env: EnvLookup<'_>) -> LogFormat {
    let source = |flag: &str| env(&env_var_for(flag)).filter(|v| !v.is_empty());
    if let Some(format) = args.log_format {
        return format;
    }
    if let Some(raw) = source("log-format") {
        return parsed(&raw).unwrap_or_default();
    }
    let config = args
        .config
        .clone()
        .or_else(|| source("config").map(PathBuf::from));
    config
        .and_then(|path| file::read(&path).ok())
        .and_then(|file| file.log_format)
        .unwrap_or_default()
}

/// Turns the file's `[[tenants]]` into tenants, checking each one and that
/// ids are unique.
fn file_tenants(path: &Path, list: Vec<file::FileTenant>) -> Result<Vec<Tenant>, ConfigError> {
    if list.is_empty() {
        return Err(ConfigError::NoTenants {
            path: path.to_owned(),
        });
    }
    let mut tenants: Vec<Tenant> = Vec::with_capacity(list.len());
    for (i, t) in list.into_iter().enumerate() {
        let tenant = Tenant {
            id: TenantId::new(t.id),
            secret: t.secret.into_bytes().into(),
            anonymous_visitors: t.anonymous_visitors,
            origins: t.origins,
            max_chats: t.max_chats,
        };
        let invalid = |field: &str, reason: String| {
            let key = format!("tenants[{i}].{field}");
            ConfigError::Invalid {
                origin: Some(Origin::File {
                    path: path.to_owned(),
                    key: key.clone(),
                }),
                key,
                reason,
            }
        };
        if let Some(first) = tenants.iter().position(|other| other.id == tenant.id) {
            return Err(invalid(
                "id",
                format!(
                    "tenant id {:?} is already used by tenants[{first}]",
                    tenant.id.as_str()
                ),
            ));
        }
        validate::check_tenant(&tenant).map_err(|(field, reason)| invalid(field, reason))?;
        tenants.push(tenant);
    }
    Ok(tenants)
}

/// The zero-config tenant: `demo`, anonymous visitors, any origin. Its
/// secret is made if `make` and there is none yet; otherwise a missing one
/// is replaced by a placeholder (see [`check_with_env`]).
fn demo_tenant(data_dir: &Path, make: bool) -> Result<Tenant, ConfigError> {
    let secret = if make {
        demo_secret(data_dir)
    } else {
        demo::existing_demo_secret(data_dir).map(|found| found.unwrap_or_else(|| vec![b'0'; 64]))
    }
    .map_err(|source| ConfigError::DataDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let tenant = Tenant {
        id: TenantId::new(DEMO_TENANT),
        secret: secret.into(),
        anonymous_visitors: true,
        origins: Vec::new(),
        max_chats: DEFAULT_MAX_CHATS,
    };
    validate::check_tenant(&tenant).map_err(|(_, reason)| ConfigError::Invalid {
        key: "demo.secret".into(),
        origin: Some(Origin::File {
            path: data_dir.join(DEMO_SECRET_FILE),
            key: String::new(),
        }),
        reason,
    })?;
    Ok(tenant)
}

#[cfg(test)]
mod tests;
