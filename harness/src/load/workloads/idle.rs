//! Idle: `--idle` connections are opened first, held open and watched (a server that
//! drops one, or sends on one, is an error), while `--connections` active echo
//! connections run among them. The active connections are plain echo.

use super::echo::{Echo, EchoConn};
use super::{Defaults, Eof, Facts, Plugin};
use crate::analysis::fmt_bytes;
use crate::load::error::ClientError;
use crate::load::LoadConfig;

/// The idle workload: echo on the active connections.
#[derive(Debug)]
pub(crate) struct Idle(Echo);

impl Plugin for Idle {
    const FACTS: Facts = Facts {
        title: "idle sweep (active echo beside idle connections)",
        describe: |size, depth| {
            format!(
                "idle connections held open beside active echo ({}, depth {depth})",
                fmt_bytes(size as u32)
            )
        },
        holds_idle: true,
        defaults: Defaults {
            idle: 1000,
            ..Echo::FACTS.defaults
        },
        ..Echo::FACTS
    };
    type Conn = EchoConn;

    fn new(cfg: &LoadConfig) -> Idle {
        Idle(Echo::new(cfg))
    }

    fn conn(&self, seed: u64) -> EchoConn {
        self.0.conn(seed)
    }

    #[inline]
    fn request(&self, c: &mut EchoConn, out: &mut Vec<u8>) {
        self.0.request(c, out)
    }

    fn feed(
        &self,
        c: &mut EchoConn,
        data: &[u8],
        outstanding: usize,
        on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        self.0.feed(c, data, outstanding, on_reply)
    }

    fn on_eof(&self, c: &mut EchoConn) -> Result<Eof, ClientError> {
        self.0.on_eof(c)
    }
}
