//! Too low an open-file limit is a clear error naming `ulimit -n`, before any connection
//! is opened. Its own test binary: it lowers this process's hard limit for good.

mod util;

use backend_api::Service;
use harness::load::{run_load, LoadError, Workload};
use util::*;

#[test]
fn too_few_descriptors_is_an_error_naming_ulimit() {
    let server = start(epoll_lt(), Service::Echo);
    let lowered = libc::rlimit {
        rlim_cur: 512,
        rlim_max: 512,
    };
    // SAFETY: setrlimit reads the struct we own; lowering is always permitted.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lowered) }, 0);
    let mut cfg = config(&server, Workload::Echo);
    cfg.workload.connections = 1000;
    let err = run_load(&cfg).unwrap_err();
    stop(server);
    assert!(
        matches!(err, LoadError::TooFewFiles { limit: 512, .. }),
        "{err}"
    );
    let msg = err.to_string();
    // 1000 connections, one client thread's epoll, and the shared margin.
    let need = 1000 + 1 + harness::load::FD_MARGIN;
    assert!(msg.contains(&format!("ulimit -n {need}")), "{msg}");
    assert!(msg.contains("1000 connections"), "{msg}");
}
