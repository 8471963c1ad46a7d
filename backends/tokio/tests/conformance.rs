//! The shared conformance suite, run against tokio (multi-thread, work stealing).
backend_conformance::suite!(backend_tokio::Tokio);
