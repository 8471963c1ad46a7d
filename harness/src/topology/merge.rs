//! Splitting one load over several agents, and merging their reports back into one,
//! exactly: counts are summed and HDR histograms added, so the merged report says what
//! one generator running every connection would have said.

use std::collections::BTreeMap;

use anyhow::Context;

use crate::load::{
    Flag, IdleReport, LatencySummary, LoadConfig, LoadReport, NsHistogram, ScheduleCheck,
};

/// `n` shares of `total`, the remainder spread over the first ones: they sum to `total`.
pub fn shares(total: usize, n: usize) -> Vec<usize> {
    (0..n)
        .map(|i| total / n + usize::from(i < total % n))
        .collect()
}

/// Splits `cfg` over `n` agents: connections, idle connections and the request cap in
/// whole shares (sums equal to the total), the rate in proportion to each agent's
/// connections (the last takes what rounding left, so the rates sum to the total). The
/// client cores are divided between the agents when there are enough of them, else every
/// agent uses all of them.
pub fn split(cfg: &LoadConfig, n: usize) -> anyhow::Result<Vec<LoadConfig>> {
    let w = &cfg.workload;
    anyhow::ensure!(n >= 1, "--client-procs 0: give at least one client process");
    anyhow::ensure!(
        w.connections >= n,
        "{n} client processes need at least {n} connections (one each); there are {} \
         (raise --connections or lower --client-procs/--clients)",
        w.connections
    );
    let conns = shares(w.connections, n);
    let idle = shares(w.idle, n);
    let quota = w.requests.map(|q| shares(q as usize, n));
    let cores: Vec<Vec<usize>> = if cfg.cores.len() >= n {
        let per = shares(cfg.cores.len(), n);
        let mut at = 0;
        per.iter()
            .map(|&k| {
                let c = cfg.cores[at..at + k].to_vec();
                at += k;
                c
            })
            .collect()
    } else {
        vec![cfg.cores.clone(); n]
    };
    let mut rate_left = w.rate;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = cfg.clone();
        c.workload.connections = conns[i];
        c.workload.idle = idle[i];
        c.workload.requests = quota.as_ref().map(|q| q[i] as u64);
        c.workload.rate = w.rate.map(|r| {
            if i + 1 == n {
                rate_left.unwrap_or(0.0)
            } else {
                let mine = r * conns[i] as f64 / w.connections as f64;
                rate_left = rate_left.map(|l| l - mine);
                mine
            }
        });
        c.cores = cores[i].clone();
        out.push(c);
    }
    Ok(out)
}

fn add_summary(into: &mut NsHistogram, s: &LatencySummary, what: &str) -> anyhow::Result<()> {
    let h = s
        .hdr
        .decode()
        .with_context(|| format!("decoding an agent's {what} histogram"))?;
    into.add_hdr(&h)
}

