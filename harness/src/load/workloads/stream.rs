//! Stream: bulk full-duplex transfer through an echo server. Each connection writes the
//! pattern continuously, keeping at most `--depth` × `--size` bytes unechoed, and checks
//! every byte that comes back. A "message" is `--size` bytes: its latency runs from the
//! write of its last byte to the read of its last echoed byte.

use super::{Connect, Defaults, Eof, Facts, Pattern, Plugin, Sending, PERIOD};
use crate::analysis::fmt_bytes;
use crate::load::error::ClientError;
use crate::load::LoadConfig;

/// Largest single write.
const CHUNK: usize = 256 * 1024;

/// The stream workload: the pattern, and how many bytes may be unechoed per connection.
#[derive(Debug)]
pub(crate) struct Stream {
    pattern: Pattern,
    window: u64,
}

/// One stream connection.
#[derive(Debug)]
pub(crate) struct StreamConn {
    seed: u64,
    /// Bytes written.
    sent: u64,
    /// Bytes read back and verified.
    received: u64,
}

impl Plugin for Stream {
    const FACTS: Facts = Facts {
        title: "stream",
        describe: |size, _| format!("stream, {} messages both ways", fmt_bytes(size as u32)),
        service: backend_api::Service::Echo,
        connect: Connect::KeepAlive,
        sending: Sending::Bytes,
        sized: true,
        holds_idle: false,
        paced: false,
        conn_rate: None,
        defaults: Defaults {
            connections: 4,
            depth: 8,
            size: 64 * 1024,
            idle: 0,
        },
    };
    type Conn = StreamConn;

    fn new(cfg: &LoadConfig) -> Stream {
        Stream {
            pattern: Pattern::new(cfg.workload.size, CHUNK.max(cfg.workload.size)),
            window: (cfg.workload.depth * cfg.workload.size) as u64,
        }
    }

    fn conn(&self, seed: u64) -> StreamConn {
        StreamConn {
            seed: seed.wrapping_mul(7919) % PERIOD as u64,
            sent: 0,
            received: 0,
        }
    }

    #[inline]
    fn next_bytes(&self, c: &StreamConn, finishing: bool) -> &[u8] {
        let room = self.window.saturating_sub(c.sent - c.received) as usize;
        let size = self.pattern.size;
        let mut len = room.min(CHUNK);
        if finishing {
            let into = (c.sent % size as u64) as usize;
            len = if into == 0 { 0 } else { len.min(size - into) };
        }
        self.pattern.at(c.seed + c.sent, len)
    }

    #[inline]
    fn written(&self, c: &mut StreamConn, n: usize) -> u64 {
        let size = self.pattern.size as u64;
        let before = c.sent / size;
        c.sent += n as u64;
        c.sent / size - before
    }

    fn feed(
        &self,
        c: &mut StreamConn,
        mut data: &[u8],
        _outstanding: usize,
        mut on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        if c.received + data.len() as u64 > c.sent {
            return Err(ClientError::UnsolicitedData);
        }
        let size = self.pattern.size as u64;
        while !data.is_empty() {
            let take = data.len().min(CHUNK);
            if data[..take] != *self.pattern.at(c.seed + c.received, take) {
                return Err(ClientError::EchoMismatch);
            }
            let before = c.received / size;
            c.received += take as u64;
            for _ in before..c.received / size {
                on_reply(None);
            }
            data = &data[take..];
        }
        Ok(())
    }

    fn on_eof(&self, c: &mut StreamConn) -> Result<Eof, ClientError> {
        if c.received < c.sent {
            Err(ClientError::ShortReply)
        } else {
            Ok(Eof::Nothing)
        }
    }
}
