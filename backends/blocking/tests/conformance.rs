//! The shared conformance suite, run against blocking (thread per connection).
backend_conformance::suite!(backend_blocking::Blocking);
