//! What can go wrong: [`LoadError`] stops a run before or while it starts (bad input, an
//! unreachable target, too few descriptors); [`ClientError`] is one failure seen during a
//! run, counted by kind in the report and never fatal to the run.

use std::fmt;
use std::net::SocketAddr;

/// Why a load run could not start or could not finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A flag or config field is out of range; the message names the flag and its bounds.
    #[error("{0}")]
    Config(String),
    /// The preflight connection to the target failed.
    #[error("cannot reach {target}: {reason}")]
    Unreachable {
        /// The address that was tried.
        target: SocketAddr,
        /// What happened and what to check.
        reason: String,
    },
    /// The open-file limit is below what the run needs, even after raising it.
    #[error(
        "this run needs about {needed} open files ({what}), but RLIMIT_NOFILE is {limit} even \
         after raising the soft limit to the hard limit; raise it (`ulimit -n {needed}` as root, \
         or LimitNOFILE= for a service), spread the connections over processes with \
         --client-procs N, or ask for fewer connections"
    )]
    TooFewFiles {
        /// Descriptors the run needs.
        needed: u64,
        /// The limit in force.
        limit: u64,
        /// How `needed` was counted.
        what: String,
    },
    /// Setting up a client thread failed (epoll, pinning, spawning).
    #[error("{what}: {source}")]
    Setup {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A client thread panicked (a bug in the load generator).
    #[error("client thread {thread} panicked: {message}")]
    Panicked {
        /// Index of the thread.
        thread: usize,
        /// The panic message.
        message: String,
    },
}

impl LoadError {
    pub(crate) fn setup(what: impl Into<String>, source: std::io::Error) -> LoadError {
        LoadError::Setup {
            what: what.into(),
            source,
        }
    }
}

/// One failure observed during a run. Its [`fmt::Display`] form is the key under which the
/// report counts it: errno names for OS errors (`ECONNREFUSED`), snake_case otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ClientError {
    /// A system call failed with this errno (connect, read, write).
    Errno(i32),
    /// A connect did not finish within the connect timeout (reported as `ETIMEDOUT`).
    ConnectTimeout,
    /// An echoed byte differed from the byte sent.
    EchoMismatch,
    /// The peer closed the connection in the middle of a reply.
    ShortReply,
    /// The peer closed a keep-alive connection with no reply outstanding.
    ClosedByServer,
    /// An idle connection was closed by the peer while it was held open.
    IdleClosed,
    /// A reply did not parse as HTTP/1.x (or its head was absurdly long).
    GarbledReply,
    /// An HTTP reply had this non-2xx status.
    HttpStatus(u16),
    /// An HTTP reply that keeps the connection open had no Content-Length.
    NoContentLength,
    /// Bytes arrived when no reply was expected.
    UnsolicitedData,
    /// A request was still unanswered when the drain after the run timed out.
    Unanswered,
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::Errno(e) => f.write_str(&errno_name(*e)),
            ClientError::ConnectTimeout => f.write_str("ETIMEDOUT"),
            ClientError::EchoMismatch => f.write_str("echo_mismatch"),
            ClientError::ShortReply => f.write_str("short_reply"),
            ClientError::ClosedByServer => f.write_str("closed_by_server"),
            ClientError::IdleClosed => f.write_str("idle_closed_by_server"),
            ClientError::GarbledReply => f.write_str("garbled_reply"),
            ClientError::HttpStatus(s) => write!(f, "http_status_{s}"),
            ClientError::NoContentLength => f.write_str("no_content_length"),
            ClientError::UnsolicitedData => f.write_str("unsolicited_data"),
            ClientError::Unanswered => f.write_str("unanswered_at_end"),
        }
    }
}

/// The symbolic name of an errno (`ECONNREFUSED`), or `errno N` for rare ones.
pub fn errno_name(e: i32) -> String {
    let name = match e {
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNABORTED => "ECONNABORTED",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EPIPE => "EPIPE",
        libc::EMFILE => "EMFILE",
        libc::ENFILE => "ENFILE",
        libc::ENOBUFS => "ENOBUFS",
        libc::ENOMEM => "ENOMEM",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::ENETDOWN => "ENETDOWN",
        libc::EHOSTDOWN => "EHOSTDOWN",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::EINVAL => "EINVAL",
        libc::EAGAIN => "EAGAIN",
        libc::EINTR => "EINTR",
        libc::EPROTO => "EPROTO",
        libc::ENOTCONN => "ENOTCONN",
        libc::EBADF => "EBADF",
        _ => return format!("errno {e}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_as_the_report_documents() {
        assert_eq!(
            ClientError::Errno(libc::ECONNREFUSED).to_string(),
            "ECONNREFUSED"
        );
        assert_eq!(ClientError::ConnectTimeout.to_string(), "ETIMEDOUT");
        assert_eq!(ClientError::HttpStatus(503).to_string(), "http_status_503");
        assert_eq!(errno_name(4095), "errno 4095");
    }
}
