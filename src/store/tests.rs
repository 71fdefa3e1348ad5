//! Tests of the store on real sled databases in temporary directories.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::sled_store::{open_sled, sled_config};
use super::test_tmpfs::Tmpfs;
use super::*;
use crate::config::StoreSettings;
use crate::ids::Role;
use crate::model::{AgentRef, AuthorRole, ConvState, Event};

fn settings() -> StoreSettings {
    StoreSettings {
        cache_bytes: 16 * 1024 * 1024,
    }
}

fn open(dir: &Path) -> SledStore {
    SledStore::open(dir, &settings()).expect("open store")
}

fn t(s: &str) -> TenantId {
    TenantId::from(s)
}

fn c(s: &str) -> ConvId {
    ConvId::from(s)
}

fn visitor(id: &str) -> Participant {
    Participant {
        role: Role::Visitor,
        id: UserId::from(id),
    }
}

fn agent(id: &str) -> Participant {
    Participant {
        role: Role::Agent,
        id: UserId::from(id),
    }
}

fn chat(seq: u64, from: &Participant, client_id: &str, text: &str) -> Entry {
    Entry {
        seq,
        ts_ms: 1_732_280_000_000 + seq,
        author: from.role.into(),
        author_id: Some(from.id.clone()),
        author_name: Some("Ann".into()),
        client_id: Some(client_id.into()),
        text: Some(text.into()),
        event: None,
    }
}

fn system(seq: u64, event: Event) -> Entry {
    Entry {
        seq,
        ts_ms: 1_732_280_000_000 + seq,
        author: AuthorRole::System,
        author_id: None,
        author_name: None,
        client_id: None,
        text: None,
        event: Some(event),
    }
}

fn meta(visitor: &str, state: ConvState) -> ConvMeta {
    ConvMeta {
        visitor: UserId::from(visitor),
        visitor_name: None,
        state,
        skill: None,
        lang: None,
        vip: false,
        created_ms: 1,
        queued_ms: 2,
        queue_front: false,
        excluded_agent: None,
        assigned_ms: 0,
        served_by: None,
    }
}

fn assigned(id: &str) -> ConvState {
    ConvState::Assigned(AgentRef {
        id: UserId::from(id),
        name: Some("Alice".into()),
    })
}

fn entry_op(tenant: &str, conv: &str, entry: Entry) -> Op {
    Op::Entry {
        tenant: t(tenant),
        conv: c(conv),
        entry,
    }
}

fn conv_op(tenant: &str, conv: &str, meta: ConvMeta) -> Op {
    Op::Conv {
        tenant: t(tenant),
        conv: c(conv),
        meta,
    }
}

fn commit(store: &impl Store, ops: Vec<Op>) -> CommitStats {
    store.commit(&CommitBatch { ops }).expect("commit")
}

/// `n` chat entries `from..from + n` of conversation `conv`.
fn chats(tenant: &str, conv: &str, from: u64, n: u64) -> Vec<Op> {
    (from..from + n)
        .map(|seq| {
            let text = format!("message {seq}");
            entry_op(
                tenant,
                conv,
                chat(seq, &visitor("v-1"), &format!("m-{seq}"), &text),
            )
        })
        .collect()
}

fn read_after(
    store: &impl Store,
    tenant: &str,
    conv: &str,
    after: u64,
    limit: usize,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let n = store
        .read_entries(&t(tenant), &c(conv), after, limit, &mut |e| {
            out.push(e.to_entry())
        })
        .expect("read_entries");
    assert_eq!(n, out.len());
    out
}

fn read_before(
    store: &impl Store,
    tenant: &str,
    conv: &str,
    before: u64,
    limit: usize,
) -> (Vec<u64>, bool) {
    let mut seqs = Vec::new();
    let more = store
        .read_entries_before(&t(tenant), &c(conv), before, limit, &mut |e| {
            seqs.push(e.seq)
        })
        .expect("read_entries_before");
    (seqs, more)
}

fn seqs(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.seq).collect()
}

fn dedupe_key(tenant: &str, sender: Participant, client_id: &str) -> DedupeKey {
    DedupeKey {
        tenant: t(tenant),
        sender,
        client_id: client_id.into(),
    }
}

