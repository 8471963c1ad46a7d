//! The report's "claims" section: each claim of the epoll field notes
//! (`suites/seed-claims.toml` measures them) beside what this run measured and a verdict.
//!
//! A claim's row needs the cells of the backends it compares, in one group; the section
//! renders only when at least one claim has them, so reports of other suites are
//! unchanged. Figures are medians over a cell's repeats. `epoll_ctl` calls and events come
//! from the server's own counters, which cover the whole server run (warmup included):
//! they are divided by requests counted the same way (echo bytes in / message size) or by
//! loop turns, never by the measured window's requests.

use std::fmt::Write as _;

use crate::results::{Cell, CellStatus, ResultsFile, WorkloadKind};

/// A verdict on one claim.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Holds,
    DoesNotHold,
    /// Holds only under the condition given.
    HoldsIf(String),
}

impl Verdict {
    fn text(&self) -> String {
        match self {
            Verdict::Holds => "holds".to_string(),
            Verdict::DoesNotHold => "does not hold".to_string(),
            Verdict::HoldsIf(c) => format!("holds only {c}"),
        }
    }
}

/// One row of the table.
struct Row {
    claim: &'static str,
    measured: String,
    verdict: Verdict,
}

/// The notes' reference figures: context only, measured with other clients on other
/// machines.
const REFERENCES: [(&str, &str); 2] = [
    (
        "Python epoll echo client and server (field notes)",
        "about 49k echo requests/s, ~48 MB/s each way, CPU and NIC saturated",
    ),
    (
        "129-line C epoll HTTP server, `ab -c 50 -n 10000` (field notes)",
        "about 10.8k requests/s, a new connection per request",
    ),
];

/// The claims section of `results`, or `None` when the results hold none of its cells.
pub(crate) fn section(results: &ResultsFile) -> Option<String> {
    let cells: Vec<&Cell> = results
        .cells
        .iter()
        .filter(|c| c.status == CellStatus::Ok && c.client.is_some())
        .collect();
    let view = View {
        cells,
        all: &results.cells,
    };
    let rows: Vec<Row> = [
        claim_short_read(&view),
        claim_in_out(&view),
        claim_toggle(&view),
        claim_oneshot(&view),
        claim_max_events(&view),
        claim_select(&view),
        claim_lt_like_poll(&view),
    ]
    .into_iter()
    .flatten()
    .collect();
    if rows.is_empty() {
        return None;
    }
    let mut md = String::new();
    md.push_str("## Claims\n\n");
    md.push_str(
        "The epoll field notes' claims (suites/seed-claims.toml), each beside what this run \
         measured: medians of the repeats, CPU as the server's µs per request. `epoll_ctl` \
         and event counts are the server's own, over its whole run. Rows appear only for \
         claims whose cells this run holds; the reference figures at the end come from the \
         notes, with another client on another machine: context, not comparable.\n\n",
    );
    md.push_str("| claim (the notes) | ringside measured | verdict |\n| --- | --- | --- |\n");
    for r in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {} |",
            r.claim,
            r.measured,
            r.verdict.text()
        );
    }
    for (what, figure) in REFERENCES {
        let _ = writeln!(
            md,
            "| reference: {what} | {figure}; ours: {} | context only |",
            our_best(&view)
        );
    }
    md.push('\n');
    Some(md)
}

/// The cells a claim can draw on.
struct View<'a> {
    /// Ok cells with client measurements.
    cells: Vec<&'a Cell>,
    /// Every cell, for the unsupported ones.
    all: &'a [Cell],
}

