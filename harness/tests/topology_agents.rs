//! Load agents (`harness agent`) and their coordinator: a run over several agent
//! processes reports counts equal to the sum of its agents' (and to what the server
//! counted), and an agent that crashes, garbles the protocol or hangs fails the run with
//! its stderr, within a deadline.

mod util;

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use backend_api::Service;
use harness::load::{read_report, LoadReport, StopSignal, WindowObserver, Workload};
use harness::topology::agent::{run_agents, AgentLaunch, AgentTimeouts};
use harness::topology::merge::split;
use util::*;

fn harness_exe() -> OsString {
    env!("CARGO_BIN_EXE_harness").into()
}

struct Edges(std::sync::Mutex<Vec<&'static str>>);

impl WindowObserver for Edges {
    fn window_start(&self) {
        self.0.lock().unwrap().push("start");
    }
    fn window_end(&self) {
        self.0.lock().unwrap().push("end");
    }
}

fn assert_merged_is_sum(r: &LoadReport, agents: usize) {
    assert_eq!(r.agents.len(), agents, "one record per agent");
    let sum = |f: &dyn Fn(&harness::topology::agent::AgentRecord) -> u64| -> u64 {
        r.agents.iter().map(f).sum()
    };
    assert!(r.requests.completed > 0);
    assert_eq!(r.requests.completed, sum(&|a| a.completed));
    assert_eq!(r.requests.sent, sum(&|a| a.sent));
    assert_eq!(r.latency.count, sum(&|a| a.latency_count));
    assert_eq!(r.latency.count, r.requests.completed);
    assert_eq!(r.connections.established, sum(&|a| a.established));
    assert_eq!(
        r.config.connections as u64,
        sum(&|a| a.connections as u64),
        "connections split exactly"
    );
    assert_eq!(r.throughput.bytes_in, sum(&|a| a.bytes_in));
    assert_eq!(r.errors_total, 0, "{:?}", r.errors);
    let pids: std::collections::BTreeSet<u32> = r.agents.iter().map(|a| a.host.pid).collect();
    assert_eq!(pids.len(), agents, "each agent is its own process");
    assert!(r.agents.iter().all(|a| !a.host.kernel.is_empty()));
}

#[test]
fn load_over_three_client_processes_merges_to_the_sum_of_its_agents() {
    let server = start(epoll_et(), Service::Http);
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("r.json");
    let out = Command::new(harness_exe())
        .args(["load", "--workload", "http", "-c", "7", "-d", "1s"])
        .args(["--warmup", "200ms", "--client-procs", "3", "--target"])
        .arg(server.local_addr().to_string())
        .args(["--cores", &client_core().to_string(), "--json"])
        .arg(&json)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = read_report(&json).unwrap();
    let counted = stop(server).total;
    assert_merged_is_sum(&r, 3);
    let conns: Vec<usize> = r.agents.iter().map(|a| a.connections).collect();
    assert_eq!(conns, [3, 2, 2]);
    // The server saw every agent's connections (and each agent's preflight connection).
    assert_eq!(
        counted.accepted,
        r.connections.connects_ok + r.connections.preflight
    );
    assert_eq!(r.connections.preflight, 3);
    assert!(counted.bytes_out >= r.throughput.bytes_in);
}

#[test]
fn the_coordinator_opens_the_window_by_the_clock_and_splits_the_rate() {
    let server = start(epoll_et(), Service::Echo);
    let mut cfg = config(&server, Workload::Echo);
    cfg.workload.connections = 4;
    cfg.workload.rate = Some(2000.0);
    let launches: Vec<AgentLaunch> = split(&cfg, 2)
        .unwrap()
        .into_iter()
        .enumerate()
        .map(|(i, config)| AgentLaunch {
            label: format!("proc {i}"),
            argv: vec![harness_exe(), "agent".into()],
            config,
        })
        .collect();
    let edges = Edges(Default::default());
    let stop_signal = StopSignal::new().unwrap();
    let t0 = Instant::now();
    let d = run_agents(
        &cfg,
        &launches,
        &stop_signal,
        &edges,
        AgentTimeouts::default(),
    )
    .unwrap();
    assert!(t0.elapsed() >= cfg.workload.warmup + cfg.workload.duration);
    assert_eq!(*edges.0.lock().unwrap(), ["start", "end"]);
    let rates: Vec<f64> = d.agents.iter().map(|a| a.rate.unwrap()).collect();
    assert_eq!(rates.iter().sum::<f64>(), 2000.0);
    let s = d.report.schedule.as_ref().unwrap();
    assert_eq!(s.target_rate, 2000.0);
    assert_merged_is_sum(&d.report, 2);
    stop(server);
}

fn fake_agent(script: &str) -> AgentLaunch {
    let cfg = harness::load::LoadConfig::new("127.0.0.1:9".parse().unwrap(), Workload::Echo);
    AgentLaunch {
        label: "fake".into(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        config: cfg,
    }
}

fn fails_with(script: &str, hello: Duration) -> harness::topology::agent::AgentError {
    let l = fake_agent(script);
    let stop_signal = StopSignal::new().unwrap();
    let edges = Edges(Default::default());
    let t0 = Instant::now();
    let e = run_agents(
        &l.config.clone(),
        &[l],
        &stop_signal,
        &edges,
        AgentTimeouts { hello },
    )
    .unwrap_err();
    assert!(
        t0.elapsed() < hello + Duration::from_secs(10),
        "bounded wait"
    );
    e
}

#[test]
fn a_crashing_agent_fails_the_run_with_its_stderr() {
    let e = fails_with("echo 'agent blew up' >&2; exit 3", Duration::from_secs(10));
    // Depending on timing it exits before or after the hello is written.
    assert!(
        e.reason.contains("agent fake exited without answering")
            || e.reason.contains("writing to agent fake"),
        "{e}"
    );
    assert!(e.stderr_tail.contains("agent blew up"), "{e}");
}

#[test]
fn an_agent_speaking_garbage_fails_the_run() {
    let e = fails_with(
        "read l; echo 'oops' >&2; sleep 0.2; echo 'not json'; sleep 5",
        Duration::from_secs(10),
    );
    assert!(e.reason.contains("bad message: not json"), "{e}");
    assert!(e.stderr_tail.contains("oops"), "{e}");
}

#[test]
fn a_silent_agent_times_out() {
    let e = fails_with("sleep 30", Duration::from_millis(300));
    assert!(e.reason.contains("did not answer in time"), "{e}");
}

#[test]
fn an_agent_given_a_bad_request_says_why() {
    let out = Command::new(harness_exe())
        .args(["agent", "--wait", "5s"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(b"{\"hullo\":1}\n")?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad message (expected hello or run)"), "{err}");
}

#[test]
fn compare_with_two_client_processes_records_each_agent_and_their_sum() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(harness_exe())
        .args(["compare", "--quick", "--backends", "epoll-et", "--no-plots"])
        .args([
            "--workloads",
            "echo,idle",
            "--duration",
            "300ms",
            "--warmup",
            "100ms",
        ])
        .args(["--client-procs", "2", "--out"])
        .arg(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("compare did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(status.success(), "{err}");
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .unwrap();
    let r = harness::results::read_results(&path).unwrap();
    let topo = r.manifest.topology.as_ref().unwrap();
    assert_eq!(topo.client_procs, 2);
    assert_eq!(r.cells.len(), 3);
    for c in &r.cells {
        assert_eq!(c.status, harness::results::CellStatus::Ok, "{c:?}");
        let client = c.client.as_ref().unwrap();
        assert_eq!(c.agents.len(), 2);
        assert_eq!(
            client.requests,
            c.agents.iter().map(|a| a.completed).sum::<u64>()
        );
        assert_eq!(
            client.connections_established,
            c.agents.iter().map(|a| a.established).sum::<u64>()
        );
        assert_eq!(
            client.connections_requested,
            (c.workload.connections + c.workload.idle) as u64
        );
    }
}