#[test]
fn errors_cross_threads() {
    fn assert_send_sync_static<T: Send + Sync + 'static>() {}
    assert_send_sync_static::<StoreError>();
    assert_send_sync_static::<SledStore>();
    assert_send_sync_static::<FaultyStore<SledStore>>();
    let _: Arc<dyn Store> = Arc::new(FaultyStore::new(
        Arc::new(open(tempfile::tempdir().unwrap().path())) as Arc<dyn Store>,
        FaultSwitch::default(),
    ));
}

#[test]
fn committed_entries_read_back_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut ops = vec![
        entry_op("acme", "c-1", system(1, Event::Queued)),
        entry_op(
            "acme",
            "c-1",
            system(
                2,
                Event::Assigned(AgentRef {
                    id: UserId::from("alice"),
                    name: Some("Alice".into()),
                }),
            ),
        ),
    ];
    ops.extend(chats("acme", "c-1", 3, 7));
    ops.push(entry_op(
        "acme",
        "c-1",
        system(
            10,
            Event::Closed(Some((AuthorRole::Agent, UserId::from("alice")))),
        ),
    ));
    let expected: Vec<Entry> = ops
        .iter()
        .map(|op| match op {
            Op::Entry { entry, .. } => entry.clone(),
            _ => unreachable!(),
        })
        .collect();
    // Committed out of order within the batch: the keys sort them.
    ops.reverse();
    let stats = commit(&store, ops);
    assert_eq!((stats.ops, stats.entries), (10, 10));
    assert!(stats.bytes > 0);

    assert_eq!(read_after(&store, "acme", "c-1", 0, 100), expected);
    assert_eq!(seqs(&read_after(&store, "acme", "c-1", 3, 4)), [4, 5, 6, 7]);
    assert_eq!(seqs(&read_after(&store, "acme", "c-1", 9, 4)), [10]);
    assert!(read_after(&store, "acme", "c-1", 10, 4).is_empty());
    assert!(read_after(&store, "acme", "c-1", 0, 0).is_empty());
    assert!(read_after(&store, "acme", "c-1", u64::MAX, 5).is_empty());
    assert!(read_after(&store, "acme", "c-2", 0, 5).is_empty());

    assert_eq!(
        read_before(&store, "acme", "c-1", u64::MAX, 3),
        (vec![8, 9, 10], true)
    );
    assert_eq!(
        read_before(&store, "acme", "c-1", u64::MAX, 100),
        ((1..=10).collect(), false)
    );
    assert_eq!(
        read_before(&store, "acme", "c-1", 4, 10),
        (vec![1, 2, 3], false)
    );
    assert_eq!(
        read_before(&store, "acme", "c-1", 4, 3),
        (vec![1, 2, 3], false)
    );
    assert_eq!(
        read_before(&store, "acme", "c-1", 5, 3),
        (vec![2, 3, 4], true)
    );
    assert_eq!(read_before(&store, "acme", "c-1", 1, 3), (vec![], false));
    assert_eq!(read_before(&store, "acme", "c-1", 0, 3), (vec![], false));
    assert_eq!(read_before(&store, "acme", "c-1", 5, 0), (vec![], true));
    assert_eq!(
        read_before(&store, "acme", "c-2", u64::MAX, 3),
        (vec![], false)
    );
}

#[test]
fn dedupe_lookups_hit_only_the_same_tenant_role_and_sender() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let hit = DedupeHit {
        conv: c("c-9"),
        seq: 13,
    };
    commit(
        &store,
        vec![Op::Dedupe {
            key: dedupe_key("acme", visitor("v-1"), "m-42"),
            hit: hit.clone(),
        }],
    );
    let found = store
        .lookup_dedupe(&[
            dedupe_key("acme", visitor("v-1"), "m-42"),
            dedupe_key("acme", visitor("v-1"), "m-43"),
            dedupe_key("acme2", visitor("v-1"), "m-42"),
            dedupe_key("acm", visitor("v-1"), "m-42"),
            dedupe_key("acme", agent("v-1"), "m-42"),
            dedupe_key("acme", visitor("v-2"), "m-42"),
            dedupe_key("acme", visitor("v-1"), "m-4"),
            dedupe_key("acme", visitor("v-1"), "m-42\0"),
        ])
        .unwrap();
    assert_eq!(found[0], Some(hit));
    assert!(found[1..].iter().all(Option::is_none), "{found:?}");
    assert!(store.lookup_dedupe(&[]).unwrap().is_empty());
}

