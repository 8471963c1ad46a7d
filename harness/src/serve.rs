//! `harness serve`: one backend in this process, pinned, until told to stop.
//!
//! The contract with whoever starts it (a user, `harness compare`, a script): exactly one
//! line `READY <bound address>` on stdout once every shard listens; on SIGINT, SIGTERM or
//! end of stdin it stops, prints the summed `ShardStats` as one JSON line, exits 0.
//!
//! With `--ledger-stdin` (how `compare --topology ssh` runs it on a server host) it also
//! measures itself: see [`crate::compare::remote`].

use std::io::{Read, Write};
use std::net::SocketAddr;

use anyhow::Context;
use backend_api::listener::DEFAULT_BACKLOG;
use backend_api::runner::{self, ServerConfig};
use backend_api::{Limits, Service};
use clap::Args;

/// Options of `harness serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Backend to run (see `harness list`).
    #[arg(long)]
    pub backend: String,
    /// Application every connection runs: echo or http.
    #[arg(long, default_value = "http")]
    pub service: Service,
    /// CPUs to run one shard each on, e.g. 0 or 0,2-3 (default: the first usable core).
    #[arg(long)]
    pub cores: Option<String>,
    /// Address to listen on; port 0 picks a free port (printed on the READY line).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Backlog asked of listen(2); the kernel caps it at net.core.somaxconn.
    #[arg(long, default_value_t = DEFAULT_BACKLOG)]
    pub backlog: u32,
    /// Most connections per shard; past it a shard pauses accepting.
    #[arg(long, default_value_t = Limits::default().max_connections)]
    pub max_connections: usize,
    /// Read buffer size in bytes.
    #[arg(long, default_value_t = Limits::default().read_buffer)]
    pub read_buffer: usize,
    /// Pending output per connection, in bytes, past which it is not read (backpressure).
    #[arg(long, default_value_t = Limits::default().max_pending_output)]
    pub max_pending_output: usize,
    /// Keep serving when stdin closes (for running in the background with stdin at
    /// /dev/null); stop with SIGINT or SIGTERM only.
    #[arg(long, conflicts_with = "ledger_stdin")]
    pub ignore_stdin: bool,
    /// Measure this process for a coordinator on another host: join a cgroup of its own
    /// (else fall back to schedstat), count its syscalls and task-clock where perf allows,
    /// and answer each `mark N` line on stdin with one line `LEDGER {json}` (its CPU ns,
    /// /proc/stat of every core, /proc/self/stat, host facts, wall clock). `stop` or the
    /// end of stdin stops the server.
    #[arg(long)]
    pub ledger_stdin: bool,
}

/// Runs `harness serve`.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let backend = crate::registry::find(&args.backend)?;
    let cores = match &args.cores {
        Some(list) => crate::cores::parse_core_list(list)?,
        None => runner::usable_cores().into_iter().take(1).collect(),
    };
    anyhow::ensure!(
        args.read_buffer >= 512,
        "--read-buffer {} is too small; use at least 512",
        args.read_buffer
    );
    anyhow::ensure!(
        args.max_connections > 0,
        "--max-connections must be at least 1"
    );
    anyhow::ensure!(
        args.max_pending_output > 0,
        "--max-pending-output must be at least 1"
    );
    crate::rlimit::raise_nofile_to_hard();
    let config = ServerConfig {
        service: args.service,
        cores,
        listen: args.listen,
        backlog: args.backlog,
        limits: Limits {
            max_connections: args.max_connections,
            read_buffer: args.read_buffer,
            max_pending_output: args.max_pending_output,
        },
    };
    // Signals are blocked into the iterator before any shard exists, so a SIGINT during
    // startup is not lost.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])
    .context("installing SIGINT/SIGTERM handlers")?;
    // Before the backend starts a thread, so each of them is in the group from its start.
    let meter = args
        .ledger_stdin
        .then(crate::compare::remote::SelfMeter::enter);
    if let Some(w) = crate::memcpy::unfixed_warning() {
        eprintln!("warning: {w}");
    }
    let server = runner::start(backend, config)
        .with_context(|| format!("starting backend {}", args.backend))?;
    if let Some(w) = server.backlog().warning() {
        eprintln!("warning: {w}");
    }
    // Every shard thread exists now: each gets its own counter, later threads inherit.
    let meter = std::sync::Arc::new(std::sync::Mutex::new(meter.map(|mut m| {
        m.open_counters();
        m
    })));
    let stop = server.stop_signal();
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("serve-signals".into())
            .spawn(move || {
                if signals.forever().next().is_some() {
                    stop.fire();
                }
            })
            .context("spawning the signal thread")?;
    }
    if args.ledger_stdin {
        let stop = stop.clone();
        let meter = std::sync::Arc::clone(&meter);
        std::thread::Builder::new()
            .name("serve-ledger".into())
            .spawn(move || {
                crate::compare::remote::answer_marks(std::io::stdin().lock(), &meter);
                stop.fire();
            })
            .context("spawning the ledger thread")?;
    } else if !args.ignore_stdin {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("serve-stdin".into())
            .spawn(move || {
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin().lock();
                // Anything read is ignored; only EOF (or an error) stops the server.
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                stop.fire();
            })
            .context("spawning the stdin thread")?;
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "READY {}", server.local_addr())?;
        out.flush()?;
    }
    let report = server
        .join()
        .with_context(|| format!("backend {} failed", args.backend))?;
    // Out of its own cgroup, which is then removed.
    drop(meter.lock().unwrap_or_else(|p| p.into_inner()).take());
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &report)?;
    writeln!(out)?;
    Ok(())
}
