//! The conformance suite every ringside backend must pass.
//!
//! A backend crate runs the whole suite with one line in `tests/conformance.rs`:
//!
//! ```text
//! backend_conformance::suite!(backend_epoll::EpollEt);
//! ```
//!
//! The macro generates one `#[test]` per case (module `conformance`) from the one list of
//! cases, [`CASES`], which a test checks against the public case functions of
//! [`cases`], so no case can be forgotten. Each case drives a real server started through the same runner the harness
//! uses. Cases that measure the server process itself (memory, descriptors, CPU) run the
//! server in a child process: the test binary re-executes itself into the hidden
//! `child_server_entry` test, which serves until its standard input closes.
//!
//! A backend whose `probe` fails makes every case print why (a `SKIPPED:` line written
//! past the test harness's output capture, so the log shows it) and return; a backend
//! named in `RINGSIDE_REQUIRE_BACKENDS` (comma separated, or `all`) fails instead.
//!
//! Every blocking call in the suite has a timeout (client sockets, connects, a child
//! server's start and stop, an in-process server's stop), so a broken backend fails a
//! case instead of hanging it.
#![deny(missing_docs, rust_2018_idioms)]

pub mod cases;
pub mod child;
pub mod util;

#[doc(hidden)]
pub use backend_api as __api;

/// Generates the conformance suite for a backend value (an expression of a type that
/// implements `backend_api::Backend + 'static`).
///
/// A backend that cannot pass a case by design (not by a bug) names it with the reason:
///
/// ```text
/// backend_conformance::suite!(backend_select::Select, except {
///     thousand_concurrent_connections: "select(2) cannot watch descriptors >= FD_SETSIZE",
/// });
/// ```
///
/// The excluded case's test still exists, prints `EXCLUDED: <case>: <reason>` past the
/// output capture and passes; a test checks that every excluded name is a real case.
#[macro_export]
macro_rules! suite {
    ($backend:expr) => {
        $crate::suite!($backend, except {});
    };
    ($backend:expr, except { $($excluded:ident : $reason:expr),* $(,)? }) => {
        #[allow(non_snake_case)]
        mod conformance {
            #[allow(unused_imports)]
            use super::*;

            fn backend() -> ::std::sync::Arc<dyn $crate::__api::Backend> {
                ::std::sync::Arc::new($backend)
            }

            fn child() -> $crate::child::ChildSpec {
                $crate::child::ChildSpec::new(module_path!())
            }

            /// Cases this backend cannot pass by design, with the reason.
            const EXCLUDED: &[(&str, &str)] = &[$((stringify!($excluded), $reason)),*];

            $crate::__for_each_case!(__cases);

            #[test]
            fn excluded_cases_exist() {
                $crate::check_excluded(EXCLUDED);
            }

            /// Not a case: the entry point of the child server that the process-level
            /// cases start. Does nothing unless the parent test set it up.
            #[test]
            fn child_server_entry() {
                $crate::child::child_main(backend());
            }
        }
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __cases {
    ($($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                if $crate::is_excluded(EXCLUDED, stringify!($case)) {
                    return;
                }
                $crate::cases::$case(backend(), &child());
            }
        )*
    };
}

/// True (after saying so where the CI log shows it) when `case` is in `excluded`.
#[doc(hidden)]
pub fn is_excluded(excluded: &[(&str, &str)], case: &str) -> bool {
    match excluded.iter().find(|(name, _)| *name == case) {
        Some((_, reason)) => {
            // Straight to stderr, past libtest's capture, like a skip.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("EXCLUDED: {case}: {reason}\n").as_bytes(),
            );
            true
        }
        None => false,
    }
}

/// Panics when an excluded name is not a case (a typo would silently run nothing).
#[doc(hidden)]
pub fn check_excluded(excluded: &[(&str, &str)]) {
    for (name, reason) in excluded {
        assert!(
            CASES.contains(name),
            "excluded case {name:?} is not a conformance case (known: {CASES:?})"
        );
        assert!(
            !reason.trim().is_empty(),
            "excluded case {name:?} needs a reason"
        );
    }
}

/// The one list of cases: calls `$crate::$callback!` with every case's name, in order.
/// [`suite!`] generates its tests from it and [`CASES`] names them.
#[doc(hidden)]
#[macro_export]
macro_rules! __for_each_case {
    ($callback:ident) => {
        $crate::$callback!(
            echo_integrity_1b_to_4mib,
            thousand_concurrent_connections,
            http_64_pipelined_in_one_write,
            http_one_byte_at_a_time,
            http_connection_close_and_http10,
            http_malformed_400_and_oversized_431,
            client_reset_mid_response_harms_no_one,
            slow_reader_backpressure_bounds_memory,
            half_close_gets_full_echo_then_eof,
            two_shards_both_accept,
            stop_is_prompt_and_leaks_no_fd,
            emfile_does_not_spin_and_recovers,
            http_slow_pipelining_client_gets_every_response_then_eof,
            lingering_peer_is_closed_by_the_deadline,
            http_pipelined_responses_in_order_under_backpressure,
            reset_connections_free_their_slot_and_descriptor,
            idle_memory_per_connection_is_bounded,
            stop_with_sends_blocked_is_prompt_and_leaks_no_fd,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __case_names {
    ($($case:ident),* $(,)?) => {
        /// Every case [`suite!`] runs, by the name of its function in [`cases`] (and of its
        /// test).
        pub const CASES: &[&str] = &[$(stringify!($case)),*];
    };
}

__for_each_case!(__case_names);