#[test]
fn conversation_state_round_trips_in_every_state() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let full = ConvMeta {
        visitor: UserId::from("v-1"),
        visitor_name: Some("Ann".into()),
        state: ConvState::Queued,
        skill: Some("billing".into()),
        lang: Some("zh".into()),
        vip: true,
        created_ms: 10,
        queued_ms: 20,
        queue_front: true,
        excluded_agent: Some(UserId::from("bob")),
        assigned_ms: 30,
        served_by: Some(UserId::from("carol")),
    };
    for state in [
        ConvState::Queued,
        assigned("alice"),
        ConvState::Assigned(AgentRef {
            id: UserId::from("bob"),
            name: None,
        }),
        ConvState::Closed,
    ] {
        for m in [
            ConvMeta {
                state: state.clone(),
                ..full.clone()
            },
            meta("v-2", state.clone()),
        ] {
            commit(&store, vec![conv_op("acme", "c-1", m.clone())]);
            assert_eq!(store.conv(&t("acme"), &c("c-1")).unwrap(), Some(m));
        }
    }
    assert_eq!(store.conv(&t("acme"), &c("c-2")).unwrap(), None);
    assert_eq!(store.conv(&t("acm"), &c("c-1")).unwrap(), None);
}

#[test]
fn recover_finds_open_conversations_cursors_and_visitors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Neighbouring ids whose bytes are prefixes of one another.
    let convs = [
        ("a", "c-1", 3),
        ("a", "c-10", 12),
        ("ab", "c-1", 5),
        ("a", "c-2", 0),
    ];
    for (tenant, conv, n) in convs {
        let mut ops = vec![conv_op(tenant, conv, meta("v-1", ConvState::Queued))];
        ops.extend(chats(tenant, conv, 1, n));
        commit(&store, ops);
    }
    // A second commit to c-1 extends its log.
    commit(&store, chats("a", "c-1", 4, 2));
    commit(
        &store,
        vec![
            conv_op("a", "c-10", meta("v-1", assigned("alice"))),
            Op::Cursor {
                tenant: t("a"),
                conv: c("c-10"),
                who: visitor("v-1"),
                seq: 7,
            },
            Op::Cursor {
                tenant: t("a"),
                conv: c("c-10"),
                who: agent("alice"),
                seq: 12,
            },
            Op::Cursor {
                tenant: t("a"),
                conv: c("c-1"),
                who: visitor("v-1"),
                seq: 2,
            },
            Op::Visitor {
                tenant: t("a"),
                visitor: UserId::from("v-1"),
                meta: VisitorMeta {
                    last_agent: Some((UserId::from("alice"), 99)),
                },
            },
            Op::Visitor {
                tenant: t("ab"),
                visitor: UserId::from("v-1"),
                meta: VisitorMeta::default(),
            },
        ],
    );
    // Closed conversations are not recovered, whether closed at creation or later.
    commit(
        &store,
        vec![conv_op("a", "c-3", meta("v-3", ConvState::Closed))],
    );
    commit(
        &store,
        vec![conv_op("ab", "c-1", meta("v-1", ConvState::Closed))],
    );
    // A cursor moved twice: the last value counts.
    commit(
        &store,
        vec![Op::Cursor {
            tenant: t("a"),
            conv: c("c-10"),
            who: visitor("v-1"),
            seq: 9,
        }],
    );

    let recovered = store.recover().unwrap();
    let summary: Vec<_> = recovered
        .convs
        .iter()
        .map(|r| {
            (
                r.tenant.as_str(),
                r.conv.as_str(),
                r.last_seq,
                r.meta.state.as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a", "c-1", 5, "queued"),
            ("a", "c-10", 12, "assigned"),
            ("a", "c-2", 0, "queued"),
        ]
    );
    assert_eq!(recovered.convs[0].cursors, [(visitor("v-1"), 2)]);
    let mut cursors = recovered.convs[1].cursors.clone();
    cursors.sort_by_key(|(_, seq)| *seq);
    assert_eq!(cursors, [(visitor("v-1"), 9), (agent("alice"), 12)]);
    assert!(recovered.convs[2].cursors.is_empty());
    assert_eq!(recovered.convs[1].meta, meta("v-1", assigned("alice")));
    assert_eq!(
        recovered.visitors,
        [
            (
                t("a"),
                UserId::from("v-1"),
                VisitorMeta {
                    last_agent: Some((UserId::from("alice"), 99)),
                }
            ),
            (t("ab"), UserId::from("v-1"), VisitorMeta::default()),
        ]
    );
    // A closed conversation keeps its state and log.
    assert_eq!(
        store.conv(&t("ab"), &c("c-1")).unwrap().map(|m| m.state),
        Some(ConvState::Closed)
    );
    assert_eq!(read_after(&store, "ab", "c-1", 0, 100).len(), 5);
}

