//! The figures every consumer reads off a cell, each `None` where the cell lacks it.

use crate::results::{Cell, WorkloadKind};

/// Throughput of a cell: req/s, or MB/s received by the client for the stream workload.
pub(crate) fn throughput(cell: &Cell) -> Option<f64> {
    let c = cell.client.as_ref()?;
    if cell.workload.kind == WorkloadKind::Stream {
        Some(c.mbps_in)
    } else {
        Some(c.throughput_rps)
    }
}

/// Latency percentile (corrected) of a cell, µs.
pub(crate) fn p50(cell: &Cell) -> Option<f64> {
    cell.client.as_ref().map(|c| c.latency_us.p50)
}

/// Latency p99 (corrected) of a cell, µs.
pub(crate) fn p99(cell: &Cell) -> Option<f64> {
    cell.client.as_ref().map(|c| c.latency_us.p99)
}

/// The user share of the server's CPU time, from /proc/PID/stat ticks: sampled (10 ms
/// ticks), so only the split is taken from them, never the total.
fn user_share(cell: &Cell) -> Option<f64> {
    let s = cell.server.as_ref()?;
    let (u, k) = (s.cpu_user_us_per_req, s.cpu_sys_us_per_req);
    Some(if u + k > 0.0 { u / (u + k) } else { 0.0 })
}

/// Server user CPU µs per request: the ns total split by the sampled user share.
pub(crate) fn cpu_user(cell: &Cell) -> Option<f64> {
    Some(cpu_total(cell)? * user_share(cell)?)
}

/// Server system CPU µs per request: the ns total split by the sampled system share.
pub(crate) fn cpu_sys(cell: &Cell) -> Option<f64> {
    Some(cpu_total(cell)? * (1.0 - user_share(cell)?))
}

/// Server CPU µs per request: the ns ledger where the cell has one, else the ticks.
pub(crate) fn cpu_total(cell: &Cell) -> Option<f64> {
    super::stats::cpu_us_per_req(cell)
}

/// Syscalls per request, when counted.
pub(crate) fn syscalls(cell: &Cell) -> Option<f64> {
    cell.server.as_ref()?.syscalls_per_req
}

/// Context switches per request.
pub(crate) fn ctx_switches(cell: &Cell) -> Option<f64> {
    cell.server.as_ref().map(|s| s.ctx_per_req)
}

/// Server RSS per connection, KiB.
pub(crate) fn rss_per_conn_kib(cell: &Cell) -> Option<f64> {
    Some(cell.server.as_ref()?.rss_per_conn_bytes? / 1024.0)
}

/// Kernel socket memory per open connection (active + idle), KiB. System-wide, so it
/// also counts the client's sockets.
pub(crate) fn sock_mem_per_conn_kib(cell: &Cell) -> Option<f64> {
    let bytes = cell.server.as_ref()?.kernel_sock_mem_bytes? as f64;
    per_open_conn_kib(cell, bytes)
}

/// Kernel slab growth per open connection (active + idle), KiB. System-wide, so on
/// loopback it covers both ends of each connection. Absent below
/// [`SLAB_MIN_CONNECTIONS`]: a few dozen connections' slab is lost in the machine's own
/// allocations.
pub(crate) fn slab_per_conn_kib(cell: &Cell) -> Option<f64> {
    let bytes = cell.server.as_ref()?.kernel_slab_bytes? as f64;
    let conns = cell.workload.total_connections();
    if conns < SLAB_MIN_CONNECTIONS {
        return None;
    }
    per_open_conn_kib(cell, bytes)
}

/// Fewest open connections whose slab growth is reported per connection (~8 MB of slab
/// at ~8 KiB per loopback connection pair).
pub(crate) const SLAB_MIN_CONNECTIONS: u64 = 1000;

fn per_open_conn_kib(cell: &Cell, bytes: f64) -> Option<f64> {
    let conns = cell.workload.total_connections() as f64;
    (conns > 0.0).then(|| bytes / conns / 1024.0)
}

/// Churn: connections completed per second.
pub(crate) fn conns_per_s(cell: &Cell) -> Option<f64> {
    cell.client.as_ref()?.connections_per_s
}

/// Churn: connect latency p50, µs.
pub(crate) fn connect_p50(cell: &Cell) -> Option<f64> {
    cell.client.as_ref()?.connect_latency_us.map(|p| p.p50)
}

/// Churn: connect latency p99, µs.
pub(crate) fn connect_p99(cell: &Cell) -> Option<f64> {
    cell.client.as_ref()?.connect_latency_us.map(|p| p.p99)
}
