//! The shared conformance suite, run against epoll-oneshot.
backend_conformance::suite!(backend_epoll::EpollOneshot);
