//! Suites: which workloads, at which parameters, how long and how often.
//!
//! A suite is a list of blocks; each block sweeps the cartesian product of its list-valued
//! parameters. Built-in suites are TOML too (`suites/*.toml` in the repository, embedded in
//! the binary), so what `--quick` runs can be read, copied and edited.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::results::{WorkloadKind, WorkloadSpec};

/// The default suite: a complete picture of a small box in about ten minutes.
pub const DEFAULT_SUITE: &str = include_str!("../../../suites/default.toml");
/// The quick suite: every workload once, short, under a minute on 2 cores.
pub const QUICK_SUITE: &str = include_str!("../../../suites/quick.toml");

/// A value or a list of values to sweep.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany<T> {
    /// One value.
    One(T),
    /// A sweep.
    Many(Vec<T>),
}

impl<T: Clone> OneOrMany<T> {
    /// The value, or the sweep's values, in order.
    pub(crate) fn values(&self) -> Vec<T> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// A suite file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SuiteFile {
    /// Name shown in results and reports.
    pub name: String,
    /// Repeats per cell unless a block says otherwise.
    #[serde(default = "default_repeats")]
    pub repeats: u32,
    /// Measured seconds per cell unless a block says otherwise.
    #[serde(default = "default_duration")]
    pub duration: f64,
    /// Warmup seconds per cell unless a block says otherwise.
    #[serde(default = "default_warmup")]
    pub warmup: f64,
    /// Backends to compare (default: every available one).
    pub backends: Option<Vec<String>>,
    /// The blocks.
    #[serde(rename = "block")]
    pub blocks: Vec<Block>,
    /// External servers measured beside the backends (`[[external]]`).
    #[serde(default, rename = "external")]
    pub externals: Vec<super::external::ExternalEntry>,
}

fn default_repeats() -> u32 {
    3
}
fn default_duration() -> f64 {
    2.0
}
fn default_warmup() -> f64 {
    0.5
}

/// One block of cells. A parameter left out takes the workload's default, the same as
/// `harness load` gives it ([`WorkloadSpec::new`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Block {
    /// Series group name; `{size}`, `{depth}`, `{connections}`, `{rate}`, `{conn_rate}`,
    /// `{idle}`, `{server_cores}` are replaced by the cell's values.
    pub group: String,
    /// Workload.
    pub workload: WorkloadKind,
    /// Active connections.
    pub connections: Option<OneOrMany<usize>>,
    /// Requests in flight per connection.
    pub depth: Option<OneOrMany<usize>>,
    /// Message size in bytes (workloads that send messages of a size).
    pub size: Option<OneOrMany<usize>>,
    /// Open-loop total rates (req/s); absent = closed loop.
    pub rate: Option<OneOrMany<f64>>,
    /// Open-loop rates as fractions of a calibrated ceiling, e.g. `[0.25, 0.5, 0.75]`:
    /// before the cells run, compare measures every backend closed loop at this shape for
    /// a moment and takes the slowest one's throughput (which is also at most what the
    /// generator can send); each fraction of it, rounded down to two significant figures,
    /// becomes one fixed rate, the same for every backend. Excludes `rate`.
    pub ladder: Option<Vec<f64>>,
    /// Open-loop rates per connection (req/s each; the total is connections × this), the
    /// natural unit of `sparse`; instead of `rate`.
    pub conn_rate: Option<OneOrMany<f64>>,
    /// Idle connections (workloads that hold idle connections).
    pub idle: Option<OneOrMany<usize>>,
    /// Number of server cores (the first N of the server set); absent = all of them.
    pub server_cores: Option<OneOrMany<usize>>,
    /// Overrides the suite's repeats.
    pub repeats: Option<u32>,
    /// Overrides the suite's duration.
    pub duration: Option<f64>,
    /// Overrides the suite's warmup.
    pub warmup: Option<f64>,
}

