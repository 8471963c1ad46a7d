//! What a load run does: [`LoadConfig`], its defaults per workload, and the caps that turn
//! absurd input into an error naming the flag.

use std::net::SocketAddr;
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

/// Everything one load run needs. Build with [`LoadConfig::new`] and adjust fields;
/// [`crate::load::run_load`] validates it first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoadConfig {
    /// The server to load.
    pub target: SocketAddr,
    /// `Host` header for HTTP workloads (defaults to the target address).
    pub host: String,
    /// Path requested by HTTP workloads.
    pub path: String,
    /// The traffic to generate.
    pub workload: Workload,
    /// Active connections (echo, http, stream, idle) or concurrent connection slots (churn).
    pub connections: usize,
    /// Requests kept in flight per connection (closed loop), or most in flight (open loop).
    /// Stream: messages of `size` bytes in flight per connection.
    pub depth: usize,
    /// Echo message size, or stream message size, in bytes.
    pub size: usize,
    /// Open loop: total requests (churn: connections) per second. `None`: closed loop.
    pub rate: Option<f64>,
    /// Measured time, after the warmup.
    pub duration: Duration,
    /// Time run before measuring; excluded from every statistic.
    pub warmup: Duration,
    /// Client cores: one pinned thread each (at most one thread per connection).
    pub cores: Vec<usize>,
    /// Idle connections held open during an `idle` run.
    pub idle: usize,
    /// Optional cap on measured requests; the run ends when it is reached or the duration
    /// is over, whichever comes first.
    pub requests: Option<u64>,
    /// How long one connect may take before it counts as ETIMEDOUT.
    pub connect_timeout: Duration,
    /// How long to wait for outstanding replies after the measured time.
    pub drain_timeout: Duration,
}

impl LoadConfig {
    /// A config with this workload's defaults: closed loop, 10 s after a 2 s warmup, on
    /// the last usable core.
    pub fn new(target: SocketAddr, workload: Workload) -> LoadConfig {
        let cores = backend_api::runner::usable_cores()
            .last()
            .map_or_else(Vec::new, |&c| vec![c]);
        let defaults = workload.facts().defaults;
        LoadConfig {
            target,
            host: target.to_string(),
            path: "/".to_string(),
            workload,
            connections: defaults.connections,
            depth: defaults.depth,
            size: defaults.size,
            rate: None,
            duration: Duration::from_secs(10),
            warmup: Duration::from_secs(2),
            cores,
            idle: defaults.idle,
            requests: None,
            connect_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(2),
        }
    }

    /// True when this is an open-loop (constant rate) run.
    pub fn is_open_loop(&self) -> bool {
        self.rate.is_some()
    }

    /// Client threads this config runs: one per core, but never more than connections.
    pub fn threads(&self) -> usize {
        self.cores.len().min(self.connections.max(1))
    }

    /// Checks every field against its cap; the error names the flag and the bound.
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
        let facts = self.workload.facts();
        let w = self.workload;
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
        if self.cores.is_empty() {
            return bad("--cores: no client cores given; name at least one, e.g. --cores 1".into());
        }
        if self.connect_timeout.is_zero() {
            return bad("--connect-timeout 0: give a timeout above 0 seconds".into());
        }
        if self.path.is_empty()
            || !self.path.starts_with('/')
            || self
                .path
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return bad(format!(
                "--path '{}': give an absolute path without spaces, like /plaintext",
                self.path
            ));
        }
        if self.host.bytes().any(|b| b.is_ascii_control()) {
            return bad("--host: control characters are not allowed".into());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(w: Workload) -> LoadConfig {
        let mut c = LoadConfig::new("127.0.0.1:1".parse().unwrap(), w);
        c.cores = vec![0];
        c
    }

    #[test]
    fn defaults_validate() {
        for &w in Workload::all() {
            cfg(w).validate().unwrap();
        }
    }

    #[test]
    fn bad_values_name_the_flag_and_cap() {
        type Case = (Box<dyn Fn(&mut LoadConfig)>, &'static str);
        let cases: Vec<Case> = vec![
            (Box::new(|c| c.connections = 0), "--connections 0"),
            (Box::new(|c| c.depth = 100_000), "cap of 1024"),
            (Box::new(|c| c.size = 1 << 30), "cap of 16777216"),
            (Box::new(|c| c.rate = Some(0.0)), "--rate 0"),
            (Box::new(|c| c.rate = Some(f64::NAN)), "--rate NaN"),
            (Box::new(|c| c.duration = Duration::ZERO), "--duration 0"),
            (Box::new(|c| c.idle = 5), "--idle 5 applies only"),
            (Box::new(|c| c.requests = Some(0)), "--requests 0"),
        ];
        for (f, want) in cases {
            let mut c = cfg(Workload::Echo);
            f(&mut c);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "want '{want}' in: {e}");
        }
        let mut c = cfg(Workload::Churn);
        c.depth = 2;
        assert!(c.validate().unwrap_err().to_string().contains("--depth 2"));
    }
}
