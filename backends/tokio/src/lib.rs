//! ringside baselines on tokio: [`Tokio`] (`tokio`), the multi-thread work-stealing
//! runtime the way most Rust services use it, and [`TokioTpc`] (`tokio-tpc`), one
//! current-thread runtime per pinned core.
//!
//! Both live in one crate because they share everything but the runtime: the accept loop
//! (`shard`) and the connection task (`conn`) are the same code, so a difference between
//! the two is the layout and nothing else. Modules:
//!
//! - `conn`: one connection as a task (readiness, thread-local read buffer, session,
//!   output buffer with backpressure, counters);
//! - `shard`: a shard's accept loop, stop signal and descriptor-exhaustion pause;
//! - `multi`: [`Tokio`] and the registry that lets a server's shards share one runtime;
//! - `tpc`: [`TokioTpc`].
//!
//! # Reading
//!
//! A connection task waits for readiness (`TcpStream::ready`) and then reads with
//! `try_read` into the polling thread's buffer, the pattern tokio documents for
//! `try_read`. The common `let mut buf = vec![0; N]; stream.read(&mut buf).await` would
//! keep `limits.read_buffer` bytes per idle connection, and the idle sweep would then
//! measure that buffer instead of the runtime.
//!
//! # Memory per connection
//!
//! Measured for both backends at about **1.3 KiB of user memory per idle connection**
//! (RSS growth over 2,000 and 8,000 idle echo connections that each did one round trip,
//! release build, x86_64, tokio 1.54: 1,264 B for `tokio-tpc`, 1,296 B for `tokio`). It is
//! the task allocation (header, scheduler links and the 464-byte connection future: stream,
//! session, output buffer, counters, and the pending `ready()` wait with its waker), the
//! `ScheduledIo` tokio allocates per socket (cache-line padded), the `JoinSet` entry that
//! lets the shard abort the task at stop, and allocator rounding. The read buffer
//! (`limits.read_buffer`) is one per worker thread, not per connection. For comparison,
//! `poll` keeps about 120 B per idle connection.
#![deny(missing_docs, rust_2018_idioms)]

mod conn;
mod multi;
mod shard;
mod tpc;

pub use multi::{shared_runtimes, Tokio, WORKER_THREAD_NAME};
pub use tpc::TokioTpc;
