//! The workloads: one file each, and the one list that registers them ([`workloads!`]).
//!
//! A workload is a [`Plugin`]: its [`Facts`] (the service it needs, how it uses
//! connections, which parameters apply, its defaults), its per-connection state, what it
//! sends, how it recognises a complete and correct reply, and what EOF means. The worker
//! (`load/worker/`) moves bytes and keeps time; it knows no workload by name.
//!
//! Every reply is checked: echo and stream bytes against the exact bytes sent, HTTP
//! replies by parsing them (`httparse`) and framing them with Content-Length.
//!
//! Adding a workload: a file here implementing [`Plugin`], and one line in the
//! [`workloads!`] list below.

pub(crate) mod churn;
pub(crate) mod echo;
pub(crate) mod http;
pub(crate) mod idle;
#[cfg(test)]
pub(crate) mod lines;
pub(crate) mod sparse;
pub(crate) mod stream;

use serde::{Deserialize, Serialize};

use super::error::ClientError;
use super::LoadConfig;

/// Registers every workload: `Variant = "name" => plugin type`, in the order `--help`,
/// suites and charts list them. The name is the one used on the command line, in suite
/// files and in results.
macro_rules! workloads {
    ($($(#[doc = $doc:literal])* $(#[cfg($cfg:meta)])? $variant:ident = $name:literal => $plugin:ty,)*) => {
        /// The traffic a run generates: one variant per file under `load/workloads/`.
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
            Serialize, Deserialize, clap::ValueEnum, schemars::JsonSchema,
        )]
        #[schemars(rename = "WorkloadKind")]
        pub enum Workload {
            $(
                $(#[doc = $doc])*
                $(#[cfg($cfg)] #[serde(skip)])?
                #[serde(rename = $name)]
                #[value(name = $name)]
                $variant,
            )*
        }

        impl Workload {
            /// The name used on the command line, in suites and in results.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($(#[cfg($cfg)])? Workload::$variant => $name,)*
                }
            }

            /// What this workload is and which parameters apply to it.
            pub fn facts(self) -> &'static Facts {
                match self {
                    $($(#[cfg($cfg)])? Workload::$variant => &<$plugin as Plugin>::FACTS,)*
                }
            }

            /// Calls `visit` with this workload's plug-in type: the one place a run
            /// dispatches on the workload.
            pub(crate) fn visit<V: Visit>(self, visit: V) -> V::Out {
                match self {
                    $($(#[cfg($cfg)])? Workload::$variant => visit.visit::<$plugin>(),)*
                }
            }
        }
    };
}

workloads! {
    /// Messages of `size` bytes echoed back, every byte verified.
    Echo = "echo" => echo::Echo,
    /// HTTP/1.1 GET on keep-alive connections, `depth` pipelined.
    Http = "http" => http::Http,
    /// One connection per request: connect, GET with `Connection: close`, read to EOF, close.
    Churn = "churn" => churn::Churn,
    /// Bulk full-duplex transfer through an echo server, every byte verified.
    Stream = "stream" => stream::Stream,
    /// `idle` connections held open while `connections` active echo connections run.
    Idle = "idle" => idle::Idle,
    /// Many HTTP keep-alive connections at a low rate each (`conn_rate`), think time between.
    Sparse = "sparse" => sparse::Sparse,
    /// Test only: short text lines echoed back (shows a workload is one file and one line).
    #[cfg(test)]
    Lines = "lines" => lines::Lines,
}

impl Workload {
    /// Every workload, in the order `--help` lists them.
    pub fn all() -> &'static [Workload] {
        <Workload as clap::ValueEnum>::value_variants()
    }

    /// The server-side service this workload needs (`echo` or `http`).
    pub fn service(self) -> backend_api::Service {
        self.facts().service
    }

    /// True when `--size` means something for this workload.
    pub fn uses_size(self) -> bool {
        self.facts().sized
    }
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Workload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::all()
            .iter()
            .copied()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::all().iter().map(|w| w.as_str()).collect();
                format!(
                    "unknown workload '{s}'; valid workloads: {}",
                    names.join(", ")
                )
            })
    }
}

/// Runs generic code for one workload's plug-in type (see [`Workload::visit`]).
pub(crate) trait Visit {
    /// What the visit returns.
    type Out;
    /// Called with the chosen workload's plug-in.
    fn visit<P: Plugin>(self) -> Self::Out;
}

/// How a workload uses its connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connect {
    /// Opened before the clock starts and kept open; reopened (with backoff) after a
    /// failure or a graceful server close. Level-triggered, TCP_NODELAY.
    KeepAlive,
    /// One connection per request: opened when the request is due, the request written
    /// once connected, the reply read to EOF, which completes it. Edge-triggered.
    PerRequest,
}

/// How a workload puts bytes on a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sending {
    /// Whole requests ([`Plugin::request`]), up to `depth` in flight, paced by the
    /// schedule (open loop) or by replies (closed loop).
    Requests,
    /// A byte stream written straight from shared data ([`Plugin::next_bytes`]) as fast
    /// as the socket takes it; a message counts as sent when its last byte is written.
    Bytes,
}