/// One planned measurement shape (before backends and repeats are multiplied in).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedCell {
    /// Series group.
    pub group: String,
    /// Workload and parameters.
    pub workload: WorkloadSpec,
    /// Server core count (None = all server cores).
    pub server_cores: Option<usize>,
    /// Repeats.
    pub repeats: u32,
    /// The fraction of the calibrated ceiling this cell's rate is to be (a `ladder`
    /// block); its `workload.rate` is filled in by calibration before it runs.
    pub ladder: Option<f64>,
}

/// A parsed, expanded suite.
#[derive(Debug, Clone)]
pub struct Suite {
    /// Name.
    pub name: String,
    /// Backends named by the suite, if any.
    pub backends: Option<Vec<String>>,
    /// External servers of the suite.
    pub externals: Vec<super::external::External>,
    /// Every cell shape, in order.
    pub cells: Vec<PlannedCell>,
}

impl Suite {
    /// Parses a suite from TOML text (`origin` names it in errors).
    pub fn parse(text: &str, origin: &str) -> anyhow::Result<Suite> {
        let file: SuiteFile =
            toml::from_str(text).with_context(|| format!("suite {origin} is not valid"))?;
        file.expand().with_context(|| format!("suite {origin}"))
    }

    /// Loads a suite file.
    pub fn load(path: &Path) -> anyhow::Result<Suite> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading suite {}", path.display()))?;
        Suite::parse(&text, &path.display().to_string())
    }
}

