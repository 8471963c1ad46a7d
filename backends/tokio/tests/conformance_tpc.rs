//! The shared conformance suite, run against tokio-tpc (one current-thread runtime per core).
backend_conformance::suite!(backend_tokio::TokioTpc);
