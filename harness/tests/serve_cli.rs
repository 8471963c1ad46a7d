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

/// `--ledger-stdin`: each `mark N` is answered with one `LEDGER` line of the server's own
/// counters (rising between marks that a load separates), and `stop` stops it with its
/// stats line, as the end of stdin does. Every read has a deadline.
#[test]
fn ledger_stdin_answers_marks_with_its_own_counters() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_harness"))
        .args(["serve", "--backend", "epoll-et", "--service", "echo"])
        .args(["--listen", "127.0.0.1:0", "--ledger-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("harness serve starts");
    let out = child.stdout.take().unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(10))
            .expect("a line from serve within 10 s")
    };
    let ready = next();
    let addr = ready
        .strip_prefix("READY ")
        .expect("READY first")
        .to_string();
    let mut stdin = child.stdin.take().unwrap();
    let mut mark = |n: u64| -> serde_json::Value {
        writeln!(stdin, "mark {n}").unwrap();
        stdin.flush().unwrap();
        let line = next();
        let json = line.strip_prefix("LEDGER ").expect("a LEDGER answer");
        serde_json::from_str(json).expect("LEDGER carries JSON")
    };
    let a = mark(1);
    let mut c = TcpStream::connect(&addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..200 {
        c.write_all(&[7u8; 64]).unwrap();
        let mut back = [0u8; 64];
        c.read_exact(&mut back).unwrap();
    }
    let b = mark(2);
    assert_eq!((a["seq"].as_u64(), b["seq"].as_u64()), (Some(1), Some(2)));
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(b["host"]["kernel"], kernel.trim());
    assert_eq!(b["host"]["pid"].as_u64(), Some(u64::from(child.id())));
    assert!(b["unix_ns"].as_u64() > a["unix_ns"].as_u64());
    // Whichever CPU count the host allows, it rose over 200 echoes.
    let cpu = |v: &serde_json::Value| v["cgroup_ns"].as_u64().or(v["schedstat_ns"].as_u64());
    assert!(cpu(&b) > cpu(&a), "{a}\n{b}");
    assert!(b["cores"].as_object().is_some_and(|c| !c.is_empty()));
    if let (Some(x), Some(y)) = (a["syscalls"].as_u64(), b["syscalls"].as_u64()) {
        assert!(y >= x + 200, "at least a read per echo: {x} -> {y}");
    }
    drop(c);
    writeln!(stdin, "stop").unwrap();
    stdin.flush().unwrap();
    let stats: serde_json::Value = serde_json::from_str(&next()).expect("stats line");
    assert_eq!(stats["total"]["bytes_in"], 200 * 64);
    let t0 = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "serve exits after stop"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success());
    drop(stdin);
}
