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

/// Finds a backend by name, or says which names exist.
pub fn find(name: &str) -> anyhow::Result<Arc<dyn Backend>> {
    let all = all();
    if let Some(b) = all.iter().find(|b| b.name() == name) {
        return Ok(Arc::clone(b));
    }
    let names: Vec<&str> = all.iter().map(|b| b.name()).collect();
    bail!(
        "unknown backend '{name}'; known backends: {}",
        names.join(", ")
    )
}

/// `harness list`: one line per backend: name, availability, description.
pub fn print_list(out: &mut impl Write) -> anyhow::Result<()> {
    let all = all();
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