impl SuiteFile {
    fn expand(self) -> anyhow::Result<Suite> {
        if self.blocks.is_empty() {
            bail!("has no [[block]]; add at least one (see suites/quick.toml)");
        }
        let mut cells = Vec::new();
        for (i, b) in self.blocks.iter().enumerate() {
            let repeats = b.repeats.unwrap_or(self.repeats);
            let duration = b.duration.unwrap_or(self.duration);
            let warmup = b.warmup.unwrap_or(self.warmup);
            let ctx = || format!("block {} ({})", i + 1, b.group);
            if repeats == 0 {
                bail!("{}: repeats must be at least 1", ctx());
            }
            let secs = |what: &str, v: f64| {
                std::time::Duration::try_from_secs_f64(v)
                    .with_context(|| format!("{}: {what} {v}: give a number of seconds", ctx()))
            };
            let (duration, warmup) = (secs("duration", duration)?, secs("warmup", warmup)?);
            let facts = b.workload.facts();
            if b.size.is_some() && !facts.sized {
                bail!(
                    "{}: `size` does not apply to workload = \"{}\"",
                    ctx(),
                    b.workload
                );
            }
            if b.idle.is_some() && !facts.holds_idle {
                bail!(
                    "{}: `idle` does not apply to workload = \"{}\"",
                    ctx(),
                    b.workload
                );
            }
            let d = facts.defaults;
            let values = |v: &Option<OneOrMany<usize>>, default: usize| {
                v.as_ref().map_or_else(|| vec![default], OneOrMany::values)
            };
            // Per-connection rates become total rates once the connections are known.
            let per_conn: Vec<Option<f64>> = match (&b.rate, &b.conn_rate) {
                (Some(_), Some(_)) => bail!(
                    "{}: give `rate` (total) or `conn_rate` (per connection), not both",
                    ctx()
                ),
                (None, Some(r)) => r.values().into_iter().map(Some).collect(),
                (None, None) if facts.conn_rate.is_some() => vec![facts.conn_rate],
                _ => vec![None],
            };
            let rates_for = |connections: usize| -> Vec<Option<f64>> {
                match &b.rate {
                    Some(r) => r.values().into_iter().map(Some).collect(),
                    None => per_conn
                        .iter()
                        .map(|r| r.map(|r| r * connections as f64))
                        .collect(),
                }
            };
            let fixed = b.rate.is_some() || b.conn_rate.is_some() || facts.conn_rate.is_some();
            let fractions: Vec<Option<f64>> = match (&b.ladder, fixed) {
                (None, _) => vec![None],
                (Some(_), true) => bail!(
                    "{}: give either a rate (`rate`, `conn_rate`, or a workload with its own per-connection rate) or `ladder` (fractions of the calibrated ceiling), not both",
                    ctx()
                ),
                (Some(f), false) if f.is_empty() => {
                    bail!("{}: `ladder` is empty; give fractions such as [0.25, 0.5]", ctx())
                }
                (Some(f), false) => {
                    if let Some(bad) = f.iter().find(|x| !(**x > 0.0 && **x <= 1.0)) {
                        bail!(
                            "{}: ladder fraction {bad} is out of range: give fractions above 0 and at most 1 of the slowest backend's ceiling",
                            ctx()
                        );
                    }
                    if !facts.paced {
                        bail!(
                            "{}: `ladder` needs an open-loop workload; workload = \"{}\" has no fixed rate",
                            ctx(),
                            b.workload
                        );
                    }
                    f.iter().copied().map(Some).collect()
                }
            };
            let cores: Vec<Option<usize>> = match &b.server_cores {
                None => vec![None],
                Some(v) => v.values().into_iter().map(Some).collect(),
            };
            for &n in &cores {
                if n == Some(0) {
                    bail!("{}: server_cores must be at least 1", ctx());
                }
            }
            for connections in values(&b.connections, d.connections) {
                for depth in values(&b.depth, d.depth) {
                    for size in values(&b.size, d.size) {
                        for rate in rates_for(connections) {
                            for &ladder in &fractions {
                                for idle in values(&b.idle, d.idle) {
                                    for &sc in &cores {
                                        let workload = WorkloadSpec {
                                            kind: b.workload,
                                            connections,
                                            depth,
                                            size,
                                            rate,
                                            duration,
                                            warmup,
                                            idle,
                                            requests: None,
                                        };
                                        workload.validate().with_context(ctx)?;
                                        let group = b
                                            .group
                                            .replace("{size}", &size_label(size))
                                            .replace("{depth}", &depth.to_string())
                                            .replace("{connections}", &connections.to_string())
                                            .replace(
                                                "{conn_rate}",
                                                &rate
                                                    .map(|r| format!("{}", r / connections as f64))
                                                    .unwrap_or_default(),
                                            )
                                            .replace(
                                                "{rate}",
                                                &rate.map(|r| format!("{r}")).unwrap_or_default(),
                                            )
                                            .replace(
                                                "{idle}",
                                                &if facts.holds_idle {
                                                    idle.to_string()
                                                } else {
                                                    String::new()
                                                },
                                            )
                                            .replace(
                                                "{server_cores}",
                                                &sc.map(|v| v.to_string()).unwrap_or_default(),
                                            );
                                        cells.push(PlannedCell {
                                            group,
                                            workload,
                                            server_cores: sc,
                                            repeats,
                                            ladder,
                                        });
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        let externals = self
            .externals
            .into_iter()
            .map(super::external::ExternalEntry::into_external)
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Suite {
            name: self.name,
            backends: self.backends,
            externals,
            cells,
        })
    }
}

/// "64B", "1KiB", "16KiB", "1MiB".
pub fn size_label(size: usize) -> String {
    match size {
        s if s >= 1 << 20 && s % (1 << 20) == 0 => format!("{}MiB", s >> 20),
        s if s >= 1024 && s % 1024 == 0 => format!("{}KiB", s >> 10),
        s => format!("{s}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_suites_parse() {
        let d = Suite::parse(DEFAULT_SUITE, "default").unwrap();
        let q = Suite::parse(QUICK_SUITE, "quick").unwrap();
        // Every workload but the test-only one and sparse, whose thousands of connections
        // would break the quick suite's minute: it has its own suite, wan.toml.
        let wan = Suite::load(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites/wan.toml"),
        )
        .unwrap();
        assert!(wan
            .cells
            .iter()
            .any(|c| c.workload.kind == WorkloadKind::Sparse));
        for &kind in WorkloadKind::all()
            .iter()
            .filter(|&&k| k != WorkloadKind::Lines && k != WorkloadKind::Sparse)
        {
            assert!(
                d.cells.iter().any(|c| c.workload.kind == kind),
                "default suite lacks {kind:?}"
            );
            assert!(
                q.cells.iter().any(|c| c.workload.kind == kind),
                "quick suite lacks {kind:?}"
            );
        }
        for (group, kind) in [
            ("http-d1-fixed", WorkloadKind::Http),
            ("http-d16-fixed", WorkloadKind::Http),
            ("echo-64B-fixed", WorkloadKind::Echo),
        ] {
            let ladder: Vec<f64> = d
                .cells
                .iter()
                .filter(|c| c.group == group && c.workload.kind == kind)
                .filter_map(|c| c.ladder)
                .collect();
            assert!(
                ladder.len() >= 2,
                "default suite lacks the {group} rate ladder"
            );
        }
    }

    #[test]
    fn every_committed_suite_parses() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../suites");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                let s = Suite::load(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()));
                assert!(!s.cells.is_empty(), "{}", path.display());
                n += 1;
            }
        }
        assert!(n >= 5, "only {n} suites found in {}", dir.display());
    }

    #[test]
    fn sweeps_expand_and_groups_fill_in() {
        let s = Suite::parse(
            "name = \"t\"\n[[block]]\ngroup = \"echo-{size}\"\nworkload = \"echo\"\nsize = [64, 1024]\nconnections = [1, 2, 3]\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.cells.len(), 6);
        assert_eq!(s.cells[0].group, "echo-64B");
        assert_eq!(s.cells[5].group, "echo-1KiB");
    }

    #[test]
    fn bad_suites_say_what_is_valid() {
        let e = format!(
            "{:#}",
            Suite::parse(
                "name = \"t\"\n[[block]]\ngroup = \"g\"\nworkload = \"ftp\"\n",
                "t"
            )
            .unwrap_err()
        );
        assert!(e.contains("echo") && e.contains("idle"), "{e}");
        let e = format!(
            "{:#}",
            Suite::parse(
                "name = \"t\"\nbogus = 1\n[[block]]\ngroup = \"g\"\nworkload = \"echo\"\n",
                "t"
            )
            .unwrap_err()
        );
        assert!(e.contains("bogus") && e.contains("repeats"), "{e}");
        let e = format!(
            "{:#}",
            Suite::parse(
                "name = \"t\"\n[[block]]\ngroup = \"g\"\nworkload = \"echo\"\nrate = 0\n",
                "t"
            )
            .unwrap_err()
        );
        assert!(e.contains("rate must be above 0"), "{e}");
        let e = format!(
            "{:#}",
            Suite::parse(
                "name = \"t\"\n[[block]]\ngroup = \"g\"\nworkload = \"sparse\"\nrate = 5\nconn_rate = 1\n",
                "t"
            )
            .unwrap_err()
        );
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn per_connection_rates_multiply_by_connections() {
        let s = Suite::parse(
            "name = \"t\"\n[[block]]\ngroup = \"s-{connections}-{conn_rate}\"\nworkload = \"sparse\"\nconnections = [100, 1000]\nconn_rate = 2\n",
            "t",
        )
        .unwrap();
        let rates: Vec<Option<f64>> = s.cells.iter().map(|c| c.workload.rate).collect();
        assert_eq!(rates, [Some(200.0), Some(2000.0)]);
        assert_eq!(s.cells[1].group, "s-1000-2");
        // Sparse without a rate takes its default per-connection rate.
        let s = Suite::parse(
            "name = \"t\"\n[[block]]\ngroup = \"s\"\nworkload = \"sparse\"\nconnections = 10\n",
            "t",
        )
        .unwrap();
        assert_eq!(s.cells[0].workload.rate, Some(20.0));
    }
}
