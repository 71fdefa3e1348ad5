//! Rendering shard snapshots in the Prometheus text format.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::{HandshakeFailure, HistogramSnapshot, ShardSnapshot};
use crate::protocol::ErrorCode;

/// Renders every shard's snapshot, plus process-wide numbers, as
/// OpenMetrics text (which Prometheus scrapes natively).
pub fn render(shards: &[ShardSnapshot]) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshots(shards.to_vec())));
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::text::encode(&mut out, &registry)
        .expect("writing to a String cannot fail");
    out
}

#[derive(Debug)]
struct Snapshots(Vec<ShardSnapshot>);

type Labels = Vec<(&'static str, String)>;

fn shard_label(s: &ShardSnapshot) -> Labels {
    vec![("shard", s.shard.to_string())]
}

fn with(mut labels: Labels, key: &'static str, value: impl Into<String>) -> Labels {
    labels.push((key, value.into()));
    labels
}

/// One metric family: a name, a help text and a type, then its series.
fn family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl FnOnce(&mut MetricEncoder) -> Result<(), std::fmt::Error>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    series(&mut metric)
}

fn counter(m: &mut MetricEncoder, labels: &Labels, v: u64) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?
        .encode_counter::<prometheus_client::encoding::NoLabelSet, u64, u64>(&v, None)
}

fn gauge(m: &mut MetricEncoder, labels: &Labels, v: i64) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?.encode_gauge(&v)
}

fn histogram(
    m: &mut MetricEncoder,
    labels: &Labels,
    h: &HistogramSnapshot,
) -> Result<(), std::fmt::Error> {
    m.encode_family(labels)?
        .encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            h.sum,
            h.count(),
            &h.per_bucket(),
            None,
        )
}

impl Collector for Snapshots {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shards = &self.0;
        let per_shard_counter =
            |e: &mut DescriptorEncoder, name: &str, help: &str, get: fn(&ShardSnapshot) -> u64| {
                family(e, name, help, MetricType::Counter, |m| {
                    shards
                        .iter()
                        .try_for_each(|s| counter(m, &shard_label(s), get(s)))
                })
            };
        let per_shard_gauge =
            |e: &mut DescriptorEncoder, name: &str, help: &str, get: fn(&ShardSnapshot) -> i64| {
                family(e, name, help, MetricType::Gauge, |m| {
                    shards
                        .iter()
                        .try_for_each(|s| gauge(m, &shard_label(s), get(s)))
                })
            };

