//! The registry: the one place that names every backend the harness offers.
//!
//! Adding a backend is one line in [`all`] (and one dependency line in Cargo.toml).

use std::io::Write;
use std::sync::Arc;

use anyhow::bail;
use backend_api::Backend;

/// Every registered backend, in the order `harness list` and plots show them.
pub fn all() -> Vec<Arc<dyn Backend>> {
    let mut all: Vec<Arc<dyn Backend>> = vec![
        Arc::new(backend_epoll::EpollEt),
        Arc::new(backend_epoll::EpollLt),
        Arc::new(backend_uring::Uring),
        Arc::new(backend_uring::UringMultishot),
        Arc::new(backend_uring::UringSqpoll),
        Arc::new(backend_glommio::Glommio),
        Arc::new(backend_tokio::Tokio),
        Arc::new(backend_tokio::TokioTpc),
        Arc::new(backend_poll::Poll),
        Arc::new(backend_blocking::Blocking),
    ];
    // The top of the io_uring ladder; the other steps resolve by name (see `find`).
    all.push(backend_uring::full());
    // Test-only backends: compiled into builds with debug assertions (what `cargo test`
    // builds), never into a release binary, and registered only when asked for.
    #[cfg(debug_assertions)]
    if std::env::var(crate::faulty::ENV).as_deref() == Ok("1") {
        all.push(Arc::new(crate::faulty::PanicAfter(8)));
        all.push(Arc::new(crate::faulty::NeverReady));
        all.push(Arc::new(crate::faulty::CorruptReplies));
        all.push(Arc::new(crate::faulty::SlowReplies(
            std::time::Duration::from_millis(2),
        )));
    }
    all
}

/// Backends that exist to test the epoll field notes' claims (suites/seed-claims.toml):
/// variants one point off a base backend, and the select baseline. Runnable by name
/// (`--backends`, a suite's `backends`) and listed, but not in the default comparison,
/// which keeps its time budget.
pub fn claim_backends() -> Vec<Arc<dyn Backend>> {
    vec![
        Arc::new(backend_select::Select),
        Arc::new(backend_epoll::EpollEtShortRead),
        Arc::new(backend_epoll::EpollInOut),
        Arc::new(backend_epoll::EpollToggle),
        Arc::new(backend_epoll::EpollOneshot),
        Arc::new(backend_epoll::EpollLtMaxEvents::<1>),
        Arc::new(backend_epoll::EpollLtMaxEvents::<16>),
        Arc::new(backend_epoll::EpollLtMaxEvents::<64>),
        Arc::new(backend_epoll::EpollLtMaxEvents::<1024>),
    ]
}

/// The most locked memory any registered backend needs per server process, and which
/// backends need it ("uring, glommio"); (0, "") when none does.
pub fn memlock_need() -> (u64, String) {
    let all = all();
    let need = all
        .iter()
        .map(|b| b.traits().memlock_bytes)
        .max()
        .unwrap_or(0);
    let users: Vec<&str> = all
        .iter()
        .filter(|b| need > 0 && b.traits().memlock_bytes == need)
        .map(|b| b.name())
        .collect();
    (need, users.join(", "))
}

/// Finds a backend by name, or says which names exist.
pub fn find(name: &str) -> anyhow::Result<Arc<dyn Backend>> {
    let mut all = all();
    all.extend(claim_backends());
    if let Some(b) = all.iter().find(|b| b.name() == name) {
        return Ok(Arc::clone(b));
    }
    // Any io_uring feature set, `uring+feature+...`; a bad one lists the valid features.
    if let Some(b) = backend_uring::backend(name) {
        return b.map_err(anyhow::Error::new);
    }
    let names: Vec<&str> = all.iter().map(|b| b.name()).collect();
    bail!(
        "unknown backend '{name}'; known backends: {} (or an io_uring feature set, uring+feature+...)",
        names.join(", ")
    )
}

/// Most connections one server process of backend `name` can hold, and why, where the
/// backend has such a ceiling below the descriptor limit: a cell needing more is
/// unsupported, not run.
pub fn connection_ceiling(name: &str) -> Option<(u64, String)> {
    (name == backend_select::Select.name()).then(|| {
        (
            backend_select::MAX_CONNECTIONS as u64,
            format!(
                "select(2) cannot watch descriptors at or above FD_SETSIZE ({}): at most {} \
                 connections per server process",
                backend_select::FD_SETSIZE,
                backend_select::MAX_CONNECTIONS
            ),
        )
    })
}

/// `harness list`: one line per backend: name, availability, description.
pub fn print_list(out: &mut impl Write) -> anyhow::Result<()> {
    let mut all = all();
    all.extend(claim_backends());
    for b in backend_uring::ladder() {
        if !all.iter().any(|a| a.name() == b.name()) {
            all.push(b);
        }
    }
    let width = all.iter().map(|b| b.name().len()).max().unwrap_or(0);
    for b in &all {
        let status = match b.probe() {
            Ok(()) => "available".to_string(),
            Err(u) => format!("unsupported: {u}"),
        };
        writeln!(out, "{:width$}  {status}  {}", b.name(), b.describe())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_say_which_are_io_uring_based_and_what_they_lock() {
        let io_uring: Vec<&str> = all()
            .iter()
            .filter(|b| b.traits().family.uses_io_uring())
            .map(|b| b.name())
            .collect();
        assert_eq!(
            io_uring,
            ["uring", "uring-multishot", "uring-sqpoll", "glommio"]
        );
        assert_eq!(
            memlock_need(),
            (
                64 << 20,
                "uring, uring-multishot, uring-sqpoll, glommio".into()
            )
        );
    }
}
