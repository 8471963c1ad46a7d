//! The shared conformance suite, run against the glommio backend.

backend_conformance::suite!(backend_glommio::Glommio);
