//! One readiness round versus one completion round, per socket.
//!
//! N ∈ {1, 16, 256} socketpairs each get 64 bytes written to their peer end (untimed);
//! the timed part is what a server loop pays to get those bytes into user memory:
//!
//! - `epoll`: `epoll_wait` (level-triggered, all N ready) + N `read`s: N + 1 syscalls.
//! - `uring_inline`: N one-shot `Recv` SQEs + one `submit_and_wait(N)` + reaping N CQEs,
//!   data already there, so the receives complete inline during the submit: 1 syscall.
//! - `uring_armed`: one-shot `Recv`s armed *before* the data arrives (a server waiting on
//!   idle connections), on a `SINGLE_ISSUER | DEFER_TASKRUN` ring so the completion work
//!   runs inside the timed wait: the re-arm `submit` plus `submit_and_wait(N)`: 2 syscalls.
//! - `uring_multishot`: one multishot `Recv` per socket with a provided buffer ring
//!   (`uring-multishot`'s steady state): `submit_and_wait(N)` + reaping + recycling: 1
//!   syscall, no re-arm.
//!
//! Criterion reports time per element, i.e. per socket.

use std::hint::black_box;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use io_uring::{cqueue, opcode, types, IoUring};

const MSG: usize = 64;

struct Pairs {
    /// Server ends (read by the round).
    ours: Vec<UnixStream>,
    /// Peer ends (written before each round).
    peers: Vec<UnixStream>,
}

impl Pairs {
    fn new(n: usize) -> Pairs {
        let (ours, peers) = (0..n)
            .map(|_| UnixStream::pair().expect("socketpair"))
            .unzip();
        Pairs { ours, peers }
    }

    fn make_ready(&mut self) {
        let msg = [7u8; MSG];
        for p in &mut self.peers {
            p.write_all(&msg).expect("peer write");
        }
    }
}

fn epoll_round(c: &mut Criterion, n: usize) {
    let mut pairs = Pairs::new(n);
    // SAFETY: plain syscalls on descriptors this function owns; results are checked.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0);
    for (i, s) in pairs.ours.iter().enumerate() {
        s.set_nonblocking(true).unwrap();
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        // SAFETY: registers a live descriptor with a live epoll instance.
        let r = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
        assert_eq!(r, 0);
    }
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; n];
    let mut buf = [0u8; 4096];
    c.benchmark_group("round")
        .throughput(Throughput::Elements(n as u64))
        .bench_function(BenchmarkId::new("epoll", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    pairs.make_ready();
                    let t = Instant::now();
                    // SAFETY: `events` holds n entries.
                    let got = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), n as i32, -1) };
                    assert_eq!(got as usize, n);
                    for ev in &events[..n] {
                        let fd = pairs.ours[ev.u64 as usize].as_raw_fd();
                        // SAFETY: reads into a live stack buffer of its length.
                        let r = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
                        assert_eq!(r as usize, MSG);
                    }
                    total += t.elapsed();
                }
                black_box(&buf);
                total
            })
        });
    // SAFETY: closes the epoll instance created above.
    unsafe { libc::close(ep) };
}

fn uring_inline_round(c: &mut Criterion, n: usize) {
    let mut pairs = Pairs::new(n);
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(1024)
        .build(512)
        .expect("io_uring");
    let mut bufs = vec![[0u8; 4096]; n];
    c.benchmark_group("round")
        .throughput(Throughput::Elements(n as u64))
        .bench_function(BenchmarkId::new("uring_inline", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    pairs.make_ready();
                    let t = Instant::now();
                    for (i, (s, buf)) in pairs.ours.iter().zip(bufs.iter_mut()).enumerate() {
                        let e = opcode::Recv::new(types::Fd(s.as_raw_fd()), buf.as_mut_ptr(), 4096)
                            .build()
                            .user_data(i as u64);
                        // SAFETY: `buf` outlives the receive, which completes within this
                        // round (we wait for all n).
                        unsafe { ring.submission().push(&e) }.expect("sq has room");
                    }
                    ring.submit_and_wait(n).expect("submit_and_wait");
                    let mut reaped = 0;
                    for cqe in ring.completion() {
                        assert_eq!(cqe.result() as usize, MSG);
                        reaped += 1;
                    }
                    assert_eq!(reaped, n);
                    total += t.elapsed();
                }
                total
            })
        });
}

fn uring_armed_round(c: &mut Criterion, n: usize) {
    let mut pairs = Pairs::new(n);
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(1024)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(512)
        .expect("io_uring with DEFER_TASKRUN");
    let mut bufs = vec![[0u8; 4096]; n];
    let arm = |ring: &mut IoUring, bufs: &mut Vec<[u8; 4096]>, pairs: &Pairs| {
        for (i, (s, buf)) in pairs.ours.iter().zip(bufs.iter_mut()).enumerate() {
            let e = opcode::Recv::new(types::Fd(s.as_raw_fd()), buf.as_mut_ptr(), 4096)
                .build()
                .user_data(i as u64);
            // SAFETY: `bufs` outlives every receive: all are reaped before it is dropped
            // (each round reaps n, and the final drain below reaps the last n).
            unsafe { ring.submission().push(&e) }.expect("sq has room");
        }
    };
    arm(&mut ring, &mut bufs, &pairs);
    ring.submit().expect("submit");
    c.benchmark_group("round")
        .throughput(Throughput::Elements(n as u64))
        .bench_function(BenchmarkId::new("uring_armed", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    pairs.make_ready();
                    let t = Instant::now();
                    ring.submit_and_wait(n).expect("submit_and_wait");
                    let mut reaped = 0;
                    for cqe in ring.completion() {
                        assert_eq!(cqe.result() as usize, MSG);
                        reaped += 1;
                    }
                    assert_eq!(reaped, n);
                    arm(&mut ring, &mut bufs, &pairs);
                    ring.submit().expect("submit re-arms");
                    total += t.elapsed();
                }
                total
            })
        });
    // Reap the last armed receives before their buffers go.
    pairs.make_ready();
    ring.submit_and_wait(n).expect("final reap");
    ring.completion().for_each(drop);
}