        family(
            &mut e,
            "kefu_connections",
            "Open connections, by role (pending: before welcome).",
            MetricType::Gauge,
            |m| {
                shards.iter().try_for_each(|s| {
                    gauge(m, &with(shard_label(s), "role", "visitor"), s.visitors)?;
                    gauge(m, &with(shard_label(s), "role", "agent"), s.agents)?;
                    gauge(m, &with(shard_label(s), "role", "pending"), s.pending)
                })
            },
        )?;
        per_shard_counter(&mut e, "kefu_connects", "Connections accepted.", |s| {
            s.connects
        })?;
        per_shard_counter(&mut e, "kefu_disconnects", "Connections closed.", |s| {
            s.disconnects
        })?;
        family(
            &mut e,
            "kefu_handshake_failures",
            "Handshakes and hellos refused, by reason.",
            MetricType::Counter,
            |m| {
                shards.iter().try_for_each(|s| {
                    HandshakeFailure::ALL.iter().try_for_each(|r| {
                        counter(
                            m,
                            &with(shard_label(s), "reason", r.as_str()),
                            s.handshake_failures[*r as usize],
                        )
                    })
                })
            },
        )?;
        per_shard_counter(
            &mut e,
            "kefu_entries_appended",
            "Log entries made durable.",
            |s| s.entries_appended,
        )?;
        per_shard_counter(&mut e, "kefu_acks", "Acks sent.", |s| s.acks)?;
        per_shard_counter(
            &mut e,
            "kefu_duplicates",
            "Resent message ids answered without appending.",
            |s| s.duplicates,
        )?;
        per_shard_counter(
            &mut e,
            "kefu_dedupe_filter_skips",
            "New messages accepted without a dedupe lookup in the store.",
            |s| s.dedupe_filter_skips,
        )?;
        per_shard_counter(
            &mut e,
            "kefu_frames_out",
            "Frames queued to connections.",
            |s| s.frames_out,
        )?;
        family(
            &mut e,
            "kefu_errors",
            "Error frames sent, by code.",
            MetricType::Counter,
            |m| {
                shards.iter().try_for_each(|s| {
                    ErrorCode::ALL.iter().try_for_each(|c| {
                        counter(
                            m,
                            &with(shard_label(s), "code", c.as_str()),
                            s.errors[c.index()],
                        )
                    })
                })
            },
        )?;
        per_shard_counter(
            &mut e,
            "kefu_commit_failures",
            "Group commits that failed.",
            |s| s.commit_failures,
        )?;
        family(
            &mut e,
            "kefu_commit_batch_entries",
            "Entries per group commit.",
            MetricType::Histogram,
            |m| {
                shards
                    .iter()
                    .try_for_each(|s| histogram(m, &shard_label(s), &s.commit_entries))
            },
        )?;
        family(
            &mut e,
            "kefu_commit_phase_seconds",
            "Time spent in each phase of the successful group commits: apply (encode and sled apply_batch), flush (sled writes its log), sync (fdatasync).",
            MetricType::Counter,
            |m| {
                shards.iter().try_for_each(|s| {
                    crate::metrics::COMMIT_PHASES
                        .iter()
                        .zip(s.commit_phase_micros)
                        .try_for_each(|(phase, micros)| {
                            m.encode_family(&with(shard_label(s), "phase", *phase))?
                                .encode_counter::<prometheus_client::encoding::NoLabelSet, f64, u64>(
                                    &(micros as f64 / 1e6),
                                    None,
                                )
                        })
                })
            },
        )?;
        family(
            &mut e,
            "kefu_flush_seconds",
            "Group commit latency: sled apply, flush and fdatasync.",
            MetricType::Histogram,
            |m| {
                shards
                    .iter()
                    .try_for_each(|s| histogram(m, &shard_label(s), &s.commit_seconds))
            },
        )?;
        per_shard_counter(
            &mut e,
            "kefu_slow_consumers",
            "Connections dropped for not reading.",
            |s| s.slow_consumers,
        )?;
        per_shard_counter(
            &mut e,
            "kefu_connection_panics",
            "Panics caught while handling a connection.",
            |s| s.panics,
        )?;
        per_shard_counter(
            &mut e,
            "kefu_shard_panics",
            "Panics caught while handling a message between shards.",
            |s| s.shard_panics,
        )?;
        per_shard_counter(
            &mut e,
            "kefu_idle_timeouts",
            "Connections dropped after a ping went unanswered.",
            |s| s.idle_timeouts,
        )?;
        per_shard_counter(
            &mut e,
            "kefu_mesh_messages",
            "Messages sent between shards.",
            |s| s.mesh_sent,
        )?;
        per_shard_counter(
            &mut e,
            "kefu_mesh_batches",
            "Batches moved into cross-shard rings.",
            |s| s.mesh_batches,
        )?;
        per_shard_counter(
            &mut e,
            "kefu_mesh_ring_full",
            "Times a cross-shard ring was full.",
            |s| s.mesh_ring_full,
        )?;
        per_shard_gauge(
            &mut e,
            "kefu_mesh_backlog",
            "Messages waiting in outboxes.",
            |s| s.mesh_backlog as i64,
        )?;
        per_shard_gauge(
            &mut e,
            "kefu_conversations_open",
            "Open conversations owned.",
            |s| s.conversations as i64,
        )?;
        per_shard_gauge(
            &mut e,
            "kefu_append_pending",
            "Entries waiting for the next group commit.",
            |s| s.append_pending as i64,
        )?;

        let tenants = || shards.iter().flat_map(|s| s.tenants.iter());
        let tenant_label =
            |t: &super::TenantSnapshot| -> Labels { vec![("tenant", t.tenant.clone())] };
        family(
            &mut e,
            "kefu_queue_length",
            "Conversations waiting for an agent.",
            MetricType::Gauge,
            |m| tenants().try_for_each(|t| gauge(m, &tenant_label(t), t.queue_len as i64)),
        )?;
        family(
            &mut e,
            "kefu_agents",
            "Agents by status (grace: disconnected, conversations kept).",
            MetricType::Gauge,
            |m| {
                tenants().try_for_each(|t| {
                    gauge(
                        m,
                        &with(tenant_label(t), "status", "online"),
                        t.agents_online as i64,
                    )?;
                    gauge(
                        m,
                        &with(tenant_label(t), "status", "away"),
                        t.agents_away as i64,
                    )?;
                    gauge(
                        m,
                        &with(tenant_label(t), "status", "grace"),
                        t.agents_in_grace as i64,
                    )
                })
            },
        )?;
        family(
            &mut e,
            "kefu_conversations_assigned",
            "Open conversations assigned to an agent.",
            MetricType::Gauge,
            |m| tenants().try_for_each(|t| gauge(m, &tenant_label(t), t.assigned as i64)),
        )?;
        family(
            &mut e,
            "kefu_assignments",
            "Conversations assigned by routing.",
            MetricType::Counter,
            |m| tenants().try_for_each(|t| counter(m, &tenant_label(t), t.assignments)),
        )?;
        family(
            &mut e,
            "kefu_queue_wait_seconds",
            "Time conversations waited in the queue before their assignment.",
            MetricType::Histogram,
            |m| tenants().try_for_each(|t| histogram(m, &tenant_label(t), &t.queue_wait_seconds)),
        )?;

