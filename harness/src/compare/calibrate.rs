//! Calibration of `ladder` blocks: the fixed rates at which every backend is compared.
//!
//! Cost per request depends on the offered load, so backends are compared at the same
//! absolute rates. Those must sit below every backend's ceiling, or the slowest one falls
//! behind and its cells measure saturation instead. So before the cells run, each backend
//! runs the block's shape closed loop for a moment; the slowest throughput (which is also
//! at most what the generator can send, since every run went through it) is the ceiling,
//! and each of the block's fractions of it, rounded down to two significant figures, is one
//! rate for every backend.

use std::collections::BTreeMap;
use std::time::Duration;

use backend_api::StopSignal;

use super::cell::{self, CellJob};
use super::suite::PlannedCell;
use crate::results::{Calibration, CellStatus, LadderRate};

/// Measured window of a calibration run.
pub const WINDOW: Duration = Duration::from_millis(500);
/// Warmup of a calibration run.
pub const WARMUP: Duration = Duration::from_millis(250);

/// What a calibration run needs besides the shape: the same as a cell.
pub struct Context<'a> {
    pub exe: &'a std::path::Path,
    pub backends: &'a [String],
    /// The external servers among `backends`.
    pub externals: &'a [super::external::External],
    pub server_cores: &'a [usize],
    pub client_cores: &'a [usize],
    pub ready_timeout: Duration,
    pub server_env: &'a [(String, String)],
    /// Where the load runs (in process, agents, namespaces): calibrated the same way the
    /// cells will be measured.
    pub clients: crate::topology::ClientSide<'a>,
    /// Set when the run is interrupted: calibration stops early.
    pub interrupted: &'a dyn Fn() -> bool,
    /// Holds the stop signal of the run in progress, for Ctrl-C.
    pub current_stop: &'a dyn Fn(Option<StopSignal>),
}

/// Fills in the rate of every ladder cell in `cells`, one calibration per distinct shape,
/// and returns what was measured. Cells whose shape could not be calibrated (every
/// backend failed) are removed, and the calibration says why.
pub fn resolve(cells: &mut Vec<PlannedCell>, cx: &Context<'_>) -> anyhow::Result<Vec<Calibration>> {
    let mut done: Vec<(ShapeKey, Calibration)> = Vec::new();
    for c in cells.iter_mut() {
        let Some(fraction) = c.ladder else {
            continue;
        };
        let key = ShapeKey::of(c);
        if !done.iter().any(|(k, _)| *k == key) {
            if (cx.interrupted)() {
                break;
            }
            let cal = calibrate(c, cx)?;
            done.push((key.clone(), cal));
        }
        let cal = &mut done
            .iter_mut()
            .find(|(k, _)| *k == key)
            .expect("just added")
            .1;
        if cal.slowest.is_none() {
            continue;
        }
        let ceiling = cal.ceilings[cal.slowest.as_deref().unwrap_or_default()];
        let rate = round_down_2sf(ceiling * fraction);
        if !cal.rates.iter().any(|r| r.fraction == fraction) {
            cal.rates.push(LadderRate { fraction, rate });
        }
        c.workload.rate = Some(rate);
        c.group = c.group.replace("{rate}", &format!("{rate}"));
    }
    // Interrupted before its shape was calibrated, or no backend completed: nothing to run.
    cells.retain(|c| c.ladder.is_none() || c.workload.rate.is_some());
    Ok(done.into_iter().map(|(_, c)| c).collect())
}

/// Cells of one ladder block share everything but the fraction.
#[derive(Debug, Clone, PartialEq)]
struct ShapeKey {
    group: String,
    workload: crate::results::WorkloadSpec,
    server_cores: Option<usize>,
}

impl ShapeKey {
    fn of(c: &PlannedCell) -> ShapeKey {
        ShapeKey {
            group: c.group.clone(),
            workload: c.workload.clone(),
            server_cores: c.server_cores,
        }
    }
}

