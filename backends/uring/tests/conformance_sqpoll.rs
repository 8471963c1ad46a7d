//! The shared conformance suite, run against uring-sqpoll.
backend_conformance::suite!(backend_uring::UringSqpoll);
