//! Idle: `--idle` connections are opened first (at most [`CONNECT_WINDOW`] connects in
//! flight per thread, so the server's SYN and accept queues are not flooded), held open and
//! watched (a server that drops one is an error), while `--connections` active echo
//! connections run among them.

/// Connects in flight at once per client thread while establishing connections.
pub(crate) const CONNECT_WINDOW: usize = 512;
