//! [`WorkloadSpec`]: a workload and its parameters, the one description every entry point
//! uses (`harness load` flags, suite blocks, result cells, reports and charts), with its
//! defaults (from the workload's [`Facts`](super::workloads::Facts)) and the caps that
//! turn absurd input into an error naming the flag.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::workloads::Connect;
use super::{LoadError, Workload};

/// Most active connections (or churn slots) one run opens.
pub const MAX_CONNECTIONS: usize = 1_000_000;
/// Most idle connections one run holds.
pub const MAX_IDLE: usize = 1_000_000;
/// Most requests in flight on one connection.
pub const MAX_DEPTH: usize = 1024;
/// Largest echo message or stream chunk, in bytes.
pub const MAX_SIZE: usize = 16 * 1024 * 1024;
/// Most bytes in flight on one connection (`--depth` × `--size`).
pub const MAX_INFLIGHT_BYTES: usize = 64 * 1024 * 1024;
/// Highest open-loop rate, in requests per second over the whole run.
pub const MAX_RATE: f64 = 20_000_000.0;
/// Longest measured duration.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Longest warmup.
pub const MAX_WARMUP: Duration = Duration::from_secs(3600);

/// A workload and its parameters, identical for every backend of a comparison.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct WorkloadSpec {
    /// Which workload.
    pub kind: Workload,
    /// Active connections (per-request workloads: concurrent connection slots).
    pub connections: usize,
    /// Requests in flight per connection (closed loop), or most in flight (open loop).
    /// Stream: messages of `size` bytes in flight per connection.
    pub depth: usize,
    /// Message size in bytes where it applies (echo, stream, idle); 0 elsewhere.
    pub size: usize,
    /// Open loop: total requests (churn: connections) per second. `None`: closed loop.
    pub rate: Option<f64>,
    /// Measured time, after the warmup.
    #[serde(rename = "duration_s", with = "secs")]
    #[schemars(rename = "duration_s", with = "f64")]
    pub duration: Duration,
    /// Time run before measuring; excluded from every statistic.
    #[serde(rename = "warmup_s", with = "secs")]
    #[schemars(rename = "warmup_s", with = "f64")]
    pub warmup: Duration,
    /// Idle connections held open beside the active ones (idle workload); 0 elsewhere.
    pub idle: usize,
    /// Optional cap on measured requests; the run ends when it is reached or the duration
    /// is over, whichever comes first.
    #[serde(default)]
    pub requests: Option<u64>,
}

/// Durations as seconds (f64), the unit of results files.
mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

impl WorkloadSpec {
    /// `kind` with its defaults: closed loop, 10 s measured after a 2 s warmup.
    pub fn new(kind: Workload) -> WorkloadSpec {
        let d = kind.facts().defaults;
        WorkloadSpec {
            kind,
            connections: d.connections,
            depth: d.depth,
            size: d.size,
            rate: kind.facts().conn_rate.map(|r| r * d.connections as f64),
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            idle: d.idle,
            requests: None,
        }
    }

