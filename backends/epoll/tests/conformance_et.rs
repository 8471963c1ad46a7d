//! The shared conformance suite, run against epoll-et.
backend_conformance::suite!(backend_epoll::EpollEt);