/// A minimal provided buffer ring for the multishot round.
struct BufRing {
    ring: Vec<types::BufRingEntry>,
    data: Vec<u8>,
    entries: u16,
    tail: u16,
}

impl BufRing {
    fn new(entries: u16) -> BufRing {
        // A Vec of BufRingEntry is 16-byte aligned; the kernel wants page alignment for
        // a mapped ring but accepts any user address it can pin, so over-allocate and
        // align by hand.
        let mut r = BufRing {
            ring: Vec::with_capacity(entries as usize + 256),
            data: vec![0u8; entries as usize * 4096],
            entries,
            tail: 0,
        };
        // SAFETY: BufRingEntry is plain old data; zeroed entries are valid.
        r.ring
            .resize_with(entries as usize + 256, || unsafe { std::mem::zeroed() });
        for bid in 0..entries {
            r.recycle(bid);
        }
        r.publish();
        r
    }

    fn base(&mut self) -> *mut types::BufRingEntry {
        let p = self.ring.as_mut_ptr();
        let off = p.align_offset(4096);
        // SAFETY: 256 spare entries (4 KiB) leave room for the alignment offset.
        unsafe { p.add(off) }
    }

    fn recycle(&mut self, bid: u16) {
        let idx = (self.tail & (self.entries - 1)) as usize;
        let addr = self.data.as_ptr() as u64 + bid as u64 * 4096;
        let base = self.base();
        // SAFETY: idx < entries, inside the aligned ring.
        let e = unsafe { &mut *base.add(idx) };
        e.set_addr(addr);
        e.set_len(4096);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&mut self) {
        let base = self.base();
        // SAFETY: the tail field of entry 0, aligned u16, read by the kernel only.
        let tail = unsafe { AtomicU16::from_ptr(types::BufRingEntry::tail(base) as *mut u16) };
        tail.store(self.tail, Ordering::Release);
    }
}

fn uring_multishot_round(c: &mut Criterion, n: usize) -> io::Result<()> {
    let mut pairs = Pairs::new(n);
    let mut ring: IoUring = IoUring::builder()
        .setup_cqsize(4096)
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(512)?;
    let entries = (2 * n).next_power_of_two().max(2) as u16;
    let mut bufring = BufRing::new(entries);
    let base = bufring.base() as u64;
    // SAFETY: the ring memory lives in `bufring`, which outlives the registration (it is
    // unregistered below after every receive was cancelled and reaped).
    unsafe {
        ring.submitter()
            .register_buf_ring_with_flags(base, entries, 7, 0)
    }?;
    for (i, s) in pairs.ours.iter().enumerate() {
        let e = opcode::RecvMulti::new(types::Fd(s.as_raw_fd()), 7)
            .build()
            .user_data(i as u64);
        // SAFETY: no pointer besides the registered buffer ring.
        unsafe { ring.submission().push(&e) }.expect("sq has room");
    }
    ring.submit()?;
    c.benchmark_group("round")
        .throughput(Throughput::Elements(n as u64))
        .bench_function(BenchmarkId::new("uring_multishot", n), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    pairs.make_ready();
                    let t = Instant::now();
                    ring.submit_and_wait(n).expect("submit_and_wait");
                    let mut reaped = 0;
                    let mut bids = Vec::with_capacity(n);
                    for cqe in ring.completion() {
                        assert_eq!(cqe.result() as usize, MSG);
                        assert!(cqueue::more(cqe.flags()), "multishot stays armed");
                        bids.push(cqueue::buffer_select(cqe.flags()).expect("a buffer"));
                        reaped += 1;
                    }
                    for bid in bids {
                        bufring.recycle(bid);
                    }
                    bufring.publish();
                    assert_eq!(reaped, n);
                    total += t.elapsed();
                }
                total
            })
        });
    // Cancel every receive and reap them before the buffer ring goes.
    for i in 0..n as u64 {
        let e = opcode::AsyncCancel::new(i).build().user_data(u64::MAX);
        // SAFETY: no pointer.
        unsafe { ring.submission().push(&e) }.expect("sq has room");
    }
    ring.submit_and_wait(2 * n)?;
    ring.completion().for_each(drop);
    ring.submitter().unregister_buf_ring(7)?;
    Ok(())
}

fn rounds(c: &mut Criterion) {
    for n in [1, 16, 256] {
        epoll_round(c, n);
        uring_inline_round(c, n);
        uring_armed_round(c, n);
        uring_multishot_round(c, n).expect("multishot round needs Linux 6.1");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = rounds
}
criterion_main!(benches);
