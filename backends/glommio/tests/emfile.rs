//! Out of descriptors: the shard pauses accepting instead of spinning, keeps serving its
//! open connections, and accepts the waiting ones once descriptors free up. Alone in its
//! binary because it lowers the process's RLIMIT_NOFILE.

mod util;

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use backend_api::Service;
use socket2::{Domain, Socket, Type};
use util::*;

fn roundtrip(c: &mut TcpStream, msg: &str) {
    c.write_all(msg.as_bytes()).unwrap();
    let mut back = vec![0; msg.len()];
    c.read_exact(&mut back).unwrap();
    assert_eq!(back, msg.as_bytes());
}

/// CPU ticks (user + system) a thread has used so far, from its already open stat file.
fn cpu_ticks(stat: &mut File) -> u64 {
    let mut s = String::new();
    stat.seek(SeekFrom::Start(0)).unwrap();
    stat.read_to_string(&mut s).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn shard_thread_stat() -> File {
    for entry in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap();
        if comm.trim_end() == "glommio-shard0" {
            return File::open(entry.path().join("stat")).unwrap();
        }
    }
    panic!("no glommio-shard0 thread");
}

fn nofile() -> libc::rlimit {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one struct rlimit.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    lim
}

/// Exhausts the descriptor table: every number below the new soft limit is in use.
/// Dropping it frees the descriptors and restores the limit.
struct Exhausted {
    fillers: Vec<OwnedFd>,
    saved: libc::rlimit,
}

impl Exhausted {
    fn new() -> Exhausted {
        let saved = nofile();
        let devnull = File::open("/dev/null").unwrap();
        let highest = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter_map(|e| e.file_name().to_string_lossy().parse::<i32>().ok())
            .max()
            .unwrap();
        let mut fillers = Vec::new();
        loop {
            // SAFETY: dup of a descriptor we own; the result is owned below.
            let fd = unsafe { libc::dup(devnull.as_raw_fd()) };
            assert!(fd >= 0);
            // SAFETY: dup just returned this descriptor and nothing else owns it.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            if fd.as_raw_fd() > highest {
                break;
            }
            fillers.push(fd);
        }
        let low = libc::rlimit {
            rlim_cur: highest as libc::rlim_t + 1,
            rlim_max: saved.rlim_max,
        };
        // SAFETY: setrlimit reads one struct rlimit.
        assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &low) }, 0);
        drop(devnull);
        Exhausted { fillers, saved }
    }
}

impl Drop for Exhausted {
    fn drop(&mut self) {
        // SAFETY: setrlimit reads one struct rlimit.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &self.saved) };
        self.fillers.clear();
    }
}

#[test]
fn emfile_pauses_accepting_without_spinning_and_recovers() {
    let server = start(Service::Echo);
    let addr = server.local_addr();
    let mut served = connect(addr);
    roundtrip(&mut served, "before");
    let waiting: Vec<Socket> = (0..4)
        .map(|_| Socket::new(Domain::IPV4, Type::STREAM, None).unwrap())
        .collect();
    let mut stat = shard_thread_stat();

    let exhausted = Exhausted::new();
    // The handshakes complete in the kernel; accepting them needs a descriptor.
    for s in &waiting {
        s.connect(&addr.into()).unwrap();
        s.send(b"waiting").unwrap();
    }
    // Measure the shard's CPU over an idle second: the only thing it has to do is retry
    // the accept. A spinning accept loop would burn about `hz` ticks of it.
    let t0 = cpu_ticks(&mut stat);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(&mut stat) - t0;
    // Open connections keep being served meanwhile.
    for round in 0..100 {
        roundtrip(&mut served, &format!("while out of descriptors {round}"));
    }
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    drop(exhausted);

    assert!(
        used < hz / 4,
        "shard used {used} of {hz} ticks in an idle second while out of descriptors"
    );
    for s in waiting {
        let mut c: TcpStream = s.into();
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let mut back = [0; 7];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"waiting");
    }
    roundtrip(&mut served, "after");
    drop(served);
    let report = server.stop().unwrap();
    assert!(report.total.accept_pauses >= 1, "{:?}", report.total);
    assert_eq!(report.total.accepted, 5);
}
