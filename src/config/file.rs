//! The TOML config file: its schema, and reading it into that schema.
//!
//! Every table refuses keys it does not know, so that a typo
//! (`max_chat = 3`) is an error at start rather than a silent default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::values::{opt_duration, ByteSize, CpuList};
use super::{ConfigError, LogFormat, DEFAULT_MAX_CHATS};

/// The whole file. Top-level keys mirror the flags of `kefu serve`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub shards: Option<usize>,
    pub cpus: Option<CpuList>,
    pub data_dir: Option<PathBuf>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub agent_grace: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub drain_timeout: Option<Duration>,
    pub log_format: Option<LogFormat>,
    #[serde(default)]
    pub limits: FileLimits,
    #[serde(default)]
    pub store: FileStore,
    #[serde(default)]
    pub tenants: Vec<FileTenant>,
}

/// `[limits]`: the names of the fields of `Limits`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileLimits {
    pub max_message_bytes: Option<ByteSize>,
    pub max_text_bytes: Option<ByteSize>,
    pub max_handshake_bytes: Option<ByteSize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub handshake_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub hello_timeout: Option<Duration>,
    pub outbound_limit_bytes: Option<ByteSize>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub token_leeway: Option<Duration>,
    pub msg_rate_limit: Option<u32>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    pub max_connections_per_shard: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
}

/// `[store]`: the names of the fields of `StoreSettings`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileStore {
    pub cache_bytes: Option<ByteSize>,
}

/// One `[[tenants]]` entry, as PROTOCOL.md shows it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FileTenant {
    pub id: String,
    pub secret: String,
    #[serde(default)]
    pub anonymous_visitors: bool,
    #[serde(default)]
    pub origins: Vec<String>,
    #[serde(default = "default_max_chats")]
    pub max_chats: u32,
}

fn default_max_chats() -> u32 {
    DEFAULT_MAX_CHATS
}

/// Reads and parses the file at `path`.
pub(crate) fn read(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Parses `text`, the content of the file at `path` (named in errors).
pub(crate) fn parse(path: &Path, text: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (line, column) = e
            .span()
            .map(|span| line_col(text, span.start))
            .unwrap_or((0, 0));
        ConfigError::File {
            path: path.to_owned(),
            line,
            column,
            message: e.message().trim().to_owned(),
        }
    })
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit_once('\n')
        .map_or(before, |(_, last)| last)
        .chars()
        .count()
        + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("abc", 0), (1, 1));
        assert_eq!(line_col("abc\ndef", 5), (2, 2));
        assert_eq!(line_col("a\n\nx", 3), (3, 1));
    }
}