impl<'a> View<'a> {
    /// Groups (in run order) where every one of `backends` has ok cells.
    fn groups_with(&self, backends: &[&str], kind: Option<WorkloadKind>) -> Vec<&'a str> {
        let mut groups: Vec<&'a str> = Vec::new();
        for c in &self.cells {
            if kind.is_some_and(|k| c.workload.kind != k) || groups.contains(&c.group.as_str()) {
                continue;
            }
            let g = c.group.as_str();
            if backends
                .iter()
                .all(|b| self.cells.iter().any(|c| c.group == g && c.backend == *b))
            {
                groups.push(g);
            }
        }
        groups
    }

    /// Median of `f` over the repeats of `backend` in `group`.
    fn median(&self, group: &str, backend: &str, f: impl Fn(&Cell) -> Option<f64>) -> Option<f64> {
        median(
            self.cells
                .iter()
                .filter(|c| c.group == group && c.backend == backend)
                .filter_map(|c| f(c)),
        )
    }

    /// The first cell of `backend` in `group`, whatever its status.
    fn any_cell(&self, group: &str, backend: &str) -> Option<&'a Cell> {
        self.all
            .iter()
            .find(|c| c.group == group && c.backend == backend)
    }
}

fn median(values: impl Iterator<Item = f64>) -> Option<f64> {
    crate::analysis::stats::median(&values.collect::<Vec<f64>>())
}

/// Server CPU µs per request (user + system).
fn cpu(c: &Cell) -> Option<f64> {
    // The ns ledger where the cell has one, else the tick-sampled user + system.
    crate::analysis::stats::cpu_us_per_req(c)
}

/// Server syscalls per request (perf tracepoint).
fn syscalls(c: &Cell) -> Option<f64> {
    c.server.as_ref()?.syscalls_per_req
}

/// The syscalls the server counts itself (reads, sends, waits, `epoll_ctl`, accepts) per
/// request, over its whole run (echo cells only): the stand-in where the perf tracepoint
/// is absent, and the part of the total the I/O strategy decides.
fn counted_syscalls(c: &Cell) -> Option<f64> {
    let s = c.server.as_ref()?.stats?;
    let calls = s.reads + s.writes + s.loop_iterations + s.epoll_ctl + s.accepted;
    Some(calls as f64 / whole_run_requests(c)?)
}

/// Median syscalls per request of `a` and `b` in `group`, from the perf tracepoint where
/// both cells have it, else from the servers' own counts; and what the figures are.
fn syscall_pair(
    v: &View<'_>,
    group: &str,
    a: &str,
    b: &str,
) -> (Option<f64>, Option<f64>, &'static str) {
    let (sa, sb) = (v.median(group, a, syscalls), v.median(group, b, syscalls));
    if sa.is_some() && sb.is_some() {
        return (sa, sb, "syscalls/req");
    }
    (
        v.median(group, a, counted_syscalls),
        v.median(group, b, counted_syscalls),
        "syscalls/req (server-counted: read, send, epoll_wait, epoll_ctl, accept; the perf \
         tracepoint was absent)",
    )
}

/// Events per `epoll_wait` (or `poll`/`select` call), server counters.
fn events_per_wait(c: &Cell) -> Option<f64> {
    let s = c.server.as_ref()?.stats?;
    (s.loop_iterations > 0 && s.events > 0).then(|| s.events as f64 / s.loop_iterations as f64)
}

/// Requests the server answered over its whole run, for echo (bytes in / message size).
fn whole_run_requests(c: &Cell) -> Option<f64> {
    let s = c.server.as_ref()?.stats?;
    (c.workload.kind == WorkloadKind::Echo && c.workload.size > 0 && s.bytes_in > 0)
        .then(|| s.bytes_in as f64 / c.workload.size as f64)
}

/// `epoll_ctl` calls per request (echo cells only).
fn ctl_per_req(c: &Cell) -> Option<f64> {
    let s = c.server.as_ref()?.stats?;
    Some(s.epoll_ctl as f64 / whole_run_requests(c)?)
}

/// Events per request (echo cells only).
fn events_per_req(c: &Cell) -> Option<f64> {
    let s = c.server.as_ref()?.stats?;
    (s.events > 0).then_some(())?;
    Some(s.events as f64 / whole_run_requests(c)?)
}

