//! The shared conformance suite, run against poll.
backend_conformance::suite!(backend_poll::Poll);
