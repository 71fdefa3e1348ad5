//! Cross-shard handoff: kefu's channel mesh (glommio's lock-free rings
//! between pinned executors, batched by outboxes) against a
//! `Mutex<VecDeque>` with a `Condvar` between two plain threads.
//! Reported per message, one producer and one consumer.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use kefu_bench::{report, Measured};
use shards::mesh::{self, Mesh};
use shards::notify::Notify;
use shards::RuntimeConfig;

const MESSAGES: u64 = 2_000_000;

fn mesh_handoff() -> f64 {
    let config = RuntimeConfig {
        shards: 2,
        ..RuntimeConfig::default()
    };
    let tickets = std::sync::Arc::new(std::sync::Mutex::new(
        mesh::tickets::<u64>(2, 1024)
            .into_iter()
            .map(Some)
            .collect::<Vec<_>>(),
    ));
    let results = shards::runtime::run(&config, move |ctx| {
        let ticket = tickets.lock().unwrap()[ctx.id].take().unwrap();
        async move {
            let mesh = Mesh::join(ticket).await.unwrap();
            let done = Rc::new(Notify::new());
            let count = Rc::new(std::cell::Cell::new(0u64));
            let (done2, count2) = (done.clone(), count.clone());
            let _tasks = mesh.start(Rc::new(move |_msg: u64| {
                count2.set(count2.get() + 1);
                if count2.get() == MESSAGES {
                    done2.notify();
                }
            }));
            let start = Instant::now();
            if ctx.id == 0 {
                for i in 0..MESSAGES {
                    mesh.send(1, i);
                    if i % 4096 == 0 {
                        // Let the flusher move the batch; backpressure as the gateway does.
                        while mesh.backlog() > 64 * 1024 {
                            glommio::yield_if_needed().await;
                            glommio::executor().yield_task_queue_now().await;
                        }
                        glommio::executor().yield_task_queue_now().await;
                    }
                }
                0.0
            } else {
                done.notified().await;
                start.elapsed().as_nanos() as f64 / MESSAGES as f64
            }
        }
    })
    .expect("shards");
    results[1]
}

fn mutex_handoff() -> f64 {
    let queue = Arc::new((Mutex::new(VecDeque::<u64>::new()), Condvar::new()));
    let consumer = {
        let queue = queue.clone();
        std::thread::spawn(move || {
            let start = Instant::now();
            let mut got = 0u64;
            while got < MESSAGES {
                let (lock, cv) = &*queue;
                let mut q = lock.lock().unwrap();
                while q.is_empty() {
                    q = cv.wait(q).unwrap();
                }
                while q.pop_front().is_some() {
                    got += 1;
                }
            }
            start.elapsed().as_nanos() as f64 / MESSAGES as f64
        })
    };
    for i in 0..MESSAGES {
        let (lock, cv) = &*queue;
        lock.lock().unwrap().push_back(i);
        cv.notify_one();
    }
    consumer.join().unwrap()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let ours = median((0..5).map(|_| mesh_handoff()).collect());
    let baseline = median((0..5).map(|_| mutex_handoff()).collect());
    report(
        "handoff",
        &Measured {
            name: "channel mesh (batched, lock-free)".into(),
            ns_per_op: ours,
        },
        &Measured {
            name: "Mutex<VecDeque> + Condvar".into(),
            ns_per_op: baseline,
        },
    );
}
