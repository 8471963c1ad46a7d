//! Stream: bulk full-duplex transfer through an echo server. Each connection writes the
//! pattern continuously, keeping at most `--depth` × `--size` bytes unechoed, and checks
//! every byte that comes back. A "message" is `--size` bytes: its latency runs from the
//! write of its last byte to the read of its last echoed byte.

use super::{Shared, PERIOD, STREAM_CHUNK};
use crate::load::error::ClientError;

/// One stream connection.
#[derive(Debug)]
pub(crate) struct StreamState {
    seed: u64,
    /// Bytes written.
    pub sent: u64,
    /// Bytes read back and verified.
    pub received: u64,
}

impl StreamState {
    pub(crate) fn new(seed: u64) -> StreamState {
        StreamState {
            seed: seed.wrapping_mul(7919) % PERIOD as u64,
            sent: 0,
            received: 0,
        }
    }

    /// The next bytes to write: at most `room` bytes, and never past the message boundary
    /// when `finish_message_only` (draining: complete the message, start no other).
    #[inline]
    pub(crate) fn next_chunk<'a>(
        &self,
        sh: &'a Shared,
        room: usize,
        finish_message_only: bool,
    ) -> &'a [u8] {
        let mut len = room.min(STREAM_CHUNK);
        if finish_message_only {
            let into = (self.sent % sh.size as u64) as usize;
            len = if into == 0 {
                0
            } else {
                len.min(sh.size - into)
            };
        }
        sh.pattern_at(self.seed + self.sent, len)
    }

    /// Records `n` bytes written; returns how many messages that completed.
    #[inline]
    pub(crate) fn on_sent(&mut self, sh: &Shared, n: usize) -> u64 {
        let before = self.sent / sh.size as u64;
        self.sent += n as u64;
        self.sent / sh.size as u64 - before
    }

    pub(crate) fn feed(
        &mut self,
        sh: &Shared,
        mut data: &[u8],
        mut on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        if self.received + data.len() as u64 > self.sent {
            return Err(ClientError::UnsolicitedData);
        }
        while !data.is_empty() {
            let take = data.len().min(STREAM_CHUNK);
            if data[..take] != *sh.pattern_at(self.seed + self.received, take) {
                return Err(ClientError::EchoMismatch);
            }
            let before = self.received / sh.size as u64;
            self.received += take as u64;
            for _ in before..self.received / sh.size as u64 {
                on_reply(None);
            }
            data = &data[take..];
        }
        Ok(())
    }

    pub(crate) fn on_eof(&mut self) -> Result<bool, ClientError> {
        if self.received < self.sent {
            Err(ClientError::ShortReply)
        } else {
            Ok(false)
        }
    }
}