#[test]
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let before = {
        let store = open(dir.path());
        let mut ops = vec![conv_op("acme", "c-1", meta("v-1", ConvState::Queued))];
        ops.extend(chats("acme", "c-1", 1, 20));
        ops.push(Op::Dedupe {
            key: dedupe_key("acme", visitor("v-1"), "m-1"),
            hit: DedupeHit {
                conv: c("c-1"),
                seq: 1,
            },
        });
        commit(&store, ops);
        (
            read_after(&store, "acme", "c-1", 0, 100),
            store.recover().unwrap(),
        )
    };
    let store = open(dir.path());
    assert_eq!(read_after(&store, "acme", "c-1", 0, 100), before.0);
    assert_eq!(store.recover().unwrap(), before.1);
    assert_eq!(before.1.convs[0].last_seq, 20);
    assert!(store
        .lookup_dedupe(&[dedupe_key("acme", visitor("v-1"), "m-1")])
        .unwrap()[0]
        .is_some());
    // And it still takes commits.
    commit(&store, chats("acme", "c-1", 21, 1));
    assert_eq!(store.recover().unwrap().convs[0].last_seq, 21);
}

#[test]
fn other_schema_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    {
        let db = open_sled(&sled_config(dir.path(), &settings())).unwrap();
        db.insert(super::keys::SCHEMA_KEY, &999u32.to_be_bytes())
            .unwrap();
        db.flush().unwrap();
    }
    match SledStore::open(dir.path(), &settings()) {
        Err(StoreError::SchemaMismatch {
            found: Some(999),
            expected: SCHEMA_VERSION,
        }) => {}
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("opened a store of another schema"),
    }

    // A database with data but no version is not ours either.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_sled(&sled_config(dir.path(), &settings())).unwrap();
        db.insert(b"something", b"else").unwrap();
        db.flush().unwrap();
    }
    assert!(matches!(
        SledStore::open(dir.path(), &settings()),
        Err(StoreError::SchemaMismatch { found: None, .. })
    ));
}

#[test]
fn invalid_batches_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let nul = chats("acme", "c-1\0x", 1, 1).pop().unwrap();
    let too_big = entry_op(
        "acme",
        "c-1",
        chat(2, &visitor("v-1"), "m-2", &"x".repeat(MAX_RECORD_BYTES)),
    );
    let seq_zero = chats("acme", "c-1", 0, 1).pop().unwrap();
    let bad_cursor = Op::Cursor {
        tenant: t("acme"),
        conv: c("c-1"),
        who: visitor("v\0"),
        seq: 1,
    };
    for bad in [nul, too_big, seq_zero, bad_cursor] {
        let mut ops = chats("acme", "c-1", 1, 1);
        ops.push(conv_op("acme", "c-1", meta("v-1", ConvState::Queued)));
        ops.push(bad);
        let err = store.commit(&CommitBatch { ops }).unwrap_err();
        assert!(matches!(err, StoreError::Invalid { .. }), "{err}");
        assert!(read_after(&store, "acme", "c-1", 0, 10).is_empty());
        assert_eq!(store.recover().unwrap(), Recovered::default());
    }
    // Ids that cannot be stored are simply not found.
    assert!(read_after(&store, "acme", "c-1\0x", 0, 10).is_empty());
    assert_eq!(
        read_before(&store, "acme\0", "c-1", u64::MAX, 10),
        (vec![], false)
    );
    assert_eq!(store.conv(&t("acme"), &c("c-1\0")).unwrap(), None);
    // The store is still usable.
    commit(&store, chats("acme", "c-1", 1, 1));
    assert_eq!(read_after(&store, "acme", "c-1", 0, 10).len(), 1);
    // An empty batch is a no-op.
    assert_eq!(commit(&store, vec![]).ops, 0);
}