/// `epoll_ctl` calls per event.
fn ctl_per_event(c: &Cell) -> Option<f64> {
    let s = c.server.as_ref()?.stats?;
    (s.events > 0).then(|| s.epoll_ctl as f64 / s.events as f64)
}

fn f2(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| format!("{v:.2}"))
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// "×0.87" or "–".
fn fx(x: Option<f64>) -> String {
    x.map_or("–".to_string(), |v| format!("×{v:.2}"))
}

/// Claim 1: a short read ends an edge-triggered drain.
fn claim_short_read(v: &View<'_>) -> Option<Row> {
    let (a, b) = ("epoll-et-shortread", "epoll-et");
    let g = *v.groups_with(&[a, b], None).first()?;
    let (sa, sb, what) = syscall_pair(v, g, a, b);
    let (ca, cb) = (v.median(g, a, cpu), v.median(g, b, cpu));
    let fewer = ratio(sa, sb).map(|r| r < 0.95);
    let verdict = match fewer {
        Some(true) => Verdict::HoldsIf(
            "with EPOLLRDHUP registered: a short read can leave an EOF that came with the \
             data unread, and no further edge announces it (epoll-et-shortread passes the \
             conformance suite only because it reads on to EOF once EPOLLRDHUP is reported)"
                .to_string(),
        ),
        Some(false) => Verdict::DoesNotHold,
        None => return None,
    };
    Some(Row {
        claim: "1. Edge-triggered, a read shorter than the buffer means the socket is empty: \
                stop without the read that returns EAGAIN",
        measured: format!(
            "`{g}`: {what} {} (shortread) vs {} (et), {}; CPU µs/req {} vs {}, {}",
            f2(sa),
            f2(sb),
            fx(ratio(sa, sb)),
            f2(ca),
            f2(cb),
            fx(ratio(ca, cb))
        ),
        verdict,
    })
}

/// Claim 2: `EPOLLIN | EPOLLOUT` together wake the loop for nothing.
fn claim_in_out(v: &View<'_>) -> Option<Row> {
    let (a, b) = ("epoll-inout", "epoll-et");
    let g = *v.groups_with(&[a, b], Some(WorkloadKind::Echo)).first()?;
    let (ea, eb) = (
        v.median(g, a, events_per_req),
        v.median(g, b, events_per_req),
    );
    let (wa, wb) = (
        v.median(g, a, events_per_wait),
        v.median(g, b, events_per_wait),
    );
    let (ca, cb) = (v.median(g, a, cpu), v.median(g, b, cpu));
    let (ka, kb) = (v.median(g, a, ctl_per_req), v.median(g, b, ctl_per_req));
    let verdict = match ratio(ea, eb) {
        Some(r) if r > 1.10 => Verdict::Holds,
        Some(_) => Verdict::DoesNotHold,
        None => return None,
    };
    Some(Row {
        claim: "2. Registering EPOLLIN|EPOLLOUT together makes incoming data also report \
                EPOLLOUT: spurious wake-ups; ask for EPOLLOUT only after EAGAIN",
        measured: format!(
            "`{g}`: events/req {} (inout) vs {} (et), {}; events/epoll_wait {} vs {}; \
             epoll_ctl/req {} vs {}; CPU µs/req {} vs {}, {}",
            f2(ea),
            f2(eb),
            fx(ratio(ea, eb)),
            f2(wa),
            f2(wb),
            f2(ka),
            f2(kb),
            f2(ca),
            f2(cb),
            fx(ratio(ca, cb))
        ),
        verdict,
    })
}

