//! The shared conformance suite, run against epoll-lt.
backend_conformance::suite!(backend_epoll::EpollLt);
