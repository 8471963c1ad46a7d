//! `harness serve` as users and scripts run it: the READY line, the final JSON counters,
//! and the libc memcpy warning only where the environment leaves the slowdown in place.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// Runs `harness serve` with `tunables` as GLIBC_TUNABLES (None: unset), echoes one
/// message through it, closes its stdin, and returns (stdout, stderr).
fn serve_once(tunables: Option<&str>) -> (String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harness"));
    cmd.args([
        "serve",
        "--backend",
        "epoll-et",
        "--service",
        "echo",
        "--listen",
        "127.0.0.1:0",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    match tunables {
        Some(t) => cmd.env("GLIBC_TUNABLES", t),
        None => cmd.env_remove("GLIBC_TUNABLES"),
    };
    let mut child = cmd.spawn().expect("harness serve starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut ready = String::new();
    out.read_line(&mut ready).unwrap();
    let addr = ready
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("first stdout line is READY <addr>, got {ready:?}"))
        .trim()
        .to_string();
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(&[7u8; 5000]).unwrap();
    let mut back = [0u8; 5000];
    c.read_exact(&mut back).unwrap();
    assert!(back.iter().all(|&b| b == 7));
    drop(c);
    drop(child.stdin.take()); // EOF on stdin stops the server
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(child.wait().unwrap().success(), "serve failed: {err}");
    (rest, err)
}

#[test]
fn tunable_set_means_no_warning_and_counters_follow() {
    let fix = format!(
        "{}={}",
        harness::memcpy::TUNABLE,
        harness::memcpy::TUNABLE_VALUE
    );
    let (stdout, stderr) = serve_once(Some(&fix));
    assert!(
        !stderr.contains("memcpy"),
        "no memcpy warning when GLIBC_TUNABLES sets the threshold: {stderr}"
    );
    let stats: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON counters");
    assert_eq!(stats["backend"], "epoll-et");
    assert_eq!(stats["total"]["bytes_in"], 5000);
    assert_eq!(stats["total"]["bytes_out"], 5000);
    assert_eq!(stats["total"]["refused"], 0);
}

#[test]
fn a_memcpy_warning_names_the_fix() {
    // Whether this machine has the slowdown is the probe's call; when serve warns, the
    // warning must carry the line that fixes it.
    let (_, stderr) = serve_once(None);
    if stderr.contains("memcpy") {
        assert!(
            stderr.contains(&harness::memcpy::export_line()),
            "warning without the fix: {stderr}"
        );
    }
}

/// Reads the first stdout line of `child`, failing the test if none comes within 30 s.
fn first_line(child: &mut Child) -> (String, BufReader<ChildStdout>) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send((line, out));
    });
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(got) => got,
        Err(_) => {
            let _ = child.kill();
            panic!("harness serve printed no line within 30 s");
        }
    }
}

#[test]
fn a_second_server_on_a_served_port_refuses_to_start() {
    // The first server runs two shards where the box allows, so its own shards join
    // each other's port while a stranger may not.
    let cores: Vec<String> = backend_api::runner::usable_cores()
        .iter()
        .take(2)
        .map(usize::to_string)
        .collect();
    let mut first = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["serve", "--backend", "epoll-et", "--service", "echo"])
        .args(["--listen", "127.0.0.1:0", "--cores", &cores.join(",")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("harness serve starts");
    let (ready, mut out) = first_line(&mut first);
    let addr = ready
        .strip_prefix("READY ")
        .unwrap_or_else(|| panic!("first stdout line is READY <addr>, got {ready:?}"))
        .trim()
        .to_string();
    let port = addr.rsplit(':').next().unwrap().to_string();

    // With stdin at EOF a second server that did start would stop at once, so this
    // returns either way.
    let second = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["serve", "--backend", "epoll-et", "--service", "echo"])
        .args(["--listen", &addr, "--cores", &cores[0]])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&second.stdout);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        !second.status.success() && !stdout.contains("READY"),
        "a second server started on {addr}:\nstdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stderr.contains(&format!("port {port}")) && stderr.contains("another process"),
        "the refusal does not name the port: {stderr}"
    );

    // The first server still answers every connection.
    for i in 0..16u8 {
        let mut c = TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        c.write_all(&[i; 100]).unwrap();
        let mut back = [0u8; 100];
        c.read_exact(&mut back).unwrap();
        assert!(back.iter().all(|&b| b == i));
    }
    drop(first.stdin.take());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    assert!(first.wait().unwrap().success());
    let stats: serde_json::Value = serde_json::from_str(rest.trim()).expect("JSON counters");
    assert_eq!(stats["total"]["accepted"], 16, "{stats}");
}
