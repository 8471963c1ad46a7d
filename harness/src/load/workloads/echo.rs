//! Echo: messages of `--size` bytes, each reply compared byte for byte with what was sent.
//!
//! Message `k` of a connection is the pattern slice starting at `seed + k * STEP`, so a
//! reply that is shifted, repeated, stale or corrupted never matches.

use super::{Shared, PERIOD};
use crate::load::error::ClientError;

/// Distance between the pattern offsets of consecutive messages (coprime with `PERIOD`).
const STEP: u64 = 131;

/// One echo connection.
#[derive(Debug)]
pub(crate) struct EchoState {
    seed: u64,
    /// Messages sent.
    sent: u64,
    /// Messages fully received.
    received: u64,
    /// Bytes of the current message received so far.
    offset: usize,
}

impl EchoState {
    pub(crate) fn new(seed: u64) -> EchoState {
        EchoState {
            seed: seed.wrapping_mul(977) % PERIOD as u64,
            sent: 0,
            received: 0,
            offset: 0,
        }
    }

    #[inline]
    fn start_of(&self, k: u64) -> u64 {
        self.seed + (k % PERIOD as u64) * STEP
    }

    #[inline]
    pub(crate) fn append_request(&mut self, sh: &Shared, out: &mut Vec<u8>) {
        out.extend_from_slice(sh.pattern_at(self.start_of(self.sent), sh.size));
        self.sent += 1;
    }

    pub(crate) fn feed(
        &mut self,
        sh: &Shared,
        mut data: &[u8],
        mut outstanding: usize,
        mut on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        while !data.is_empty() {
            if outstanding == 0 {
                return Err(ClientError::UnsolicitedData);
            }
            let take = (sh.size - self.offset).min(data.len());
            let start = (self.start_of(self.received) % PERIOD as u64) as usize + self.offset;
            if data[..take] != sh.pattern[start..start + take] {
                return Err(ClientError::EchoMismatch);
            }
            data = &data[take..];
            self.offset += take;
            if self.offset == sh.size {
                self.offset = 0;
                self.received += 1;
                outstanding -= 1;
                on_reply(None);
            }
        }
        Ok(())
    }

    pub(crate) fn on_eof(&mut self) -> Result<bool, ClientError> {
        if self.offset > 0 {
            Err(ClientError::ShortReply)
        } else {
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{LoadConfig, Workload};

    fn shared(size: usize) -> Shared {
        let mut c = LoadConfig::new("127.0.0.1:1".parse().unwrap(), Workload::Echo);
        c.size = size;
        Shared::new(&c)
    }

    #[test]
    fn replies_in_pieces_verify_and_corruption_is_caught() {
        let sh = shared(100);
        let mut s = EchoState::new(3);
        let mut out = Vec::new();
        for _ in 0..3 {
            s.append_request(&sh, &mut out);
        }
        let mut r = EchoState::new(3);
        let mut n = 0;
        for chunk in out.chunks(7) {
            r.feed(&sh, chunk, 3 - n, |e| {
                assert!(e.is_none());
                n += 1;
            })
            .unwrap();
        }
        assert_eq!(n, 3);
        // A flipped byte, and a stale (repeated) message, are both mismatches.
        let mut bad = out.clone();
        bad[150] ^= 1;
        let mut r = EchoState::new(3);
        assert_eq!(r.feed(&sh, &bad, 3, |_| {}), Err(ClientError::EchoMismatch));
        let mut r = EchoState::new(3);
        let stale = [&out[..100], &out[..100]].concat();
        assert_eq!(
            r.feed(&sh, &stale, 3, |_| {}),
            Err(ClientError::EchoMismatch)
        );
        let mut r = EchoState::new(3);
        assert_eq!(
            r.feed(&sh, &out, 2, |_| {}),
            Err(ClientError::UnsolicitedData)
        );
    }
}
