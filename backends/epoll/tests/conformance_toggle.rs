//! The shared conformance suite, run against epoll-toggle.
backend_conformance::suite!(backend_epoll::EpollToggle);