fn blob_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("blobs")).map_or(0, |d| d.count())
}

#[test]
fn large_entries_never_go_to_blob_files() {
    let text = "é".repeat(32 * 1024); // 64 KiB of UTF-8
    let big = |seq| chat(seq, &visitor("v-1"), &format!("m-{seq}"), &text);
    // Enough commits to the same leaves to trigger consolidations and splits.
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for round in 0..12 {
        let ops = (1..=5)
            .map(|i| entry_op("acme", "c-1", big(round * 5 + i)))
            .collect();
        commit(&store, ops);
    }
    assert_eq!(read_after(&store, "acme", "c-1", 0, 100).len(), 60);
    drop(store);
    assert_eq!(blob_files(dir.path()), 0);
    let store = open(dir.path());
    assert_eq!(store.recover().unwrap(), Recovered::default());
    assert_eq!(read_after(&store, "acme", "c-1", 59, 100)[0], big(60));

    // The control: sled's default segment size would have put these in blobs.
    let dir = tempfile::tempdir().unwrap();
    let db = sled::Config::new().path(dir.path()).open().unwrap();
    for seq in 1..=60u64 {
        let value = records::encode(&records::EntryRecord::from(&big(seq))).unwrap();
        db.insert(keys::entry_key(&t("acme"), &c("c-1"), seq), &value[..])
            .unwrap();
    }
    db.flush().unwrap();
    assert!(blob_files(dir.path()) > 0);
}

#[test]
fn faulty_store_fails_on_demand_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let switch = FaultSwitch::new(FaultMode::Healthy);
    let store = FaultyStore::new(open(dir.path()), switch.clone());
    commit(&store, chats("acme", "c-1", 1, 2));

    switch.set(FaultMode::FailCommits);
    assert_eq!(store.switch().get(), FaultMode::FailCommits);
    let mut ops = chats("acme", "c-1", 3, 1);
    ops.push(conv_op("acme", "c-1", meta("v-1", ConvState::Queued)));
    let err = store.commit(&CommitBatch { ops: ops.clone() }).unwrap_err();
    assert!(
        matches!(err, StoreError::Injected { op: "commit" }),
        "{err}"
    );
    // Reads pass, and show nothing of the failed batch.
    assert_eq!(seqs(&read_after(&store, "acme", "c-1", 0, 10)), [1, 2]);
    assert_eq!(
        seqs(&read_after(store.inner(), "acme", "c-1", 0, 10)),
        [1, 2]
    );
    assert_eq!(store.recover().unwrap(), Recovered::default());

    switch.set(FaultMode::FailAll);
    assert!(store.recover().is_err());
    assert!(store.conv(&t("acme"), &c("c-1")).is_err());
    assert!(store.lookup_dedupe(&[]).is_err());
    assert!(store
        .read_entries(&t("acme"), &c("c-1"), 0, 10, &mut |_| {})
        .is_err());
    assert!(store
        .read_entries_before(&t("acme"), &c("c-1"), u64::MAX, 10, &mut |_| {})
        .is_err());
    assert!(store.commit(&CommitBatch { ops: ops.clone() }).is_err());

    // Healthy again: the same seqs can be reused.
    switch.set(FaultMode::Healthy);
    commit(&store, ops);
    assert_eq!(seqs(&read_after(&store, "acme", "c-1", 0, 10)), [1, 2, 3]);
    assert_eq!(store.recover().unwrap().convs[0].last_seq, 3);
}

