//! The shared conformance suite, run against epoll-inout.
backend_conformance::suite!(backend_epoll::EpollInOut);
