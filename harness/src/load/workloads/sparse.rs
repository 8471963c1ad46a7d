//! Sparse: many keep-alive connections, each sending an HTTP GET at a low rate with think
//! time between requests, as clients behind a WAN do (e.g. 10,000 connections at 2
//! requests/s each). Always open loop: the total rate is `connections × conn_rate`, and the
//! schedule hands requests to the connections round robin, so each connection sends every
//! `1 / conn_rate` seconds and connection `i` is offset by `i / rate`: the sends are spread
//! evenly over the period instead of arriving in bursts (a deterministic phase, the same
//! for every backend). With depth 1 a slow reply delays that connection's next request,
//! and the delay shows in latency (measured from the intended send time), not in a count.

use super::http::{Http, HttpState};
use super::{Defaults, Eof, Facts, Plugin};
use crate::load::error::ClientError;
use crate::load::LoadConfig;

/// Requests per second per connection when neither a rate nor `conn_rate` is given.
pub(crate) const DEFAULT_CONN_RATE: f64 = 2.0;

/// The sparse workload: HTTP on every connection, paced per connection.
#[derive(Debug)]
pub(crate) struct Sparse(Http);

impl Plugin for Sparse {
    const FACTS: Facts = Facts {
        title: "sparse HTTP (many connections, low rate each)",
        describe: |_, depth| {
            format!("sparse HTTP GET keep-alive, think time between requests, depth {depth}")
        },
        conn_rate: Some(DEFAULT_CONN_RATE),
        defaults: Defaults {
            connections: 1000,
            ..Http::FACTS.defaults
        },
        ..Http::FACTS
    };
    type Conn = HttpState;

    fn new(cfg: &LoadConfig) -> Sparse {
        Sparse(Http::new(cfg))
    }

    fn conn(&self, seed: u64) -> HttpState {
        self.0.conn(seed)
    }

    #[inline]
    fn request(&self, c: &mut HttpState, out: &mut Vec<u8>) {
        self.0.request(c, out)
    }

    fn feed(
        &self,
        c: &mut HttpState,
        data: &[u8],
        outstanding: usize,
        on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        self.0.feed(c, data, outstanding, on_reply)
    }

    fn on_eof(&self, c: &mut HttpState) -> Result<Eof, ClientError> {
        self.0.on_eof(c)
    }

    fn server_closing(&self, c: &HttpState) -> bool {
        self.0.server_closing(c)
    }
}