#[test]
fn a_failed_sync_is_undone_and_stops_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // Stopped until told to reopen (the disk here is fine, so a call
    // would otherwise reopen it at once).
    store.manual_reopen.store(true, Ordering::SeqCst);
    let key = dedupe_key("acme", visitor("v-1"), "m-1");
    let key3 = dedupe_key("acme", visitor("v-1"), "m-3");
    let mut ops = vec![conv_op("acme", "c-1", meta("v-1", ConvState::Queued))];
    ops.extend(chats("acme", "c-1", 1, 2));
    ops.push(Op::Dedupe {
        key: key.clone(),
        hit: DedupeHit {
            conv: c("c-1"),
            seq: 1,
        },
    });
    ops.push(Op::Cursor {
        tenant: t("acme"),
        conv: c("c-1"),
        who: visitor("v-1"),
        seq: 2,
    });
    commit(&store, ops);
    let good = store.recover().unwrap();

    store.fail_next_sync.store(true, Ordering::SeqCst);
    let mut ops = vec![conv_op("acme", "c-1", meta("v-1", assigned("alice")))];
    ops.extend(chats("acme", "c-1", 3, 1));
    ops.push(Op::Dedupe {
        key: key3.clone(),
        hit: DedupeHit {
            conv: c("c-1"),
            seq: 3,
        },
    });
    ops.push(Op::Cursor {
        tenant: t("acme"),
        conv: c("c-1"),
        who: visitor("v-1"),
        seq: 3,
    });
    ops.push(Op::Visitor {
        tenant: t("acme"),
        visitor: UserId::from("v-1"),
        meta: VisitorMeta {
            last_agent: Some((UserId::from("alice"), 5)),
        },
    });
    ops.push(conv_op("acme", "c-2", meta("v-2", ConvState::Queued)));
    let err = store.commit(&CommitBatch { ops }).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Io {
                op: "fdatasync",
                ..
            }
        ),
        "{err}"
    );

    // Nothing of the failed batch is visible; reads still work.
    assert_eq!(store.recover().unwrap(), good);
    assert_eq!(seqs(&read_after(&store, "acme", "c-1", 0, 10)), [1, 2]);
    let found = store.lookup_dedupe(&[key, key3]).unwrap();
    assert!(found[0].is_some() && found[1].is_none());
    assert_eq!(store.conv(&t("acme"), &c("c-2")).unwrap(), None);
    // No more commits.
    assert!(matches!(
        store.commit(&CommitBatch {
            ops: chats("acme", "c-1", 3, 1)
        }),
        Err(StoreError::Stopped)
    ));
    drop(store);

    // After a restart the failed batch is wholly there or wholly absent.
    let store = open(dir.path());
    let recovered = store.recover().unwrap();
    let entries = read_after(&store, "acme", "c-1", 0, 10).len();
    if recovered == good {
        assert_eq!(entries, 2);
    } else {
        assert_eq!(
            (recovered.convs.len(), recovered.convs[0].last_seq, entries),
            (2, 3, 3)
        );
        assert_eq!(recovered.visitors.len(), 1);
    }
}

/// A conversation with two durable entries (one of them with a dedupe
/// record) and a cursor, then a failed commit of entry 3 (with its dedupe
/// record, a new state, a cursor, a visitor record and a second
/// conversation). Returns what `recover` showed before the failure.
fn commit_then_fail_a_sync(store: &SledStore) -> Recovered {
    let mut ops = vec![conv_op("acme", "c-1", meta("v-1", ConvState::Queued))];
    ops.extend(chats("acme", "c-1", 1, 2));
    ops.push(Op::Dedupe {
        key: dedupe_key("acme", visitor("v-1"), "m-1"),
        hit: DedupeHit {
            conv: c("c-1"),
            seq: 1,
        },
    });
    ops.push(Op::Cursor {
        tenant: t("acme"),
        conv: c("c-1"),
        who: visitor("v-1"),
        seq: 2,
    });
    commit(store, ops);
    let good = store.recover().unwrap();

    store.fail_next_sync.store(true, Ordering::SeqCst);
    let mut ops = vec![conv_op("acme", "c-1", meta("v-1", assigned("alice")))];
    ops.extend(chats("acme", "c-1", 3, 1));
    ops.push(Op::Dedupe {
        key: dedupe_key("acme", visitor("v-1"), "m-3"),
        hit: DedupeHit {
            conv: c("c-1"),
            seq: 3,
        },
    });
    ops.push(Op::Cursor {
        tenant: t("acme"),
        conv: c("c-1"),
        who: visitor("v-1"),
        seq: 3,
    });
    ops.push(Op::Visitor {
        tenant: t("acme"),
        visitor: UserId::from("v-1"),
        meta: VisitorMeta {
            last_agent: Some((UserId::from("alice"), 5)),
        },
    });
    ops.push(conv_op("acme", "c-2", meta("v-2", ConvState::Queued)));
    assert!(store.commit(&CommitBatch { ops }).is_err());
    good
}

