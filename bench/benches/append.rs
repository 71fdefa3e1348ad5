//! Log append with group commit against one fsync per entry.
//!
//! Both write the same entries to the same store (sled, flush + fdatasync
//! per commit); the only difference is how many entries share a commit.
//! Reported per entry. The disk decides the absolute numbers; the ratio is
//! what group commit buys.

use std::sync::Arc;

use kefu::config::StoreSettings;
use kefu::ids::{ConvId, TenantId, UserId};
use kefu::model::{AuthorRole, Entry};
use kefu::store::{CommitBatch, Op, SledStore, Store};
use kefu_bench::{measure, report};

const GROUP: u64 = 64;

fn entry(seq: u64) -> Op {
    Op::Entry {
        tenant: TenantId::from("bench"),
        conv: ConvId::from("c-0123456789abcdef-01234567"),
        entry: Entry {
            seq,
            ts_ms: 1,
            author: AuthorRole::Visitor,
            author_id: Some(UserId::from("v-1")),
            author_name: None,
            client_id: Some(Arc::from(format!("m-{seq}").as_str())),
            text: Some(Arc::from("where is my order? it was due yesterday")),
            event: None,
        },
    }
}

fn main() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SledStore::open(dir.path(), &StoreSettings::default()).expect("open store");
    let mut seq = 0u64;
    let grouped = measure(
        &format!("group commit, {GROUP} entries per fdatasync"),
        2_048,
        |ops| {
            for _ in 0..ops / GROUP {
                let batch = CommitBatch {
                    ops: (0..GROUP)
                        .map(|_| {
                            seq += 1;
                            entry(seq)
                        })
                        .collect(),
                };
                store.commit(&batch).expect("commit");
            }
        },
    );
    let single = measure("one fdatasync per entry", 256, |ops| {
        for _ in 0..ops {
            seq += 1;
            store
                .commit(&CommitBatch {
                    ops: vec![entry(seq)],
                })
                .expect("commit");
        }
    });
    report("append", &grouped, &single);
}
