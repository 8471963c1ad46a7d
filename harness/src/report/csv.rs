//! The CSV export: one row per cell, every number at full precision, empty where a value
//! was not measured (never zero).

use std::fmt::Write as _;

use crate::analysis::{is_ok, status_reason, status_word};
use crate::results::{Cell, Percentiles, ResultsFile};

const COLUMNS: &[&str] = &[
    "group",
    "backend",
    "workload",
    "connections",
    "depth",
    "size_bytes",
    "rate_target",
    "idle",
    "duration_s",
    "warmup_s",
    "repeat",
    "server_cores",
    "client_cores",
    "started_at",
    "status",
    "reason",
    "requests",
    "throughput_rps",
    "mbps_out",
    "mbps_in",
    "p50_us",
    "p90_us",
    "p99_us",
    "p999_us",
    "max_us",
    "mean_us",
    "uncorrected_p50_us",
    "uncorrected_p99_us",
    "achieved_rate",
    "schedule_lag_p99_us",
    "client_cpu_max",
    "client_bound",
    "connections_requested",
    "connections_established",
    "connections_per_s",
    "connect_p50_us",
    "connect_p99_us",
    "idle_establish_s",
    "errors",
    "cpu_user_s",
    "cpu_sys_s",
    "cpu_user_us_per_req",
    "cpu_sys_us_per_req",
    "cpu_busy",
    "syscalls",
    "syscalls_per_req",
    "syscalls_absent",
    "ctx_voluntary",
    "ctx_involuntary",
    "ctx_per_req",
    "rss_peak_bytes",
    "rss_per_conn_bytes",
    "kernel_sock_mem_bytes",
    "kernel_slab_bytes",
];

/// `results` as CSV: a header, then one row per cell in run order.
pub fn csv(results: &ResultsFile) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", COLUMNS.join(","));
    for row in rows(results) {
        let fields: Vec<String> = row.iter().map(|f| quote(f)).collect();
        let _ = writeln!(out, "{}", fields.join(","));
    }
    out
}

/// The CSV's column names, in order.
pub(crate) fn columns() -> &'static [&'static str] {
    COLUMNS
}

/// One row of fields per cell in run order, aligned with [`columns`]; empty where a value
/// was not measured.
pub(crate) fn rows(results: &ResultsFile) -> Vec<Vec<String>> {
    results
        .cells
        .iter()
        .map(|cell| {
            let row = row(cell);
            debug_assert_eq!(row.len(), COLUMNS.len());
            row
        })
        .collect()
}

fn row(c: &Cell) -> Vec<String> {
    let w = &c.workload;
    let cores = |v: &[usize]| {
        v.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let f = |v: f64| v.to_string();
    let of = |v: Option<f64>| v.map(f).unwrap_or_default();
    let ou = |v: Option<u64>| v.map(|x| x.to_string()).unwrap_or_default();
    let status = if is_ok(c) { "ok" } else { status_word(c) };
    let reason = if is_ok(c) {
        String::new()
    } else {
        status_reason(c)
    };
    let mut r = vec![
        c.group.clone(),
        c.backend.clone(),
        w.kind.as_str().to_string(),
        w.connections.to_string(),
        w.depth.to_string(),
        w.size.to_string(),
        of(w.rate),
        if w.kind.facts().holds_idle {
            w.idle.to_string()
        } else {
            String::new()
        },
        f(w.duration.as_secs_f64()),
        f(w.warmup.as_secs_f64()),
        c.repeat.to_string(),
        cores(&c.server_cores),
        cores(&c.client_cores),
        c.started_at.clone(),
        status.to_string(),
        reason,
    ];
    let pct = |p: Option<&Percentiles>| -> [String; 6] {
        match p {
            Some(p) => [p.p50, p.p90, p.p99, p.p999, p.max, p.mean].map(f),
            None => Default::default(),
        }
    };
    match &c.client {
        Some(m) => {
            r.push(m.requests.to_string());
            r.push(f(m.throughput_rps));
            r.push(f(m.mbps_out));
            r.push(f(m.mbps_in));
            r.extend(pct(Some(&m.latency_us)));
            r.push(of(m.latency_uncorrected_us.map(|p| p.p50)));
            r.push(of(m.latency_uncorrected_us.map(|p| p.p99)));
            r.push(f(m.achieved_rate));
            r.push(of(m.schedule_lag_p99_us));
            r.push(of(m.client_cpu_util.iter().copied().reduce(f64::max)));
            r.push(m.client_bound.to_string());
            r.push(m.connections_requested.to_string());
            r.push(m.connections_established.to_string());
            r.push(of(m.connections_per_s));
            r.push(of(m.connect_latency_us.map(|p| p.p50)));
            r.push(of(m.connect_latency_us.map(|p| p.p99)));
            r.push(of(m.idle_establish_s));
            r.push(
                m.errors
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            );
        }
        None => r.resize(r.len() + 23, String::new()),
    }
    match &c.server {
        Some(s) => {
            r.push(f(s.cpu_user_s));
            r.push(f(s.cpu_sys_s));
            r.push(f(s.cpu_user_us_per_req));
            r.push(f(s.cpu_sys_us_per_req));
            r.push(f(s.cpu_busy));
            r.push(ou(s.syscalls));
            r.push(of(s.syscalls_per_req));
            r.push(s.syscalls_absent.clone().unwrap_or_default());
            r.push(s.ctx_voluntary.to_string());
            r.push(s.ctx_involuntary.to_string());
            r.push(f(s.ctx_per_req));
            r.push(s.rss_peak_bytes.to_string());
            r.push(of(s.rss_per_conn_bytes));
            r.push(ou(s.kernel_sock_mem_bytes));
            r.push(
                s.kernel_slab_bytes
                    .map(|v| v.to_string())
                    .unwrap_or_default(),
            );
        }
        None => r.resize(r.len() + 15, String::new()),
    }
    r
}

/// RFC 4180 quoting, only where needed.
fn quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("plain"), "plain");
        assert_eq!(quote("a,b"), "\"a,b\"");
        assert_eq!(quote("say \"hi\"\nthere"), "\"say \"\"hi\"\"\nthere\"");
    }
}
