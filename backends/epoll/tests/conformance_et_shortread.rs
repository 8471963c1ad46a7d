//! The shared conformance suite, run against epoll-et-shortread.
backend_conformance::suite!(backend_epoll::EpollEtShortRead);