/// Entry 3, other than the failed one: a different message id and text.
fn another_entry_3() -> Vec<Op> {
    vec![
        entry_op("acme", "c-1", chat(3, &visitor("v-1"), "m-3b", "retried")),
        Op::Dedupe {
            key: dedupe_key("acme", visitor("v-1"), "m-3b"),
            hit: DedupeHit {
                conv: c("c-1"),
                seq: 3,
            },
        },
    ]
}

/// What the store must hold after the failed batch was undone and
/// [`another_entry_3`] committed.
fn assert_failed_batch_absent(store: &SledStore, good: &Recovered) {
    let mut expected = good.clone();
    expected.convs[0].last_seq = 3;
    assert_eq!(&store.recover().unwrap(), &expected);
    let entries = read_after(store, "acme", "c-1", 0, 10);
    assert_eq!(seqs(&entries), [1, 2, 3]);
    assert_eq!(entries[2].client_id.as_deref(), Some("m-3b"));
    let found = store
        .lookup_dedupe(&[
            dedupe_key("acme", visitor("v-1"), "m-3"),
            dedupe_key("acme", visitor("v-1"), "m-3b"),
        ])
        .unwrap();
    assert_eq!(
        found,
        [
            None,
            Some(DedupeHit {
                conv: c("c-1"),
                seq: 3
            })
        ]
    );
    assert_eq!(store.conv(&t("acme"), &c("c-2")).unwrap(), None);
}

#[test]
fn a_reopen_after_a_failed_sync_takes_commits_again() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let good = commit_then_fail_a_sync(&store);
    assert!(!store.is_writable());
    // The next call reopens (the disk is fine), and the failed batch's seq
    // is free again.
    commit(&store, another_entry_3());
    assert!(store.is_writable());
    assert_failed_batch_absent(&store, &good);
    drop(store);
    assert_failed_batch_absent(&open(dir.path()), &good);
}

#[test]
fn a_reopen_undoes_a_failed_batch_that_reached_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.manual_reopen.store(true, Ordering::SeqCst);
    // As after a real write error: sled refuses the undo in memory, so the
    // failed batch stays there, and reads must be refused too.
    store.skip_memory_undo.store(true, Ordering::SeqCst);
    let good = commit_then_fail_a_sync(&store);
    assert!(matches!(store.recover(), Err(StoreError::Stopped)));
    assert!(matches!(
        store.read_entries(&t("acme"), &c("c-1"), 0, 10, &mut |_| {}),
        Err(StoreError::Stopped)
    ));
    assert!(matches!(
        store.commit(&CommitBatch {
            ops: another_entry_3()
        }),
        Err(StoreError::Stopped)
    ));

    // Closing the database writes the failed batch (sled flushes on drop):
    // the reopened database has it, and the reopen must undo it again.
    store.reopen().unwrap();
    assert!(store.is_writable());
    commit(&store, another_entry_3());
    assert_failed_batch_absent(&store, &good);
    drop(store);
    assert_failed_batch_absent(&open(dir.path()), &good);
}

