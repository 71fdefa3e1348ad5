//! The effective settings as TOML, for `kefu check-config`.

use std::fmt::Write;

use super::Settings;

fn duration(d: std::time::Duration) -> String {
    humantime::format_duration(d).to_string()
}

fn quoted(s: &str) -> String {
    // TOML basic strings share JSON's escapes for what we print.
    serde_json::to_string(s).expect("a string serialises")
}

impl Settings {
    /// The settings as a TOML file that would load to the same settings,
    /// with every tenant's secret replaced by `"<redacted>"`.
    pub fn to_toml_redacted(&self) -> String {
        let mut out = String::new();
        let w = &mut out;
        let _ = writeln!(w, "listen = {}", quoted(&self.listen.to_string()));
        let _ = writeln!(
            w,
            "admin_listen = {}",
            quoted(&self.admin_listen.to_string())
        );
        let _ = writeln!(w, "shards = {}", self.shards);
        if let Some(cpus) = &self.cpus {
            let _ = writeln!(w, "cpus = {cpus:?}");
        }
        let _ = writeln!(
            w,
            "data_dir = {}",
            quoted(&self.data_dir.display().to_string())
        );
        let _ = writeln!(w, "agent_grace = {}", quoted(&duration(self.agent_grace)));
        let _ = writeln!(
            w,
            "drain_timeout = {}",
            quoted(&duration(self.drain_timeout))
        );
        let _ = writeln!(w, "log_format = {}", quoted(&self.log_format.to_string()));
        let l = &self.limits;
        let _ = writeln!(w, "\n[limits]");
        let _ = writeln!(w, "max_message_bytes = {}", l.max_message_bytes);
        let _ = writeln!(w, "max_text_bytes = {}", l.max_text_bytes);
        let _ = writeln!(w, "max_handshake_bytes = {}", l.max_handshake_bytes);
        let _ = writeln!(
            w,
            "handshake_timeout = {}",
            quoted(&duration(l.handshake_timeout))
        );
        let _ = writeln!(w, "hello_timeout = {}", quoted(&duration(l.hello_timeout)));
        let _ = writeln!(w, "outbound_limit_bytes = {}", l.outbound_limit_bytes);
        let _ = writeln!(w, "token_leeway = {}", quoted(&duration(l.token_leeway)));
        let _ = writeln!(w, "msg_rate_limit = {}", l.msg_rate_limit);
        let _ = writeln!(w, "idle_timeout = {}", quoted(&duration(l.idle_timeout)));
        let _ = writeln!(
            w,
            "max_connections_per_shard = {}",
            l.max_connections_per_shard
        );
        let _ = writeln!(w, "max_connections_per_ip = {}", l.max_connections_per_ip);
        let _ = writeln!(w, "\n[store]");
        let _ = writeln!(w, "cache_bytes = {}", self.store.cache_bytes);
        let mut tenants: Vec<_> = self.tenants.iter().collect();
        tenants.sort_by(|a, b| a.id.cmp(&b.id));
        for t in tenants {
            let _ = writeln!(w, "\n[[tenants]]");
            let _ = writeln!(w, "id = {}", quoted(t.id.as_str()));
            let _ = writeln!(w, "secret = \"<redacted>\"");
            let _ = writeln!(w, "anonymous_visitors = {}", t.anonymous_visitors);
            let origins: Vec<String> = t.origins.iter().map(|o| quoted(o)).collect();
            let _ = writeln!(w, "origins = [{}]", origins.join(", "));
            let _ = writeln!(w, "max_chats = {}", t.max_chats);
        }
        out
    }
}