    /// True when this is an open-loop (constant rate) run.
    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }

    /// Connections the run opens: active plus idle.
    pub fn total_connections(&self) -> u64 {
        (self.connections + self.idle) as u64
    }

    /// Checks every parameter against its cap and against what the workload allows; the
    /// error names the flag (the suite key of the same name) and the bound.
    pub fn validate(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Config(m));
        if self.connections == 0 {
            return bad("--connections 0: at least one connection is needed".into());
        }
        if self.connections > MAX_CONNECTIONS {
            return bad(format!(
                "--connections {} is beyond the cap of {MAX_CONNECTIONS}",
                self.connections
            ));
        }
        if self.depth == 0 {
            return bad("--depth 0: at least one request must be in flight".into());
        }
        if self.depth > MAX_DEPTH {
            return bad(format!(
                "--depth {} is beyond the cap of {MAX_DEPTH} requests in flight per connection",
                self.depth
            ));
        }
        let facts = self.kind.facts();
        let w = self.kind;
        if facts.connect == Connect::PerRequest && self.depth != 1 {
            return bad(format!(
                "--depth {}: {w} sends exactly one request per connection; use --depth 1 \
                 (or --connections for concurrency)",
                self.depth
            ));
        }
        if facts.sized {
            if self.size == 0 {
                return bad("--size 0: messages need at least 1 byte".into());
            }
            if self.size > MAX_SIZE {
                return bad(format!(
                    "--size {} is beyond the cap of {MAX_SIZE} bytes (16 MiB)",
                    self.size
                ));
            }
            if self.size.saturating_mul(self.depth) > MAX_INFLIGHT_BYTES {
                return bad(format!(
                    "--depth {} x --size {} puts {} bytes in flight per connection, beyond the \
                     cap of {MAX_INFLIGHT_BYTES} (64 MiB); lower one of them",
                    self.depth,
                    self.size,
                    self.size.saturating_mul(self.depth)
                ));
            }
        }
        if let Some(rate) = self.rate {
            if !(rate.is_finite() && rate > 0.0) {
                return bad(format!(
                    "--rate {rate}: the rate must be above 0 requests/s (omit --rate for a \
                     closed-loop run)"
                ));
            }
            if rate > MAX_RATE {
                return bad(format!(
                    "--rate {rate} is beyond the cap of {MAX_RATE} requests/s"
                ));
            }
            if !facts.paced {
                return bad(format!(
                    "--rate does not apply to --workload {w} (it runs flat out for --duration)"
                ));
            }
        }
        if self.duration.is_zero() {
            return bad("--duration 0: give a measured duration above 0 seconds".into());
        }
        if facts.conn_rate.is_some() {
            let Some(rate) = self.rate else {
                return bad(format!(
                    "--workload {w} is open loop only: give --conn-rate (requests/s per \
                     connection, e.g. 2) or --rate (total requests/s)"
                ));
            };
            let each = rate / self.connections as f64;
            let sends = each * self.duration.as_secs_f64();
            if sends < 1.0 {
                return bad(format!(
                    "--workload {w}: at {each} requests/s per connection each connection sends \
                     {sends:.2} times in --duration {} s; lengthen --duration to at least \
                     {:.1} s or raise --conn-rate",
                    self.duration.as_secs_f64(),
                    1.0 / each
                ));
            }
        }
        if self.duration > MAX_DURATION {
            return bad(format!(
                "--duration {} s is beyond the cap of {} s",
                self.duration.as_secs_f64(),
                MAX_DURATION.as_secs()
            ));
        }
        if self.warmup > MAX_WARMUP {
            return bad(format!(
                "--warmup {} s is beyond the cap of {} s",
                self.warmup.as_secs_f64(),
                MAX_WARMUP.as_secs()
            ));
        }
        if facts.holds_idle {
            if self.idle > MAX_IDLE {
                return bad(format!(
                    "--idle {} is beyond the cap of {MAX_IDLE}",
                    self.idle
                ));
            }
        } else if self.idle > 0 {
            return bad(format!(
                "--idle {} applies only to --workload {}",
                self.idle,
                names_where(|f| f.holds_idle)
            ));
        }
        if self.requests.is_some() && !facts.paced {
            return bad(format!(
                "--requests does not apply to --workload {w}; bound it with --duration"
            ));
        }
        if self.requests == Some(0) {
            return bad("--requests 0: give a cap above 0, or omit it".into());
        }
        Ok(())
    }
}

/// The workloads whose facts pass `keep`, as "a, b or c".
pub(super) fn names_where(keep: impl Fn(&super::workloads::Facts) -> bool) -> String {
    let names: Vec<&str> = Workload::all()
        .iter()
        .filter(|w| keep(w.facts()))
        .map(|w| w.as_str())
        .collect();
    match names.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => "none".to_string(),
    }
}
