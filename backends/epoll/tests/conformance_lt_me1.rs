//! The shared conformance suite, run against epoll-lt-me1.
backend_conformance::suite!(backend_epoll::EpollLtMaxEvents::<1>);