/// Parameter defaults of one workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// Active connections (per-request workloads: concurrent connection slots).
    pub connections: usize,
    /// Requests (or messages) in flight per connection.
    pub depth: usize,
    /// Message size in bytes; 0 where size does not apply.
    pub size: usize,
    /// Idle connections held open; 0 where idle connections do not apply.
    pub idle: usize,
}

/// What a workload is, as every entry point (flags, suites, results, charts) needs to know.
#[derive(Debug, Clone, Copy)]
pub struct Facts {
    /// How charts title it: "HTTP GET keep-alive".
    pub title: &'static str,
    /// What a run of it does, for titles and tables, from its size and depth:
    /// "echo, 64 B messages, depth 1".
    pub describe: fn(size: usize, depth: usize) -> String,
    /// The server-side service it needs.
    pub service: backend_api::Service,
    /// How it uses connections.
    pub connect: Connect,
    /// How it sends.
    pub sending: Sending,
    /// Whether `size` applies.
    pub sized: bool,
    /// Whether it holds `idle` connections beside the active ones.
    pub holds_idle: bool,
    /// Whether a rate (open loop) and a request cap apply; a workload that is not paced
    /// runs flat out for the duration.
    pub paced: bool,
    /// Always open loop at this many requests per second per connection unless a rate is
    /// given (the total rate is connections × this); `None` for workloads that may run
    /// closed loop.
    pub conn_rate: Option<f64>,
    /// Its defaults.
    pub defaults: Defaults,
}

/// A reply that EOF completed, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Eof {
    /// Nothing was in progress.
    Nothing,
    /// EOF completed a reply (a body framed by the close), with the reply's error if it
    /// was a well-framed failure.
    Completed(Option<ClientError>),
}

/// One workload's client side, free of I/O. The worker moves bytes; a plug-in builds
/// requests into a connection's output buffer and consumes replies from the read buffer.
pub(crate) trait Plugin: Sized + Send + Sync + 'static {
    /// What it is and which parameters apply.
    const FACTS: Facts;
    /// One connection's state.
    type Conn: std::fmt::Debug + Send;

    /// Read-only data every connection of a run shares (requests, verification pattern).
    fn new(cfg: &LoadConfig) -> Self;

    /// Fresh state for a new connection; `seed` varies the bytes between connections.
    fn conn(&self, seed: u64) -> Self::Conn;

    /// [`Sending::Requests`]: appends one request to `out`.
    fn request(&self, _conn: &mut Self::Conn, _out: &mut Vec<u8>) {}

    /// [`Sending::Bytes`]: the next bytes to write, empty when the window is full. When
    /// `finishing`, only the rest of the message being written (the run is draining).
    fn next_bytes(&self, _conn: &Self::Conn, _finishing: bool) -> &[u8] {
        &[]
    }

    /// [`Sending::Bytes`]: `n` bytes were written; returns how many messages that
    /// completed.
    fn written(&self, _conn: &mut Self::Conn, _n: usize) -> u64 {
        0
    }

    /// Consumes `data`, calling `on_reply` once per complete reply, in order, with the
    /// reply's error if it was a well-framed failure (an HTTP 503, say). `outstanding` is
    /// how many replies the worker expects. An `Err` means the connection can no longer
    /// be trusted and must be closed.
    fn feed(
        &self,
        conn: &mut Self::Conn,
        data: &[u8],
        outstanding: usize,
        on_reply: impl FnMut(Option<ClientError>),
    ) -> Result<(), ClientError>;

    /// The peer closed the connection. `Err` when that cut a reply.
    fn on_eof(&self, conn: &mut Self::Conn) -> Result<Eof, ClientError>;

    /// True once the server announced it closes the connection after the last reply:
    /// nothing more is sent on it, and its EOF is not an error.
    fn server_closing(&self, _conn: &Self::Conn) -> bool {
        false
    }
}

/// Period of the verification pattern: a prime, so the per-message offsets below cycle
/// through every position before repeating.
pub(crate) const PERIOD: usize = 65_521;

/// Pseudo-random bytes every connection of a byte-checking workload (echo, stream) takes
/// its messages from, and the message size.
#[derive(Debug)]
pub(crate) struct Pattern {
    /// Message size in bytes.
    pub size: usize,
    /// `PERIOD` bytes plus room for the longest slice taken from it.
    pub bytes: Vec<u8>,
}

impl Pattern {
    /// A pattern for messages of `size` bytes and slices of up to `longest` bytes.
    pub(crate) fn new(size: usize, longest: usize) -> Pattern {
        Pattern {
            size,
            bytes: pattern(PERIOD + longest),
        }
    }

    /// `len` pattern bytes starting at stream position `pos`.
    #[inline]
    pub(crate) fn at(&self, pos: u64, len: usize) -> &[u8] {
        let start = (pos % PERIOD as u64) as usize;
        &self.bytes[start..start + len]
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
