//! Limits shared by every backend, so none can win by buffering more or accepting less.

use std::time::Duration;

/// How long a backend stops accepting after `EMFILE`/`ENFILE` or at `max_connections`
/// before it tries again. Pausing (rather than retrying at once) is what keeps a
/// level-triggered listener that stays readable from turning into a busy loop; the
/// waiting connections stay in the kernel's backlog and are served once descriptors free.
pub const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// Per-shard limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most connections a shard holds open; past it the shard pauses accepting.
    pub max_connections: usize,
    /// Size of the read buffer (per shard for readiness backends, per buffer for
    /// completion backends). One read never returns more than this.
    pub read_buffer: usize,
    /// Most bytes of output a connection may have pending before the backend stops
    /// reading it (backpressure). A read may overshoot by what one read produces.
    pub max_pending_output: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 262_144,
            read_buffer: 64 * 1024,
            max_pending_output: 1024 * 1024,
        }
    }
}

impl Limits {
    /// True when a connection with `pending` bytes of unsent output must not be read.
    #[inline]
    pub fn output_full(&self, pending: usize) -> bool {
        pending >= self.max_pending_output
    }
}
