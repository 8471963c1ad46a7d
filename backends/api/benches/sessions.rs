//! Cost of the shared sessions per request, so it can be compared with the kernel's share.

use backend_api::{Service, Session};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

const GET: &[u8] =
    b"GET /plaintext HTTP/1.1\r\nHost: server\r\nUser-Agent: ringside\r\nAccept: */*\r\n\r\n";

fn sessions(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    for depth in [1usize, 16] {
        let input: Vec<u8> = GET.repeat(depth);
        g.throughput(Throughput::Elements(depth as u64));
        g.bench_function(format!("http/depth{depth}"), |b| {
            let mut s = Service::Http.session();
            let mut out = Vec::with_capacity(64 * 1024);
            b.iter(|| {
                out.clear();
                s.on_input(&input, &mut out)
            })
        });
        let msg = vec![0x5au8; 64 * depth];
        g.bench_function(format!("echo/64B-x{depth}"), |b| {
            let mut s = Service::Echo.session();
            b.iter_batched_ref(
                || Vec::with_capacity(msg.len()),
                |out| s.on_input(&msg, out),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, sessions);
criterion_main!(benches);
