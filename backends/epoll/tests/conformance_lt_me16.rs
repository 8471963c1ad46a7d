//! The shared conformance suite, run against epoll-lt-me16.
backend_conformance::suite!(backend_epoll::EpollLtMaxEvents::<16>);