/// Claim 3: the MOD-per-request pattern costs two `epoll_ctl` per request.
fn claim_toggle(v: &View<'_>) -> Option<Row> {
    let (a, b) = ("epoll-toggle", "epoll-lt");
    let g = *v.groups_with(&[a, b], Some(WorkloadKind::Echo)).first()?;
    let (ka, kb) = (v.median(g, a, ctl_per_req), v.median(g, b, ctl_per_req));
    let (ca, cb) = (v.median(g, a, cpu), v.median(g, b, cpu));
    let (sa, sb, what) = syscall_pair(v, g, a, b);
    let verdict = match ka {
        Some(k) if (1.8..=2.2).contains(&k) => Verdict::Holds,
        Some(_) => Verdict::DoesNotHold,
        None => return None,
    };
    Some(Row {
        claim: "3. Switching interest with EPOLL_CTL_MOD on every request (EPOLLIN → \
                EPOLLOUT → EPOLLIN), as the notes' 129-line server does, costs two \
                epoll_ctl calls per request",
        measured: format!(
            "`{g}`: epoll_ctl/req {} (toggle) vs {} (lt); {what} {} vs {}; CPU µs/req {} vs \
             {}, {}",
            f2(ka),
            f2(kb),
            f2(sa),
            f2(sb),
            f2(ca),
            f2(cb),
            fx(ratio(ca, cb))
        ),
        verdict,
    })
}

/// Claim 4: `EPOLLONESHOT` costs one `epoll_ctl` per event.
fn claim_oneshot(v: &View<'_>) -> Option<Row> {
    let (a, b) = ("epoll-oneshot", "epoll-lt");
    let g = *v.groups_with(&[a, b], None).first()?;
    let (ka, kb) = (v.median(g, a, ctl_per_event), v.median(g, b, ctl_per_event));
    let (ca, cb) = (v.median(g, a, cpu), v.median(g, b, cpu));
    // Listener and stop events take no re-arm, so slightly under one per event.
    let verdict = match ka {
        Some(k) if (0.8..=1.1).contains(&k) => Verdict::Holds,
        Some(_) => Verdict::DoesNotHold,
        None => return None,
    };
    Some(Row {
        claim: "4. EPOLLONESHOT disables the fd after each event; re-arming it costs one \
                epoll_ctl per event",
        measured: format!(
            "`{g}`: epoll_ctl/event {} (oneshot) vs {} (lt); CPU µs/req {} vs {}, {}",
            f2(ka),
            f2(kb),
            f2(ca),
            f2(cb),
            fx(ratio(ca, cb))
        ),
        verdict,
    })
}

/// The `maxevents` variants, smallest first, with epoll-lt's own 256.
const MAX_EVENTS: [(&str, u32); 5] = [
    ("epoll-lt-me1", 1),
    ("epoll-lt-me16", 16),
    ("epoll-lt-me64", 64),
    ("epoll-lt", 256),
    ("epoll-lt-me1024", 1024),
];

/// Claim 5: `maxevents` caps a wait; how batch size affects cost.
fn claim_max_events(v: &View<'_>) -> Option<Row> {
    let names: Vec<&str> = MAX_EVENTS.iter().map(|(n, _)| *n).collect();
    let mut groups = v.groups_with(&names[..2], None);
    groups.retain(|g| v.groups_with(&names, None).contains(g));
    if groups.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    let mut capped = true;
    let mut spread_at_most = None::<(usize, f64)>;
    for g in &groups {
        let conns = v
            .cells
            .iter()
            .find(|c| c.group == *g)
            .map_or(0, |c| c.workload.connections);
        let mut cpus = Vec::new();
        let mut line = Vec::new();
        for (name, me) in MAX_EVENTS {
            let w = v.median(g, name, events_per_wait);
            let c = v.median(g, name, cpu);
            if w.is_some_and(|w| w > f64::from(me) + 1e-9) {
                capped = false;
            }
            if let Some(c) = c {
                cpus.push(c);
            }
            line.push(format!("{me}: {} ev/wait, {} µs", f2(w), f2(c)));
        }
        let lo = cpus.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = cpus.iter().copied().fold(0.0, f64::max);
        if lo.is_finite() && lo > 0.0 && spread_at_most.is_none_or(|(n, _)| conns > n) {
            spread_at_most = Some((conns, hi / lo - 1.0));
        }
        parts.push(format!("`{g}` ({conns} conns): {}", line.join("; ")));
    }
    let verdict = match (capped, spread_at_most) {
        (false, _) => Verdict::DoesNotHold,
        (true, Some((conns, spread))) if spread > 0.10 => Verdict::HoldsIf(format!(
            "as a cap; batch size moves CPU/request by {:.0}% at {conns} connections",
            spread * 100.0
        )),
        (true, Some((conns, spread))) => Verdict::HoldsIf(format!(
            "as a cap; batch size moves CPU/request by only {:.0}% at {conns} connections",
            spread * 100.0
        )),
        (true, None) => Verdict::Holds,
    };
    Some(Row {
        claim: "5. maxevents caps how many events one epoll_wait returns (the notes saw 1023 \
                per call with a 1024 array); its effect on cost at many connections was \
                unmeasured",
        measured: parts.join("<br>"),
        verdict,
    })
}

