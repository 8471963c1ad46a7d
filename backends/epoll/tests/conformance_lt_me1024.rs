//! The shared conformance suite, run against epoll-lt-me1024.
backend_conformance::suite!(backend_epoll::EpollLtMaxEvents::<1024>);
