//! Thread layout of the two tokio backends, checked from /proc. One test in its own
//! binary, so no other server's threads are in the process while it counts.

mod util;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backend_api::runner::{self, ServerConfig};
use backend_api::Service;
use backend_tokio::{shared_runtimes, Tokio, TokioTpc, WORKER_THREAD_NAME};

/// Waits (bounded, so a bug fails instead of hanging) until `cond` holds.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::yield_now();
    }
}

fn workers() -> Vec<String> {
    util::thread_names()
        .into_iter()
        .filter(|(_, name)| name == WORKER_THREAD_NAME)
        .map(|(tid, _)| tid)
        .collect()
}

#[test]
fn tpc_adds_only_its_shards_and_tokio_shares_one_runtime_of_one_worker_per_shard() {
    // tokio-tpc first, while the process holds no runtime threads at all.
    let before = util::thread_names().len();
    let server = runner::start(
        Arc::new(TokioTpc),
        ServerConfig::new(Service::Echo, util::cores(2)),
    )
    .unwrap();
    let conns: Vec<_> = (0..16).map(|_| util::served(server.local_addr())).collect();
    let names = util::thread_names();
    assert_eq!(
        names.len(),
        before + 2,
        "tokio-tpc runs on its two shard threads and nothing else: {names:?}"
    );
    drop(conns);
    server.stop().unwrap();

    // tokio: three shards, one shared runtime with three workers.
    let cores = util::cores(3);
    let union: Vec<usize> = cores
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let server = runner::start(Arc::new(Tokio), ServerConfig::new(Service::Echo, cores)).unwrap();
    let mut conns: Vec<_> = (0..32).map(|_| util::served(server.local_addr())).collect();
    assert_eq!(shared_runtimes(), 1, "the three shards share one runtime");
    assert_eq!(workers().len(), 3, "one worker per shard");
    // Workers are unpinned within the server's cores: once every shard has joined, each
    // worker may run on any of them (not only on the core of the shard that built it).
    wait_until("every worker allowed on every shard core", || {
        workers().iter().all(|tid| util::allowed_cpus(tid) == union)
    });
    for c in &mut conns {
        util::echo(c, b"still served");
    }
    drop(conns);
    let report = server.stop().unwrap();
    assert_eq!(report.total.accepted, 32);
    assert_eq!(shared_runtimes(), 0, "the last shard out drops the runtime");
}
