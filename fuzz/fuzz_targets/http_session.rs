//! The HTTP session against arbitrary bytes, split arbitrarily: see the invariants in
//! backends/api/tests/session_invariants (the same checks the stable property test makes).
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../backends/api/tests/session_invariants/mod.rs"]
mod session_invariants;

fuzz_target!(|data: &[u8]| {
    // The first 8 bytes seed the extra split points; the rest is what the client sends.
    let (seed, input) = match data.split_first_chunk::<8>() {
        Some((seed, rest)) => (u64::from_le_bytes(*seed), rest),
        None => (0, data),
    };
    session_invariants::check(input, seed, 8);
});