/// Idle groups of `backends`, in run order, with their idle count.
fn idle_points(v: &View<'_>, backends: &[&str]) -> Vec<(usize, String)> {
    let mut points: Vec<(usize, String)> = Vec::new();
    for c in v.all {
        if c.workload.kind != WorkloadKind::Idle || points.iter().any(|(_, g)| *g == c.group) {
            continue;
        }
        if backends
            .iter()
            .all(|b| v.all.iter().any(|x| x.group == c.group && x.backend == *b))
        {
            points.push((c.workload.idle, c.group.clone()));
        }
    }
    points.sort();
    points
}

/// Claim 6: select stops at `FD_SETSIZE` and grows with descriptors, like poll.
fn claim_select(v: &View<'_>) -> Option<Row> {
    let points = idle_points(v, &["select", "poll", "epoll-lt"]);
    if points.is_empty() {
        return None;
    }
    let mut parts = Vec::new();
    let mut refused_past_limit = None::<bool>;
    let mut measured = Vec::new();
    for (idle, g) in &points {
        let sel = v.median(g, "select", cpu);
        let poll = v.median(g, "poll", cpu);
        match (sel, v.any_cell(g, "select").map(|c| &c.status)) {
            (Some(s), _) => {
                measured.push((*idle, s, poll));
                parts.push(format!(
                    "{idle} idle: select {s:.2} µs/req, poll {}",
                    f2(poll)
                ));
            }
            (None, Some(CellStatus::Unsupported { reason })) => {
                let by_design = reason.contains("FD_SETSIZE");
                refused_past_limit = Some(refused_past_limit.unwrap_or(true) && by_design);
                parts.push(format!("{idle} idle: select unsupported ({reason})"));
            }
            _ => parts.push(format!("{idle} idle: select –")),
        }
    }
    // Growth from the fewest to the most idle connections select could hold.
    let growth = match (measured.first(), measured.last()) {
        (Some(&(i0, s0, p0)), Some(&(i1, s1, p1))) if i1 > i0 && s0 > 0.0 => {
            let poll = ratio(p1, p0);
            parts.push(format!(
                "from {i0} to {i1} idle: select {}, poll {}",
                fx(Some(s1 / s0)),
                fx(poll)
            ));
            Some(s1 / s0)
        }
        _ => None,
    };
    let grows = growth.map(|r| r > 1.10);
    let verdict = match (refused_past_limit, grows) {
        (Some(true), Some(true)) => Verdict::Holds,
        (Some(true), _) => Verdict::HoldsIf(
            "for the descriptor limit: the cost growth was not seen below it".to_string(),
        ),
        (_, Some(true)) => Verdict::HoldsIf(
            "for the cost growth: no cell here needed descriptors past FD_SETSIZE".to_string(),
        ),
        (None, None) => return None,
        _ => Verdict::DoesNotHold,
    };
    Some(Row {
        claim: "6. select(2) cannot watch descriptors at or above FD_SETSIZE (1024), and its \
                cost grows with the number of descriptors, like poll's; epoll's does not",
        measured: parts.join("; "),
        verdict,
    })
}