#[test]
fn a_full_disk_stops_commits_until_it_has_space_again() {
    // sled needs room for a few 16 MiB segments.
    let Some(tmpfs) = Tmpfs::mount(64) else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let store_dir = tmpfs.path().join("store");
    let filler = tmpfs.path().join("filler");
    let store = open(&store_dir);
    commit(
        &store,
        vec![conv_op("acme", "c-1", meta("v-1", ConvState::Queued))],
    );
    // Leave sled about 16 MiB.
    std::fs::write(&filler, vec![1u8; 40 << 20]).unwrap();

    let text = "x".repeat(2000);
    let batch = |from: u64| CommitBatch {
        ops: (from..from + 20)
            .map(|seq| {
                entry_op(
                    "acme",
                    "c-1",
                    chat(seq, &visitor("v-1"), &format!("m-{seq}"), &text),
                )
            })
            .collect(),
    };
    let mut next = 1;
    let error = loop {
        match store.commit(&batch(next)) {
            Ok(_) => next += 20,
            Err(e) => break e,
        }
        assert!(next < 100_000, "the disk never filled up");
    };
    assert!(
        matches!(&error, StoreError::Sled { source: sled::Error::Io(e), .. }
            if e.kind() == std::io::ErrorKind::StorageFull),
        "{error}"
    );
    assert!(!store.is_writable());
    // Still full: no reopen, commits refused.
    assert!(matches!(store.reopen(), Err(StoreError::Io { .. })));
    assert!(matches!(
        store.commit(&batch(next)),
        Err(StoreError::Stopped)
    ));

    // Space again: the store reopens and takes the same seqs.
    std::fs::remove_file(&filler).unwrap();
    store.reopen().unwrap();
    commit(&store, batch(next).ops);
    let last = next + 19;
    assert_eq!(store.recover().unwrap().convs[0].last_seq, last);
    assert_eq!(
        seqs(&read_after(&store, "acme", "c-1", 0, 100_000)),
        (1..=last).collect::<Vec<_>>()
    );
    drop(store);
    let store = open(&store_dir);
    assert_eq!(
        seqs(&read_after(&store, "acme", "c-1", 0, 100_000)),
        (1..=last).collect::<Vec<_>>()
    );
}

#[test]
fn concurrent_commits_all_land() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..8)
        .map(|i| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let conv = format!("c-{i}");
                commit(
                    &*store,
                    vec![conv_op("acme", &conv, meta("v-1", ConvState::Queued))],
                );
                for round in 0..20 {
                    commit(&*store, chats("acme", &conv, round * 3 + 1, 3));
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let recovered = store.recover().unwrap();
    assert_eq!(recovered.convs.len(), 8);
    assert!(recovered.convs.iter().all(|r| r.last_seq == 60));
    for i in 0..8 {
        assert_eq!(
            seqs(&read_after(&*store, "acme", &format!("c-{i}"), 0, 100)),
            (1..=60).collect::<Vec<_>>()
        );
    }
}

/// Set in the child process of `a_committed_batch_survives_an_abort`.
const CRASH_DIR_ENV: &str = "KEFU_STORE_CRASH_DIR";

/// The child's side of `a_committed_batch_survives_an_abort`: commits, then
/// aborts the process the moment `commit` returns. A no-op in a normal run.
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
        return;
    };
    let store = open(Path::new(&dir));
    let mut ops = vec![conv_op("acme", "c-1", meta("v-1", assigned("alice")))];
    ops.extend(chats("acme", "c-1", 1, 50));
    ops.push(Op::Dedupe {
        key: dedupe_key("acme", visitor("v-1"), "m-50"),
        hit: DedupeHit {
            conv: c("c-1"),
            seq: 50,
        },
    });
    ops.push(Op::Cursor {
        tenant: t("acme"),
        conv: c("c-1"),
        who: agent("alice"),
        seq: 50,
    });
    commit(&store, ops);
    std::process::abort();
}

#[test]
fn a_committed_batch_survives_an_abort() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["store::tests::crash_child", "--exact", "--test-threads=1"])
        .env(CRASH_DIR_ENV, dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    // Killed by SIGABRT, not a clean exit (which would flush sled on drop).
    assert!(!status.success(), "the child did not abort: {status}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
    }

    let store = open(dir.path());
    let recovered = store.recover().unwrap();
    assert_eq!(recovered.convs.len(), 1);
    assert_eq!(recovered.convs[0].last_seq, 50);
    assert_eq!(recovered.convs[0].meta, meta("v-1", assigned("alice")));
    assert_eq!(recovered.convs[0].cursors, [(agent("alice"), 50)]);
    assert_eq!(read_after(&store, "acme", "c-1", 0, 100).len(), 50);
    let hit = store
        .lookup_dedupe(&[dedupe_key("acme", visitor("v-1"), "m-50")])
        .unwrap();
    assert_eq!(
        hit[0],
        Some(DedupeHit {
            conv: c("c-1"),
            seq: 50
        })
    );
}
