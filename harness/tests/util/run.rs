//! Running the harness binary as a child with a deadline, for the tests that drive whole
//! `compare` runs (`tests/topology_*.rs`): nothing here blocks without a timeout.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use harness::results::{read_results, ResultsFile};

/// A finished child.
pub struct Ran {
    pub pid: u32,
    pub status: ExitStatus,
    pub stderr: String,
}

/// Runs `cmd` (stdout discarded, stderr kept), killing it and panicking past `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Ran {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    let status = wait_with_timeout(&mut child, timeout);
    Ran {
        pid,
        status,
        stderr: reader.join().unwrap(),
    }
}

/// Waits for `child`, killing it and panicking past `timeout`.
pub fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the harness did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one results file a run wrote into `dir`.
pub fn results_in(dir: &Path) -> ResultsFile {
    let json: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    assert_eq!(json.len(), 1, "one results file: {json:?}");
    read_results(&json[0]).unwrap()
}

/// Polls `f` until it holds; panics naming `what` past `timeout`.
pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "{what} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}
