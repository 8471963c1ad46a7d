//! The shared conformance suite, run against epoll-lt-me64.
backend_conformance::suite!(backend_epoll::EpollLtMaxEvents::<64>);
