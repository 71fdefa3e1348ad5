//! Fills a data directory with stored conversations, through the real
//! store API, so that the gateway's cold start can be timed on a big log.
//!
//! ```sh
//! cargo run --release --example fill_store -- /tmp/kefu-1m
//! target/release/kefu serve --data-dir /tmp/kefu-1m    # then time /health
//! ```
//!
//! It writes what the gateway itself writes for a conversation: the
//! visitor's first message, `queued`, `assigned`, then alternating visitor
//! and agent messages (each with its dedupe record), and, for all but
//! `--open` of them, `closed`; plus each conversation's state, the two
//! receipt cursors and the visitor's sticky agent. Entries go to the
//! zero-config tenant `demo` by default, so `kefu serve` with no config
//! file serves them. The directory must not hold a store yet.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use kefu::config::StoreSettings;
use kefu::conversation::visitor_placement;
use kefu::ids::{ConvId, Participant, Role, TenantId, UserId};
use kefu::model::{
    AgentRef, AuthorRole, ConvMeta, ConvState, DedupeHit, DedupeKey, Entry, Event, VisitorMeta,
};
use kefu::store::{CommitBatch, Op, SledStore, Store};

#[derive(Parser, Debug)]
#[command(about = "Fill a kefu data directory with stored conversations")]
struct Args {
    /// The data directory (`kefu serve --data-dir`); its `store/` must not exist yet.
    data_dir: PathBuf,
    /// Log entries to write in all.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Conversations to spread them over (one visitor each).
    #[arg(long, default_value_t = 50_000)]
    convs: u64,
    /// How many of the conversations stay open (assigned); the rest are closed.
    #[arg(long, default_value_t = 2_500)]
    open: u64,
    /// Agents serving them.
    #[arg(long, default_value_t = 200)]
    agents: u64,
    /// The tenant.
    #[arg(long, default_value = "demo")]
    tenant: String,
    /// Conversations per commit.
    #[arg(long, default_value_t = 100)]
    per_commit: u64,
}

fn main() {
    let args = Args::parse();
    assert!(args.convs > 0 && args.open <= args.convs);
    let per_conv = args.entries / args.convs;
    assert!(
        per_conv >= 4,
        "at least 4 entries per conversation (message, queued, assigned, closed)"
    );
    let dir = args.data_dir.join("store");
    assert!(
        !dir.exists(),
        "{} exists: fill a new data directory",
        dir.display()
    );
    std::fs::create_dir_all(&args.data_dir).expect("create the data directory");
    let store = SledStore::open(&dir, &StoreSettings::default()).expect("open the store");

    let tenant = TenantId::from(args.tenant.as_str());
    let text: Arc<str> = Arc::from("Hello, I ordered a pair of shoes last week and the tracking page has not moved since Tuesday.");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let started = Instant::now();
    let (mut written, mut dedupes, mut batch) = (0u64, 0u64, CommitBatch::default());
    for c in 0..args.convs {
        // Spread the leftover entries over the first conversations.
        let n = per_conv + u64::from(c < args.entries % args.convs);
        let open = c >= args.convs - args.open;
        let visitor = UserId::from(format!("v-{c:07}").as_str());
        let agent = AgentRef {
            id: UserId::from(format!("agent-{:04}", c % args.agents).as_str()),
            name: Some(Arc::from(format!("Agent {}", c % args.agents).as_str())),
        };
        let conv = ConvId::generate(visitor_placement(&tenant, &visitor));
        let t0 = now - (args.convs - c) * 1_000;
        let mut push = |seq: u64, author: AuthorRole, event: Option<Event>| {
            let (author_id, client_id, body) = match author {
                AuthorRole::System => (None, None, None),
                AuthorRole::Visitor => (
                    Some(visitor.clone()),
                    Some(format!("m-{seq}")),
                    Some(text.clone()),
                ),
                _ => (
                    Some(agent.id.clone()),
                    Some(format!("a-{c}-{seq}")),
                    Some(text.clone()),
                ),
            };
            if let (Some(id), Some(sender)) = (&client_id, &author_id) {
                let role = if author == AuthorRole::Visitor {
                    Role::Visitor
                } else {
                    Role::Agent
                };
                batch.ops.push(Op::Dedupe {
                    key: DedupeKey {
                        tenant: tenant.clone(),
                        sender: Participant {
                            role,
                            id: sender.clone(),
                        },
                        client_id: Arc::from(id.as_str()),
                    },
                    hit: DedupeHit {
                        conv: conv.clone(),
                        seq,
                    },
                });
                dedupes += 1;
            }
            batch.ops.push(Op::Entry {
                tenant: tenant.clone(),
                conv: conv.clone(),
                entry: Entry {
                    seq,
                    ts_ms: t0 + seq * 10,
                    author,
                    author_id,
                    author_name: (author == AuthorRole::Agent).then(|| agent.name.clone().unwrap()),
                    client_id: client_id.map(|s| Arc::from(s.as_str())),
                    text: body,
                    event,
                },
            });
        };
        push(1, AuthorRole::Visitor, None);
        push(2, AuthorRole::System, Some(Event::Queued));
        push(3, AuthorRole::System, Some(Event::Assigned(agent.clone())));
        let chat_until = if open { n } else { n - 1 };
        for seq in 4..=chat_until {
            let author = if seq % 2 == 0 {
                AuthorRole::Agent
            } else {
                AuthorRole::Visitor
            };
            push(seq, author, None);
        }
        if !open {
            push(
                n,
                AuthorRole::System,
                Some(Event::Closed(Some((AuthorRole::Agent, agent.id.clone())))),
            );
        }
        written += n;
        batch.ops.push(Op::Conv {
            tenant: tenant.clone(),
            conv: conv.clone(),
            meta: ConvMeta {
                visitor: visitor.clone(),
                visitor_name: None,
                state: if open {
                    ConvState::Assigned(agent.clone())
                } else {
                    ConvState::Closed
                },
                skill: None,
                lang: None,
                vip: false,
                created_ms: t0,
                queued_ms: t0 + 20,
                queue_front: false,
                excluded_agent: None,
                assigned_ms: t0 + 30,
                served_by: Some(agent.id.clone()),
            },
        });
        for (role, id) in [(Role::Visitor, &visitor), (Role::Agent, &agent.id)] {
            batch.ops.push(Op::Cursor {
                tenant: tenant.clone(),
                conv: conv.clone(),
                who: Participant {
                    role,
                    id: id.clone(),
                },
                seq: n,
            });
        }
        batch.ops.push(Op::Visitor {
            tenant: tenant.clone(),
            visitor,
            meta: VisitorMeta {
                last_agent: Some((agent.id.clone(), t0 + 30)),
            },
        });
        if (c + 1) % args.per_commit == 0 || c + 1 == args.convs {
            store
                .commit(&std::mem::take(&mut batch))
                .expect("commit a batch");
        }
        if (c + 1) % 10_000 == 0 {
            eprintln!(
                "{} conversations, {written} entries, {:.1} s",
                c + 1,
                started.elapsed().as_secs_f64()
            );
        }
    }
    let recovered = store.recover().expect("read back the open conversations");
    assert_eq!(recovered.convs.len() as u64, args.open);
    println!(
        "wrote {written} entries ({dedupes} with dedupe records) in {} conversations ({} open) to {} in {:.1} s",
        args.convs,
        args.open,
        dir.display(),
        started.elapsed().as_secs_f64()
    );
}
