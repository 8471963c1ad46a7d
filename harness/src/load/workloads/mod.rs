//! The application side of each workload, free of I/O: what a connection sends and how
//! its replies are checked. The engine moves bytes; these types build requests into the
//! connection's output buffer and consume replies from the thread's read buffer.
//!
//! Every reply is checked: echo and stream bytes against the exact bytes sent, HTTP
//! replies by parsing them (`httparse`) and framing them with Content-Length.

pub(crate) mod churn;
pub(crate) mod echo;
pub(crate) mod http;
pub(crate) mod idle;
pub(crate) mod stream;

use super::error::ClientError;
use super::{LoadConfig, Workload};

/// Period of the verification pattern: a prime, so the per-message offsets below cycle
/// through every position before repeating.
pub(crate) const PERIOD: usize = 65_521;

/// Largest single write of the stream workload.
pub(crate) const STREAM_CHUNK: usize = 256 * 1024;

/// Read-only data every connection of a thread shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Message size (echo, stream, idle).
    pub size: usize,
    /// The HTTP request (http) or the closing request (churn).
    pub request: Vec<u8>,
    /// Pseudo-random bytes: `PERIOD` plus room for the longest slice taken from it.
    pub pattern: Vec<u8>,
}

impl Shared {
    pub(crate) fn new(cfg: &LoadConfig) -> Shared {
        let request = match cfg.workload {
            Workload::Http => http::request(&cfg.host, &cfg.path),
            Workload::Churn => churn::request(&cfg.host, &cfg.path),
            _ => Vec::new(),
        };
        let pattern = if cfg.workload.uses_size() {
            let extra = match cfg.workload {
                Workload::Stream => STREAM_CHUNK.max(cfg.size),
                _ => cfg.size,
            };
            pattern(PERIOD + extra)
        } else {
            Vec::new()
        };
        Shared {
            size: cfg.size,
            request,
            pattern,
        }
    }

    /// `len` pattern bytes starting at stream position `pos`.
    #[inline]
    pub(crate) fn pattern_at(&self, pos: u64, len: usize) -> &[u8] {
        let start = (pos % PERIOD as u64) as usize;
        &self.pattern[start..start + len]
    }
}

/// Deterministic pseudo-random bytes (xorshift64*) repeating every `PERIOD` bytes, so a
/// slice starting anywhere is the stream at that position: a shifted, repeated or stale
/// reply differs from what was sent.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len.max(PERIOD));
    while v.len() < PERIOD {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let take = (PERIOD - v.len()).min(8);
        v.extend_from_slice(&r.to_le_bytes()[..take]);
    }
    while v.len() < len {
        let take = (len - v.len()).min(PERIOD);
        v.extend_from_within(..take);
    }
    v.truncate(len);
    v
}

/// One connection's protocol state.
#[derive(Debug)]
pub(crate) enum Proto {
    Echo(echo::EchoState),
    Http(http::HttpState),
    Stream(stream::StreamState),
}

impl Proto {
    /// Fresh state for a new connection; `seed` varies the bytes between connections.
    pub(crate) fn new(workload: Workload, seed: u64) -> Proto {
        match workload {
            Workload::Echo | Workload::Idle => Proto::Echo(echo::EchoState::new(seed)),
            Workload::Http | Workload::Churn => Proto::Http(http::HttpState::default()),
            Workload::Stream => Proto::Stream(stream::StreamState::new(seed)),
        }
    }

    /// Appends one request to `out`.
    #[inline]
    pub(crate) fn append_request(&mut self, sh: &Shared, out: &mut Vec<u8>) {
        match self {
            Proto::Echo(s) => s.append_request(sh, out),
            Proto::Http(_) => out.extend_from_slice(&sh.request),
            Proto::Stream(_) => {}
        }
    }

    /// Consumes `data`, calling `on_reply` once per complete reply, in order, with the
    /// reply's error if it was a well-framed failure (an HTTP 503, say). `outstanding` is
    /// how many replies are expected. An `Err` means the connection can no longer be
    /// trusted and must be closed.
    #[inline]
    pub(crate) fn feed(
        &mut self,
        sh: &Shared,
        data: &[u8],
        outstanding: usize,
        on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError> {
        match self {
            Proto::Echo(s) => s.feed(sh, data, outstanding, on_reply),
            Proto::Http(s) => s.feed(data, outstanding, on_reply),
            Proto::Stream(s) => s.feed(sh, data, on_reply),
        }
    }

    /// The peer closed the connection. `Ok(true)` when that completed a reply whose body
    /// runs to EOF; `Ok(false)` when nothing was in progress; `Err` when a reply was cut.
    pub(crate) fn on_eof(&mut self) -> Result<bool, ClientError> {
        match self {
            Proto::Echo(s) => s.on_eof(),
            Proto::Http(s) => s.on_eof(),
            Proto::Stream(s) => s.on_eof(),
        }
    }

    /// True when the server announced it closes the connection after the last reply.
    pub(crate) fn server_closing(&self) -> bool {
        matches!(self, Proto::Http(s) if s.server_closing())
    }

    /// The error of a reply that completed at EOF (HTTP body framed by the close).
    pub(crate) fn take_status_error(&mut self) -> Option<ClientError> {
        match self {
            Proto::Http(s) => s.take_status_error(),
            _ => None,
        }
    }

    /// The stream state, for the stream workload.
    pub(crate) fn stream(&mut self) -> Option<&mut stream::StreamState> {
        match self {
            Proto::Stream(s) => Some(s),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pattern_is_deterministic_and_varied() {
        let a = pattern(PERIOD + 1000);
        assert_eq!(a, pattern(PERIOD + 1000));
        assert_eq!(a[PERIOD..], a[..1000], "periodic");
        let distinct: std::collections::HashSet<u8> = a.iter().copied().collect();
        assert!(distinct.len() > 200);
    }
}
