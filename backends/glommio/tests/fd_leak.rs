//! Stopping a server leaves exactly the descriptors that were open before it started: no
//! connection, no listener, no glommio ring; and, per shard, only glommio 0.9.0's sleep
//! notifier eventfd (DataDog/glommio#448), which glommio still references, so the backend
//! leaves it open and records it, identified, in `backend_api::known_leaks`. Alone in its
//! binary, so nothing else in this process opens or closes descriptors while it counts.

mod util;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::PathBuf;

use backend_api::known_leaks;
use backend_api::runner;
use backend_api::{ServerConfig, Service};
use backend_glommio::Glommio;
use util::*;

/// Open descriptors and what they point at.
fn open_fds() -> BTreeMap<String, PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), target))
        })
        .collect()
}

fn sockets(fds: &BTreeMap<String, PathBuf>) -> usize {
    fds.values()
        .filter(|t| t.to_string_lossy().starts_with("socket:"))
        .count()
}

/// Runs a server on `shards` shards that serves `conns` connections, half of them still
/// open when it stops.
fn serve_some(shards: usize, conns: usize) {
    let config = ServerConfig::new(Service::Echo, vec![core(); shards]);
    let server = runner::start(std::sync::Arc::new(Glommio), config).unwrap();
    let addr = server.local_addr();
    let mut open: Vec<_> = (0..conns).map(|_| connect(addr)).collect();
    for (i, c) in open.iter_mut().enumerate() {
        let msg = format!("conn {i}");
        c.write_all(msg.as_bytes()).unwrap();
        let mut back = vec![0; msg.len()];
        c.read_exact(&mut back).unwrap();
    }
    open.truncate(conns / 2);
    let report = server.stop().unwrap();
    assert_eq!(report.total.accepted, conns as u64);
    assert_eq!(report.total.closed, conns as u64);
}

#[test]
fn stopping_closes_every_socket_and_leaves_only_each_shards_recorded_notifier() {
    // Warm up process-wide state (allocator arenas, lazy statics) once.
    serve_some(1, 2);
    for (shards, conns) in [(1, 10), (1, 200), (2, 100)] {
        let before = open_fds();
        let records_before = known_leaks::recorded().len();
        serve_some(shards, conns);
        // The shard threads are joined, so the count is final the moment stop returns.
        let after = open_fds();
        let records = known_leaks::recorded()[records_before..].to_vec();
        assert_eq!(
            sockets(&after),
            sockets(&before),
            "a socket outlived the stop"
        );
        let new: BTreeMap<_, _> = after
            .iter()
            .filter(|(fd, t)| before.get(*fd) != Some(*t))
            .collect();
        assert_eq!(
            records.len(),
            shards,
            "{shards} shard(s): one notifier recorded per shard, got {records:?}"
        );
        let recorded: BTreeSet<String> = records.iter().map(|l| l.fd.to_string()).collect();
        assert_eq!(
            new.keys().map(|fd| fd.to_string()).collect::<BTreeSet<_>>(),
            recorded,
            "{shards} shard(s), {conns} conns: the new descriptors {new:?} are not exactly the \
             recorded notifiers {records:?}"
        );
        for fd in new.values() {
            assert_eq!(fd.to_string_lossy(), "anon_inode:[eventfd]");
        }
        assert_eq!(after.len(), before.len() + shards);
        // Nothing closed them: each is still the very eventfd recorded (a closed number
        // reused by another file would fail this), so a late wake-up from glommio can only
        // ever write to glommio's own eventfd.
        let open = known_leaks::still_open();
        for r in &records {
            assert!(
                open.contains(r),
                "recorded notifier {r:?} no longer the same file"
            );
        }
    }
}
