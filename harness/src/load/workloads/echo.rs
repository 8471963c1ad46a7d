//! Echo: messages of `--size` bytes, each reply compared byte for byte with what was sent.
//!
//! Message `k` of a connection is the pattern slice starting at `seed + k * STEP`, so a
//! reply that is shifted, repeated, stale or corrupted never matches.

use super::{Connect, Defaults, Eof, Facts, Pattern, Plugin, Sending, PERIOD};
use crate::analysis::fmt_bytes;
use crate::load::error::ClientError;
use crate::load::LoadConfig;

/// Distance between the pattern offsets of consecutive messages (coprime with `PERIOD`).
const STEP: u64 = 131;

/// The echo workload: the pattern its messages come from.
#[derive(Debug)]
pub(crate) struct Echo(Pattern);

/// One echo connection.
#[derive(Debug)]
pub(crate) struct EchoConn {
    seed: u64,
    /// Messages sent.
    sent: u64,
    /// Messages fully received.
    received: u64,
    /// Bytes of the current message received so far.
    offset: usize,
}

impl EchoConn {
    #[inline]
    fn start_of(&self, k: u64) -> u64 {
        self.seed + (k % PERIOD as u64) * STEP
    }
}

impl Plugin for Echo {
    const FACTS: Facts = Facts {
        title: "echo",
        describe: |size, depth| format!("echo, {} messages, depth {depth}", fmt_bytes(size as u32)),
        service: backend_api::Service::Echo,
        connect: Connect::KeepAlive,
        sending: Sending::Requests,
        sized: true,
        holds_idle: false,
        paced: true,
        conn_rate: None,
        defaults: Defaults {
            connections: 64,
            depth: 1,
            size: 64,
            idle: 0,
        },
    };
    type Conn = EchoConn;

    fn new(cfg: &LoadConfig) -> Echo {
        Echo(Pattern::new(cfg.workload.size, cfg.workload.size))
    }

    fn conn(&self, seed: u64) -> EchoConn {
        EchoConn {
            seed: seed.wrapping_mul(977) % PERIOD as u64,
            sent: 0,
            received: 0,
            offset: 0,
        }
    }

    #[inline]
    fn request(&self, c: &mut EchoConn, out: &mut Vec<u8>) {
        out.extend_from_slice(self.0.at(c.start_of(c.sent), self.0.size));
        c.sent += 1;
    }

    fn feed(
        &self,
        c: &mut EchoConn,
        mut data: &[u8],
        mut outstanding: usize,
        mut on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        let size = self.0.size;
        while !data.is_empty() {
            if outstanding == 0 {
                return Err(ClientError::UnsolicitedData);
            }
            let take = (size - c.offset).min(data.len());
            let start = (c.start_of(c.received) % PERIOD as u64) as usize + c.offset;
            if data[..take] != self.0.bytes[start..start + take] {
                return Err(ClientError::EchoMismatch);
            }
            data = &data[take..];
            c.offset += take;
            if c.offset == size {
                c.offset = 0;
                c.received += 1;
                outstanding -= 1;
                on_reply(None);
            }
        }
        Ok(())
    }

    fn on_eof(&self, c: &mut EchoConn) -> Result<Eof, ClientError> {
        if c.offset > 0 {
            Err(ClientError::ShortReply)
        } else {
            Ok(Eof::Nothing)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Workload;

    fn echo(size: usize) -> Echo {
        let mut c = LoadConfig::new("127.0.0.1:1".parse().unwrap(), Workload::Echo);
        c.workload.size = size;
        Echo::new(&c)
    }

    #[test]
    fn replies_in_pieces_verify_and_corruption_is_caught() {
        let w = echo(100);
        let mut s = w.conn(3);
        let mut out = Vec::new();
        for _ in 0..3 {
            w.request(&mut s, &mut out);
        }
        let mut r = w.conn(3);
        let mut n = 0;
        for chunk in out.chunks(7) {
            w.feed(&mut r, chunk, 3 - n, |e| {
                assert!(e.is_none());
                n += 1;
            })
            .unwrap();
        }
        assert_eq!(n, 3);
        // A flipped byte, and a stale (repeated) message, are both mismatches.
        let mut bad = out.clone();
        bad[150] ^= 1;
        let mut r = w.conn(3);
        assert_eq!(
            w.feed(&mut r, &bad, 3, |_| {}),
            Err(ClientError::EchoMismatch)
        );
        let mut r = w.conn(3);
        let stale = [&out[..100], &out[..100]].concat();
        assert_eq!(
            w.feed(&mut r, &stale, 3, |_| {}),
            Err(ClientError::EchoMismatch)
        );
        let mut r = w.conn(3);
        assert_eq!(
            w.feed(&mut r, &out, 2, |_| {}),
            Err(ClientError::UnsolicitedData)
        );
    }
}
