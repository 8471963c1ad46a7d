//! Helpers shared by this crate's tests: the common ones live in backend-conformance.
#![allow(unused_imports)]

pub use backend_conformance::util::{
    allowed_cpus, cores_round_robin as cores, echo, echo_roundtrip, read_to_close, served,
    thread_names,
};
