//! Resource limits the harness raises for itself (children inherit them).

/// Raises RLIMIT_NOFILE as far as allowed and returns the soft limit now in force.
/// Thousands of connections need thousands of descriptors; the default soft limit (often
/// 1024) is the first wall every epoll experiment hits.
pub fn raise_nofile_to_hard() -> u64 {
    backend_api::rlimit::raise_nofile().unwrap_or(0)
}
