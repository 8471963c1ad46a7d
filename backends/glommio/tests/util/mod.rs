//! Helpers shared by the glommio integration tests: a one-shard glommio server; the
//! client helpers are backend-conformance's.
#![allow(dead_code, unused_imports)]

use std::sync::Arc;

use backend_api::runner::{self, usable_cores, RunningServer};
use backend_api::{Limits, ServerConfig, Service};
use backend_glommio::Glommio;

pub use backend_conformance::util::{
    connect, data, echo_roundtrip, read_to_eof, wait_until, IO_TIMEOUT,
};

/// The core every test server runs on.
pub fn core() -> usize {
    usable_cores()[0]
}

/// Starts a one-shard glommio server.
pub fn start(service: Service) -> RunningServer {
    start_with(service, Limits::default())
}

/// Starts a one-shard glommio server with the given limits.
pub fn start_with(service: Service, limits: Limits) -> RunningServer {
    let mut config = ServerConfig::new(service, vec![core()]);
    config.limits = limits;
    runner::start(Arc::new(Glommio), config).expect("glommio server starts")
}
