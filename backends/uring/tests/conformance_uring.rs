//! The shared conformance suite, run against uring.
backend_conformance::suite!(backend_uring::Uring);
