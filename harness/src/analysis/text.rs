//! Words and numbers as every consumer prints them: sizes, counts, shapes, timings.

use super::{Index, Shape};
use crate::results::{WorkloadKind, WorkloadSpec};

/// "64 B", "1 KiB", "16 KiB", "1 MiB".
pub(crate) fn fmt_bytes(n: u32) -> String {
    const KIB: u32 = 1024;
    if n >= KIB * KIB && n % (KIB * KIB) == 0 {
        format!("{} MiB", n / (KIB * KIB))
    } else if n >= KIB && n % KIB == 0 {
        format!("{} KiB", n / KIB)
    } else {
        format!("{n} B")
    }
}

/// `fmt_bytes` without the space, for file names.
pub(crate) fn slug_bytes(n: u32) -> String {
    fmt_bytes(n).replace(' ', "")
}

/// "1 connection", "64 connections".
pub(crate) fn connections(n: u32) -> String {
    if n == 1 {
        "1 connection".to_string()
    } else {
        format!("{n} connections")
    }
}

/// Seconds with at most one decimal: "10 s", "2.5 s".
pub(crate) fn fmt_secs(s: f64) -> String {
    format!("{} s", fmt_sig(s, 3))
}

/// What the workload does, for titles: "echo, 64 B messages, depth 1".
pub(crate) fn describe_workload(shape: &Shape) -> String {
    (shape.kind.facts().describe)(shape.size as usize, shape.depth as usize)
}

/// How long cells of these shapes measured, from the first cell found: "10 s measured
/// after 2 s warmup".
pub(crate) fn describe_timing(index: &Index<'_>, shapes: &[Shape]) -> Option<String> {
    let spec: &WorkloadSpec = shapes
        .iter()
        .flat_map(|s| index.of_shape(s))
        .flat_map(|g| g.ok.iter().chain(&g.bad))
        .map(|c| &c.workload)
        .next()?;
    Some(format!(
        "{} measured after {} warmup",
        fmt_secs(spec.duration.as_secs_f64()),
        fmt_secs(spec.warmup.as_secs_f64())
    ))
}

/// "median of 3 repeats" (or "1 run").
pub(crate) fn describe_repeats(index: &Index<'_>, shapes: &[Shape]) -> String {
    let counts: Vec<usize> = shapes
        .iter()
        .flat_map(|s| index.of_shape(s))
        .map(|g| g.ok.len())
        .filter(|n| *n > 0)
        .collect();
    let min = counts.iter().copied().min().unwrap_or(0);
    let max = counts.iter().copied().max().unwrap_or(0);
    match (min, max) {
        (_, 0 | 1) => "one run per point".to_string(),
        (a, b) if a == b => format!("median of {b} repeats"),
        (a, b) => format!("median of {a}–{b} repeats"),
    }
}

/// Axis label of [`throughput`] for `kind`.
pub(crate) fn throughput_label(kind: WorkloadKind) -> &'static str {
    match kind {
        WorkloadKind::Stream => "throughput (MB/s, server → client)",
        WorkloadKind::Churn => "throughput (requests/s, one connection each)",
        _ => "throughput (requests/s)",
    }
}

/// Up to `sig` significant digits, trailing zeros dropped: 0.25, 1.5, 12.5, 1500.
pub(crate) fn fmt_sig(v: f64, sig: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return if v.is_finite() {
            "0".to_string()
        } else {
            "–".to_string()
        };
    }
    let decimals = (sig - 1 - v.abs().log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// 950, 1.2k, 40k, 1.5M, 2G.
pub(crate) fn fmt_si(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{}G", fmt_sig(v / 1e9, 3))
    } else if a >= 1e6 {
        format!("{}M", fmt_sig(v / 1e6, 3))
    } else if a >= 1e3 {
        format!("{}k", fmt_sig(v / 1e3, 3))
    } else {
        fmt_sig(v, 3)
    }
}

/// Microseconds as µs, ms or s.
pub(crate) fn fmt_us(v: f64) -> String {
    let a = v.abs();
    if a >= 1e6 {
        format!("{} s", fmt_sig(v / 1e6, 3))
    } else if a >= 1e3 {
        format!("{} ms", fmt_sig(v / 1e3, 3))
    } else {
        format!("{} µs", fmt_sig(v, 3))
    }
}

/// A shape in a few words, for notes: "64 B, 256 conns"; the core counts when they differ
/// from the run's own layout.
pub(crate) fn short_shape_in(index: &Index<'_>, s: &Shape) -> String {
    let mut out = short_shape(s);
    if s.server_cores != index.default_cores.0 {
        out.push_str(&format!(", {} server cores", s.server_cores));
    }
    if s.client_cores != index.default_cores.1 {
        out.push_str(&format!(", {} client cores", s.client_cores));
    }
    out
}

/// A shape in a few words: "64 B, 256 conns".
pub(crate) fn short_shape(s: &Shape) -> String {
    let mut parts = Vec::new();
    if s.sized() {
        parts.push(fmt_bytes(s.size));
    }
    if s.depth != 1 && s.kind != WorkloadKind::Churn {
        parts.push(format!("depth {}", s.depth));
    }
    parts.push(fmt_conns(s.connections));
    if s.idle > 0 {
        parts.push(format!("{} idle", fmt_si(f64::from(s.idle))));
    }
    if let Some(r) = s.rate() {
        parts.push(format!("{} req/s", fmt_si(r)));
    }
    parts.join(", ")
}

/// "1 conn", "64 conns", "10k conns".
pub(crate) fn fmt_conns(n: u32) -> String {
    let plural = if n == 1 { "" } else { "s" };
    format!("{} conn{plural}", fmt_si(f64::from(n)))
}

/// "0-3,8" for [0, 1, 2, 3, 8]; "none" for an empty list.
pub(crate) fn fmt_cores(cores: &[usize]) -> String {
    if cores.is_empty() {
        return "none".to_string();
    }
    let mut v = cores.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut out: Vec<String> = Vec::new();
    let mut start = v[0];
    let mut prev = v[0];
    for &c in &v[1..] {
        if c == prev + 1 {
            prev = c;
            continue;
        }
        out.push(range_str(start, prev));
        start = c;
        prev = c;
    }
    out.push(range_str(start, prev));
    out.join(",")
}

fn range_str(a: usize, b: usize) -> String {
    if a == b {
        a.to_string()
    } else {
        format!("{a}-{b}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(fmt_bytes(64), "64 B");
        assert_eq!(fmt_bytes(16 * 1024), "16 KiB");
        assert_eq!(fmt_bytes(1 << 20), "1 MiB");
        assert_eq!(fmt_bytes(1500), "1500 B");
        assert_eq!(slug_bytes(1024), "1KiB");
    }
}