/// Claim 7: epoll-lt costs what poll costs with few connections, less with many idle.
fn claim_lt_like_poll(v: &View<'_>) -> Option<Row> {
    let points = idle_points(v, &["poll", "epoll-lt"]);
    let both: Vec<(usize, f64, f64)> = points
        .iter()
        .filter_map(|(idle, g)| {
            Some((
                *idle,
                v.median(g, "epoll-lt", cpu)?,
                v.median(g, "poll", cpu)?,
            ))
        })
        .collect();
    let (&(i0, lt0, poll0), &(i1, lt1, poll1)) = (both.first()?, both.last()?);
    if i1 <= i0 || lt0 <= 0.0 || lt1 <= 0.0 {
        return None;
    }
    let (r0, r1) = (poll0 / lt0, poll1 / lt1);
    let alike = (r0 - 1.0).abs() <= 0.15;
    let diverge = r1 > 1.5;
    let verdict = match (alike, diverge) {
        (true, true) => Verdict::Holds,
        (false, true) => Verdict::HoldsIf(format!(
            "with many idle connections: at {i0} idle poll already costs {} epoll-lt's",
            fx(Some(r0))
        )),
        _ => Verdict::DoesNotHold,
    };
    Some(Row {
        claim: "7. Level-triggered epoll behaves like a faster poll(2): the same cost with \
                few connections, diverging with many idle ones",
        measured: format!(
            "CPU µs/req at {i0} idle: epoll-lt {lt0:.2}, poll {poll0:.2} (poll {}); at {i1} \
             idle: epoll-lt {lt1:.2}, poll {poll1:.2} (poll {})",
            fx(Some(r0)),
            fx(Some(r1))
        ),
        verdict,
    })
}

