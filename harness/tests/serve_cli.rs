//! `harness serve` as users and scripts run it: the READY line, the final JSON counters,
//! and the libc memcpy warning only where the environment leaves the slowdown in place.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

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
