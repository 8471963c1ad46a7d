//! Sans-IO application logic: the same for every backend.
//!
//! A backend hands every byte it reads to [`Session::on_input`] and writes whatever the
//! session appended to `out`. Sessions keep incomplete input themselves, so backends never
//! parse anything.

mod echo;
pub mod http;

use std::fmt;
use std::str::FromStr;

pub use echo::EchoSession;
pub use http::{HttpSession, MAX_HEAD};

/// What the backend does with a connection after [`Session::on_input`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep reading.
    Continue,
    /// Stop reading, write everything pending, then close.
    Close,
}

/// One connection's application state.
pub trait Session {
    /// Consumes all of `input` and appends any response bytes to `out`.
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Flow;
}

/// Which application every connection runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Service {
    /// Returns every byte, in order.
    Echo,
    /// HTTP/1.1 GET answered with a fixed "Hello, World!".
    Http,
}

impl Service {
    /// Every service, in the order `--help` lists them.
    pub const ALL: [Service; 2] = [Service::Echo, Service::Http];

    /// A fresh session for a new connection. Allocates nothing.
    #[inline]
    pub fn session(self) -> AnySession {
        match self {
            Service::Echo => AnySession::Echo(EchoSession),
            Service::Http => AnySession::Http(HttpSession::new()),
        }
    }

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Echo => "echo",
            Service::Http => "http",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Service {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Service::ALL
            .into_iter()
            .find(|svc| svc.as_str() == s)
            .ok_or_else(|| format!("unknown service '{s}'; valid services: echo, http"))
    }
}

/// A session of any service, dispatched without a heap allocation or a vtable.
#[derive(Debug)]
pub enum AnySession {
    /// An echo session.
    Echo(EchoSession),
    /// An HTTP session.
    Http(HttpSession),
}

impl Session for AnySession {
    #[inline]
    fn on_input(&mut self, input: &[u8], out: &mut Vec<u8>) -> Flow {
        match self {
            AnySession::Echo(s) => s.on_input(input, out),
            AnySession::Http(s) => s.on_input(input, out),
        }
    }
}

impl AnySession {
    /// Heap bytes this session holds (buffered incomplete input).
    pub fn buffered(&self) -> usize {
        match self {
            AnySession::Echo(_) => 0,
            AnySession::Http(s) => s.buffered(),
        }
    }
}