        family(
            &mut e,
            "kefu_config_reloads",
            "SIGHUP reloads of the tenants, by result (failed: the file did not load; nothing changed).",
            MetricType::Counter,
            |m| {
                use std::sync::atomic::Ordering::Relaxed;
                let result = |r: &str| vec![("result", r.to_owned())];
                counter(m, &result("ok"), super::RELOADS_OK.load(Relaxed))?;
                counter(m, &result("failed"), super::RELOADS_FAILED.load(Relaxed))
            },
        )?;
        family(
            &mut e,
            "kefu_store_writable",
            "1 while the store takes commits; 0 while it is stopped after a failed write (a full disk, an I/O error), when messages get `unavailable` until it reopens by itself.",
            MetricType::Gauge,
            |m| m.encode_gauge(&i64::from(shards.iter().all(|s| s.store_writable))),
        )?;
        let (rss, fds) = process_numbers();
        family(
            &mut e,
            "kefu_process_resident_memory_bytes",
            "Resident set size.",
            MetricType::Gauge,
            |m| m.encode_gauge(&(rss as i64)),
        )?;
        family(
            &mut e,
            "kefu_process_open_fds",
            "Open file descriptors.",
            MetricType::Gauge,
            |m| m.encode_gauge(&(fds as i64)),
        )?;
        Ok(())
    }
}

/// (resident bytes, open fds) of this process, from /proc.
pub fn process_numbers() -> (u64, u64) {
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page_size())
        .unwrap_or(0);
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    (rss, fds)
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

// `EncodeMetric` is implemented by the collector's helpers above; this keeps
// the trait in scope for readers looking for how metrics are encoded.
#[allow(dead_code)]
fn _uses(_: &dyn EncodeMetric) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family_once_with_shard_labels() {
        let mut a = ShardSnapshot {
            shard: 0,
            entries_appended: 7,
            ..Default::default()
        };
        a.commit_seconds = crate::metrics::Histogram::new(crate::metrics::FLUSH_SECONDS).snapshot();
        a.tenants.push(crate::metrics::TenantSnapshot {
            tenant: "acme".into(),
            queue_len: 3,
            ..Default::default()
        });
        let b = ShardSnapshot {
            shard: 1,
            entries_appended: 5,
            ..Default::default()
        };
        let text = render(&[a, b]);
        assert!(
            text.contains("kefu_entries_appended_total{shard=\"0\"} 7"),
            "{text}"
        );
        assert!(text.contains("kefu_entries_appended_total{shard=\"1\"} 5"));
        assert!(text.contains("kefu_queue_length{tenant=\"acme\"} 3"));
        assert_eq!(
            text.matches("# TYPE kefu_flush_seconds histogram").count(),
            1
        );
        assert!(text.contains("kefu_process_resident_memory_bytes "));
    }

    #[test]
    fn histograms_render_cumulative_buckets_once_and_plus_inf() {
        let h = crate::metrics::Histogram::new(crate::metrics::BATCH_ENTRIES);
        for v in [1.0, 3.0, 3.0, 2048.0, 10_000.0] {
            h.observe(v);
        }
        let s = ShardSnapshot {
            shard: 0,
            commit_entries: h.snapshot(),
            ..Default::default()
        };
        let text = render(&[s]);
        let bucket = |le: &str| -> u64 {
            let prefix = format!("kefu_commit_batch_entries_bucket{{le=\"{le}\",shard=\"0\"}} ");
            let line = text
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("{prefix} in\n{text}"));
            line[prefix.len()..].trim().parse().unwrap()
        };
        assert_eq!(bucket("1.0"), 1);
        assert_eq!(bucket("4.0"), 3);
        assert_eq!(bucket("2048.0"), 4);
        assert_eq!(bucket("4096.0"), 4);
        assert_eq!(bucket("+Inf"), 5);
        assert!(text.contains("kefu_commit_batch_entries_count{shard=\"0\"} 5"));
    }
}