/// One closed-loop run per backend of `shape`'s shape.
fn calibrate(shape: &PlannedCell, cx: &Context<'_>) -> anyhow::Result<Calibration> {
    let mut closed = shape.clone();
    closed.workload.rate = None;
    closed.workload.duration = WINDOW;
    closed.workload.warmup = WARMUP;
    closed.ladder = None;
    closed.repeats = 1;
    eprintln!(
        "calibrating {}: {} backends closed loop for {:.1?} each",
        shape.group.replace("{rate}", "*"),
        cx.backends.len(),
        WINDOW + WARMUP
    );
    let cores: Vec<usize> = match shape.server_cores {
        Some(n) => cx.server_cores[..n.min(cx.server_cores.len())].to_vec(),
        None => cx.server_cores.to_vec(),
    };
    let mut ceilings = BTreeMap::new();
    let mut failed = BTreeMap::new();
    let mut bound = BTreeMap::new();
    for backend in cx.backends {
        if (cx.interrupted)() {
            break;
        }
        let stop = StopSignal::new()?;
        (cx.current_stop)(Some(stop.clone()));
        let job = CellJob {
            exe: cx.exe,
            backend,
            shape: &closed,
            repeat: 0,
            server_cores: &cores,
            client_cores: cx.client_cores,
            stop: &stop,
            ready_timeout: cx.ready_timeout,
            server_env: cx.server_env,
            external: cx.externals.iter().find(|e| &e.name == backend),
            clients: cx.clients,
        };
        let measured = cell::run(&job);
        (cx.current_stop)(None);
        match (&measured.status, &measured.client) {
            (CellStatus::Ok, Some(c)) if c.throughput_rps > 0.0 => {
                ceilings.insert(backend.clone(), c.throughput_rps);
                bound.insert(backend.clone(), c.client_bound);
            }
            (CellStatus::Ok, _) => {
                failed.insert(backend.clone(), "completed no request".to_string());
            }
            (CellStatus::Failed { reason, .. }, _)
            | (CellStatus::Unsupported { reason }, _)
            | (CellStatus::Invalid { reason }, _) => {
                failed.insert(backend.clone(), reason.clone());
            }
        }
    }
    let slowest = ceilings
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(name, _)| name.clone());
    if slowest.is_none() {
        eprintln!(
            "calibration of {} failed for every backend; its fixed-rate cells are left out",
            shape.group
        );
    }
    Ok(Calibration {
        group: shape.group.clone(),
        workload: closed.workload,
        client_bound: slowest
            .as_ref()
            .is_some_and(|s| bound.get(s).copied().unwrap_or(false)),
        ceilings,
        failed,
        slowest,
        rates: Vec::new(),
    })
}

/// `x` rounded down to two significant figures (19,283 → 19,000; 842 → 840), so a ladder's
/// rates read as round numbers and never exceed their fraction of the ceiling.
pub fn round_down_2sf(x: f64) -> f64 {
    if !(x > 0.0 && x.is_finite()) {
        return 0.0;
    }
    let unit = 10f64.powi(x.log10().floor() as i32 - 1);
    ((x / unit).floor() * unit).max(1.0)
}

/// "calibrated http-d1-fixed: slowest blocking 77.0k req/s (client-bound) -> 19000, 38000 req/s"
pub fn line(cal: &crate::results::Calibration) -> String {
    let rates: Vec<String> = cal.rates.iter().map(|r| format!("{}", r.rate)).collect();
    match &cal.slowest {
        Some(s) => format!(
            "calibrated {}: slowest {s} at {:.1}k req/s closed loop{} -> {} req/s",
            cal.group,
            cal.ceilings.get(s).copied().unwrap_or(0.0) / 1e3,
            if cal.client_bound {
                " (client-bound: the generator's ceiling)"
            } else {
                ""
            },
            rates.join(", ")
        ),
        None => format!(
            "calibration of {} failed for every backend ({}); its fixed-rate cells are left out",
            cal.group,
            cal.failed
                .iter()
                .map(|(b, why)| format!("{b}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_keeps_two_figures_and_never_rounds_up() {
        assert_eq!(round_down_2sf(19_283.0), 19_000.0);
        assert_eq!(round_down_2sf(842.7), 840.0);
        assert_eq!(round_down_2sf(100_000.0), 100_000.0);
        assert_eq!(round_down_2sf(99_999.0), 99_000.0);
        assert_eq!(round_down_2sf(57.9), 57.0);
        assert_eq!(round_down_2sf(0.0), 0.0);
        for x in [1.5, 37.0, 12_345.0, 987_654.0] {
            assert!(
                round_down_2sf(x) <= x && round_down_2sf(x) > 0.89 * x,
                "{x}"
            );
        }
    }
}