/// The highest median closed-loop echo or http throughput among this run's cells, for
/// the reference rows (a fixed-rate cell's throughput is its rate).
fn our_best(v: &View<'_>) -> String {
    let mut best: Option<(f64, &str, &str)> = None;
    for c in &v.cells {
        let closed_loop = c.workload.rate.is_none();
        if !closed_loop || !matches!(c.workload.kind, WorkloadKind::Echo | WorkloadKind::Http) {
            continue;
        }
        let Some(t) = v.median(&c.group, &c.backend, |c| {
            c.client.as_ref().map(|m| m.throughput_rps)
        }) else {
            continue;
        };
        if best.is_none_or(|(b, _, _)| t > b) {
            best = Some((t, c.backend.as_str(), c.group.as_str()));
        }
    }
    best.map_or(
        "no closed-loop echo or http cell".to_string(),
        |(t, b, g)| format!("{:.1}k req/s closed loop ({b}, `{g}`)", t / 1000.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use backend_api::ShardStats;

    /// One fixture cell: group, backend, workload, idle connections, CPU µs/req,
    /// syscalls/req, server counters.
    type Spec<'a> = (
        &'a str,
        &'a str,
        WorkloadKind,
        Option<u32>,
        f64,
        f64,
        ShardStats,
    );

    /// A results file of the committed fixture's first ok cell, copied into the claims
    /// cells with the figures given.
    fn fixture(cells: &[Spec<'_>]) -> ResultsFile {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/results.json");
        let mut r = crate::results::read_results(std::path::Path::new(path)).unwrap();
        let template = r
            .cells
            .iter()
            .find(|c| c.status == CellStatus::Ok && c.server.is_some())
            .unwrap()
            .clone();
        r.cells = cells
            .iter()
            .map(
                |&(group, backend, kind, idle, cpu_us, sys_per_req, stats)| {
                    let mut c = template.clone();
                    c.group = group.to_string();
                    c.backend = backend.to_string();
                    c.workload.kind = kind;
                    c.workload.idle = idle.unwrap_or(0) as usize;
                    c.workload.size = 64;
                    let s = c.server.as_mut().unwrap();
                    s.cpu_user_us_per_req = cpu_us / 2.0;
                    s.cpu_sys_us_per_req = cpu_us / 2.0;
                    s.syscalls_per_req = Some(sys_per_req);
                    s.stats = Some(stats);
                    c
                },
            )
            .collect();
        r
    }

    fn stats(requests: u64, loops: u64, events: u64, ctl: u64) -> ShardStats {
        ShardStats {
            bytes_in: requests * 64,
            loop_iterations: loops,
            events,
            epoll_ctl: ctl,
            ..ShardStats::default()
        }
    }

    #[test]
    fn absent_without_the_claims_cells() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/results.json");
        let r = crate::results::read_results(std::path::Path::new(path)).unwrap();
        assert_eq!(section(&r), None);
    }

    #[test]
    fn rows_and_verdicts_follow_the_figures() {
        use WorkloadKind::{Echo, Idle};
        let g = "claims-echo";
        let r = fixture(&[
            (
                g,
                "epoll-et",
                Echo,
                None,
                6.0,
                3.3,
                stats(1000, 1000, 1000, 70),
            ),
            (
                g,
                "epoll-et-shortread",
                Echo,
                None,
                5.5,
                2.3,
                stats(1000, 1000, 1000, 70),
            ),
            // As many events as epoll-et: the EPOLLOUT bit rides on the EPOLLIN event.
            (
                g,
                "epoll-inout",
                Echo,
                None,
                6.0,
                3.3,
                stats(1000, 1000, 1020, 66),
            ),
            (
                g,
                "epoll-lt",
                Echo,
                None,
                6.0,
                2.2,
                stats(1000, 1000, 1000, 66),
            ),
            (
                g,
                "epoll-toggle",
                Echo,
                None,
                7.0,
                4.2,
                stats(1000, 2000, 2000, 2066),
            ),
            (
                g,
                "epoll-oneshot",
                Echo,
                None,
                6.5,
                3.2,
                stats(1000, 1000, 1000, 1000),
            ),
            ("idle-0", "poll", Idle, Some(0), 6.1, 2.2, stats(1, 1, 1, 0)),
            (
                "idle-0",
                "select",
                Idle,
                Some(0),
                6.2,
                2.2,
                stats(1, 1, 1, 0),
            ),
            (
                "idle-0",
                "epoll-lt",
                Idle,
                Some(0),
                6.0,
                2.2,
                stats(1, 1, 1, 0),
            ),
            (
                "idle-18000",
                "poll",
                Idle,
                Some(18000),
                60.0,
                2.2,
                stats(1, 1, 1, 0),
            ),
            (
                "idle-18000",
                "epoll-lt",
                Idle,
                Some(18000),
                6.3,
                2.2,
                stats(1, 1, 1, 0),
            ),
            (
                "idle-1000",
                "poll",
                Idle,
                Some(1000),
                9.0,
                2.2,
                stats(1, 1, 1, 0),
            ),
            (
                "idle-1000",
                "select",
                Idle,
                Some(1000),
                9.5,
                2.2,
                stats(1, 1, 1, 0),
            ),
            (
                "idle-1000",
                "epoll-lt",
                Idle,
                Some(1000),
                6.1,
                2.2,
                stats(1, 1, 1, 0),
            ),
        ]);
        let mut r = r;
        // select at 18000 idle: unsupported by design.
        let mut unsupported = r.cells[7].clone();
        unsupported.group = "idle-18000".to_string();
        unsupported.workload.idle = 18000;
        unsupported.status = CellStatus::Unsupported {
            reason: "needs 18004 connections: select(2) cannot watch descriptors at or above \
                     FD_SETSIZE (1024)"
                .to_string(),
        };
        unsupported.client = None;
        r.cells.push(unsupported);

        let md = section(&r).expect("claims cells present");
        let rows: Vec<&str> = md.lines().filter(|l| l.starts_with("| ")).collect();
        let row = |n: &str| {
            *rows
                .iter()
                .find(|l| l.starts_with(&format!("| {n}.")))
                .unwrap_or_else(|| panic!("no row {n} in\n{md}"))
        };
        assert!(row("1").ends_with("| holds only with EPOLLRDHUP registered: a short read can leave an EOF that came with the data unread, and no further edge announces it (epoll-et-shortread passes the conformance suite only because it reads on to EOF once EPOLLRDHUP is reported) |"), "{}", row("1"));
        assert!(row("1").contains("syscalls/req 2.30 (shortread) vs 3.30 (et), ×0.70"));
        assert!(row("2").ends_with("| does not hold |"), "{}", row("2"));
        assert!(row("3").ends_with("| holds |"), "{}", row("3"));
        assert!(row("3").contains("epoll_ctl/req 2.07 (toggle) vs 0.07 (lt)"));
        assert!(row("4").ends_with("| holds |"), "{}", row("4"));
        assert!(row("6").ends_with("| holds |"), "{}", row("6"));
        assert!(row("6").contains("18000 idle: select unsupported"));
        assert!(row("7").ends_with("| holds |"), "{}", row("7"));
        assert!(!md.contains("| 5."), "no maxevents cells, no row");
        assert_eq!(
            rows.iter()
                .filter(|l| l.contains("| context only |"))
                .count(),
            2
        );
        assert!(md.contains("49k") && md.contains("10.8k"));
    }

    #[test]
    fn short_read_falls_back_to_the_servers_own_syscall_count() {
        use WorkloadKind::Echo;
        let g = "claims-echo";
        let counted = |reads: u64| ShardStats {
            reads,
            writes: 1000,
            ..stats(1000, 30, 1000, 2)
        };
        let mut r = fixture(&[
            (g, "epoll-et", Echo, None, 6.0, 0.0, counted(2000)),
            (g, "epoll-et-shortread", Echo, None, 5.5, 0.0, counted(1000)),
        ]);
        for c in &mut r.cells {
            c.server.as_mut().unwrap().syscalls_per_req = None;
        }
        let md = section(&r).unwrap();
        let row = md.lines().find(|l| l.starts_with("| 1.")).unwrap();
        // (reads + 1000 writes + 30 waits + 2 epoll_ctl) / 1000 requests.
        assert!(row.contains("server-counted"), "{row}");
        assert!(
            row.contains("2.03 (shortread) vs 3.03 (et), ×0.67"),
            "{row}"
        );
        assert!(row.contains("holds only with EPOLLRDHUP"), "{row}");
    }

    #[test]
    fn max_events_row_needs_every_variant_and_reports_the_spread() {
        use WorkloadKind::Http;
        let mut cells = Vec::new();
        for (g, conns_cpu) in [("c64", 5.0), ("c10000", 8.0)] {
            for (i, (name, me)) in MAX_EVENTS.iter().enumerate() {
                let events = 1000 * u64::from(*me).min(50);
                cells.push((
                    g,
                    *name,
                    Http,
                    None,
                    conns_cpu * (1.0 + 0.1 * i as f64),
                    2.0,
                    stats(1000, 1000, events, 66),
                ));
            }
        }
        let md = section(&fixture(&cells)).expect("maxevents cells present");
        let row = md.lines().find(|l| l.starts_with("| 5.")).unwrap();
        assert!(
            row.contains("holds only as a cap; batch size moves CPU/request by 40%"),
            "{row}"
        );
        assert!(row.contains("1: 1.00 ev/wait"), "{row}");

        // One variant missing: no row.
        cells.retain(|c| c.1 != "epoll-lt-me16");
        assert_eq!(section(&fixture(&cells)), None);
    }
}
