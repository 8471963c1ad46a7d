//! What a load run does: [`LoadConfig`], a [`WorkloadSpec`] plus where and how to run it
//! (target, client cores, timeouts).

use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{LoadError, Workload, WorkloadSpec};

/// Descriptors a process keeps free beyond its connections (epoll, eventfds, stdio,
/// pipes, files): the one margin the load generator and `harness compare` both count.
pub const FD_MARGIN: u64 = 128;

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
    /// The traffic to generate and its parameters.
    pub workload: WorkloadSpec,
    /// Client cores: one pinned thread each (at most one thread per connection).
    pub cores: Vec<usize>,
    /// How long one connect may take before it counts as ETIMEDOUT.
    pub connect_timeout: Duration,
    /// How long to wait for outstanding replies after the measured time.
    pub drain_timeout: Duration,
}

impl LoadConfig {
    /// A config with this workload's defaults ([`WorkloadSpec::new`]) on the last usable
    /// core.
    pub fn new(target: SocketAddr, workload: Workload) -> LoadConfig {
        LoadConfig::of(target, WorkloadSpec::new(workload))
    }

    /// A config running `workload` against `target` on the last usable core.
    pub fn of(target: SocketAddr, workload: WorkloadSpec) -> LoadConfig {
        let cores = backend_api::runner::usable_cores()
            .last()
            .map_or_else(Vec::new, |&c| vec![c]);
        LoadConfig {
            target,
            host: target.to_string(),
            path: "/".to_string(),
            workload,
            cores,
            connect_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(2),
        }
    }

    /// True when this is an open-loop (constant rate) run.
    pub fn is_open_loop(&self) -> bool {
        self.workload.is_open_loop()
    }

    /// Client threads this config runs: one per core, but never more than connections.
    pub fn threads(&self) -> usize {
        self.cores.len().min(self.workload.connections.max(1))
    }

    /// Checks the workload ([`WorkloadSpec::validate`]) and the rest; the error names the
    /// flag and the bound.
    pub fn validate(&self) -> Result<(), LoadError> {
        self.workload.validate()?;
        let bad = |m: String| Err(LoadError::Config(m));
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
        type Case = (Box<dyn Fn(&mut WorkloadSpec)>, &'static str);
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
            f(&mut c.workload);
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(want), "want '{want}' in: {e}");
        }
        let mut c = cfg(Workload::Churn);
        c.workload.depth = 2;
        assert!(c.validate().unwrap_err().to_string().contains("--depth 2"));
        let mut c = cfg(Workload::Echo);
        c.path = "x y".into();
        assert!(c.validate().unwrap_err().to_string().contains("--path"));
    }
}
