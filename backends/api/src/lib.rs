//! The contract every ringside backend implements, and everything backends share.
//!
//! A backend only moves bytes between sockets and [`Session`]s. Everything else that
//! could make two backends differ for reasons other than their I/O strategy lives here,
//! once: the listener options ([`listener`]), the limits ([`Limits`]), the application
//! logic ([`session`]), the stop signal ([`StopSignal`]) and the thread-per-core
//! layout with pinning ([`runner`]).
#![deny(missing_docs, rust_2018_idioms)]

/// Runs a libc call and turns `-1` into [`std::io::Error::last_os_error`].
///
/// The macro holds no `unsafe` of its own: the caller wraps the invocation in an `unsafe`
/// block whose `// SAFETY:` line says why the arguments are valid for that call.
///
/// ```
/// # use backend_api::syscall;
/// // SAFETY: dup takes no pointers; fd 0 may be closed, which only makes it fail.
/// let fd = unsafe { syscall!(dup(0)) };
/// # let _ = fd;
/// ```
#[macro_export]
macro_rules! syscall {
    ($fn: ident ( $($arg: expr),* $(,)* ) ) => {{
        let res = ::libc::$fn($($arg, )*);
        if res == -1 {
            Err(::std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

mod backend;
pub mod buffer;
pub mod close;
pub mod epoll;
pub mod known_leaks;
mod limits;
pub mod listener;
pub mod rlimit;
pub mod runner;
pub mod session;
mod stop;

pub use backend::{Backend, Family, ShardContext, ShardStats, Traits, Unsupported};
pub use buffer::OutBuf;
pub use limits::{Limits, ACCEPT_PAUSE};
pub use runner::{RunReport, RunnerError, RunningServer, ServerConfig};
pub use session::{AnySession, Flow, Service, Session};
pub use stop::StopSignal;