/// Merges the agents' reports of one run of `cfg` (the whole run, before [`split`]).
/// Every count is the sum of the agents'; histograms are added; the window is the
/// longest agent's; `client_bound` is set when any agent was.
pub fn merge_reports(cfg: &LoadConfig, parts: &[LoadReport]) -> anyhow::Result<LoadReport> {
    let first = parts.first().context("no agent reported")?;
    let mut latency = NsHistogram::new();
    let mut uncorrected = NsHistogram::new();
    let mut lag = NsHistogram::new();
    let mut connect = NsHistogram::new();
    let mut m = first.clone();
    m.requests = Default::default();
    m.totals = Default::default();
    m.connections = Default::default();
    m.client = Default::default();
    m.errors = BTreeMap::new();
    m.threads = Vec::new();
    m.flags = Vec::new();
    m.agents = Vec::new();
    m.idle = None;
    m.measured_s = 0.0;
    m.interrupted = false;
    m.client_bound = false;
    let (mut bytes_out, mut bytes_in) = (0u64, 0u64);
    let mut any_per_request = false;
    let mut flags: Vec<Flag> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        add_summary(&mut latency, &p.latency, "latency")?;
        if let Some(u) = &p.latency_uncorrected {
            add_summary(&mut uncorrected, u, "uncorrected latency")?;
        }
        if let Some(s) = &p.schedule {
            add_summary(&mut lag, &s.lag, "schedule lag")?;
        }
        add_summary(&mut connect, &p.connect_latency, "connect latency")?;
        m.started_at_unix_s = m.started_at_unix_s.min(p.started_at_unix_s);
        m.measured_s = m.measured_s.max(p.measured_s);
        m.interrupted |= p.interrupted;
        m.client_bound |= p.client_bound;
        let r = &mut m.requests;
        r.sent += p.requests.sent;
        r.completed += p.requests.completed;
        r.failed += p.requests.failed;
        r.unanswered += p.requests.unanswered;
        r.unsent += p.requests.unsent;
        r.requeued += p.requests.requeued;
        let t = &mut m.totals;
        t.requests_sent += p.totals.requests_sent;
        t.replies += p.totals.replies;
        t.bytes_out += p.totals.bytes_out;
        t.bytes_in += p.totals.bytes_in;
        bytes_out += p.throughput.bytes_out;
        bytes_in += p.throughput.bytes_in;
        any_per_request |= p.throughput.connections_per_s.is_some();
        let c = &mut m.connections;
        c.requested += p.connections.requested;
        c.established += p.connections.established;
        c.connects_ok += p.connections.connects_ok;
        c.connects_failed += p.connections.connects_failed;
        c.reconnects += p.connections.reconnects;
        c.server_closes += p.connections.server_closes;
        c.establish_s = c.establish_s.max(p.connections.establish_s);
        c.preflight += p.connections.preflight;
        if let Some(pi) = &p.idle {
            let idle = m.idle.get_or_insert_with(IdleReport::default);
            idle.requested += pi.requested;
            idle.established += pi.established;
            idle.failed += pi.failed;
            idle.lost += pi.lost;
            idle.establish_s = idle.establish_s.max(pi.establish_s);
        }
        for (k, v) in &p.errors {
            *m.errors.entry(k.clone()).or_insert(0) += v;
        }
        let k = &mut m.client;
        k.user_s += p.client.user_s;
        k.system_s += p.client.system_s;
        k.syscalls += p.client.syscalls;
        k.epoll_wait += p.client.epoll_wait;
        k.epoll_ctl += p.client.epoll_ctl;
        k.read += p.client.read;
        k.write += p.client.write;
        k.connection += p.client.connection;
        for th in &p.threads {
            let mut th = th.clone();
            th.thread = m.threads.len();
            m.threads.push(th);
        }
        // Flags the merged figures decide are recomputed below; the others are kept once,
        // saying which agent raised them.
        for f in &p.flags {
            let recomputed = matches!(f.code.as_str(), "rate_not_met" | "few_requests");
            if !recomputed && !flags.iter().any(|g| g.code == f.code) {
                flags.push(Flag {
                    code: f.code.clone(),
                    message: format!("agent {i}: {}", f.message),
                });
            }
        }
    }
    m.errors_total = m.errors.values().sum();
    let secs = m.measured_s;
    let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    let rps = per_s(m.requests.completed);
    m.throughput.requests_per_s = rps;
    m.throughput.bytes_out = bytes_out;
    m.throughput.bytes_in = bytes_in;
    m.throughput.mb_per_s_out = per_s(bytes_out) / 1e6;
    m.throughput.mb_per_s_in = per_s(bytes_in) / 1e6;
    m.throughput.connections_per_s = any_per_request.then_some(rps);
    let done = m.requests.completed;
    let per_req = |x: f64| if done > 0 { x / done as f64 } else { 0.0 };
    m.client.cpu_us_per_request = per_req((m.client.user_s + m.client.system_s) * 1e6);
    m.client.syscalls_per_request = per_req(m.client.syscalls as f64);
    m.latency = latency.summary();
    m.latency_uncorrected = first
        .latency_uncorrected
        .is_some()
        .then(|| uncorrected.summary());
    m.connect_latency = connect.summary();
    m.schedule = cfg
        .workload
        .rate
        .map(|target| ScheduleCheck::of(target, rps, lag.summary()));
    if let Some(s) = &m.schedule {
        if s.achieved_ratio < 0.99 && !m.interrupted {
            flags.push(Flag {
                code: "rate_not_met".into(),
                message: format!(
                    "achieved {:.1} req/s of the {:.1} asked ({:.1}%)",
                    s.achieved_rate,
                    s.target_rate,
                    s.achieved_ratio * 100.0
                ),
            });
        }
    }
    if done < 100 && !m.interrupted {
        flags.push(Flag {
            code: "few_requests".into(),
            message: format!("only {done} requests were measured; percentiles are coarse"),
        });
    }
    m.flags = flags;
    let rc = &mut m.config;
    rc.connections = cfg.workload.connections;
    rc.idle = cfg.workload.idle;
    rc.rate = cfg.workload.rate;
    rc.requests = cfg.workload.requests;
    rc.target = cfg.target;
    rc.threads = m.threads.len();
    let mut cores: Vec<usize> = parts.iter().flat_map(|p| p.config.cores.clone()).collect();
    cores.sort_unstable();
    cores.dedup();
    rc.cores = cores;
    rc.source_spread = parts.iter().all(|p| p.config.source_spread);
    rc.nofile_limit = parts
        .iter()
        .map(|p| p.config.nofile_limit)
        .min()
        .unwrap_or(0);
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::Workload;

    #[test]
    fn shares_sum_and_differ_by_at_most_one() {
        for (t, n) in [(10, 3), (3, 3), (7, 1), (15_000, 4), (0, 2)] {
            let s = shares(t, n);
            assert_eq!(s.iter().sum::<usize>(), t);
            assert!(s.iter().max().unwrap() - s.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn split_sums_to_the_whole() {
        let mut cfg = LoadConfig::new("127.0.0.1:1".parse().unwrap(), Workload::Idle);
        cfg.cores = vec![0];
        cfg.workload.connections = 65;
        cfg.workload.idle = 1001;
        cfg.workload.rate = Some(1000.0 / 3.0);
        cfg.workload.requests = Some(100);
        let parts = split(&cfg, 3).unwrap();
        assert_eq!(parts.len(), 3);
        let sum = |f: &dyn Fn(&LoadConfig) -> usize| parts.iter().map(f).sum::<usize>();
        assert_eq!(sum(&|c| c.workload.connections), 65);
        assert_eq!(sum(&|c| c.workload.idle), 1001);
        assert_eq!(sum(&|c| c.workload.requests.unwrap() as usize), 100);
        let rate: f64 = parts.iter().map(|c| c.workload.rate.unwrap()).sum();
        assert!((rate - 1000.0 / 3.0).abs() < 1e-9, "{rate}");
        assert!(parts.iter().all(|c| c.cores == [0]));
        let mut four = cfg.clone();
        four.cores = vec![2, 3, 4, 5];
        let p = split(&four, 3).unwrap();
        assert_eq!(
            p.iter().map(|c| c.cores.clone()).collect::<Vec<_>>(),
            [vec![2, 3], vec![4], vec![5]]
        );
        cfg.workload.connections = 2;
        assert!(split(&cfg, 3)
            .unwrap_err()
            .to_string()
            .contains("--client-procs"));
    }
}
