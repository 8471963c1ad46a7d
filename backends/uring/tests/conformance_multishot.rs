//! The shared conformance suite, run against uring-multishot.
backend_conformance::suite!(backend_uring::UringMultishot);
