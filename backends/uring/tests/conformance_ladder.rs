//! The shared conformance suite, run against every step of the uring ladder beyond `uring`
//! (which `conformance_uring.rs` covers) and against `uring+coop`, the one toggle not on it.
//! (`uring+napi` cannot run here: loopback has no NAPI id, so its probe says unsupported.)

macro_rules! ladder {
    ($($step:ident => $index:expr;)*) => {
        $(
            mod $step {
                backend_conformance::suite!(backend_uring::Tuned::new(
                    backend_uring::Features::ladder()[$index]
                ));
            }
        )*

        /// A step added to the ladder without a line above fails here.
        #[test]
        fn every_ladder_step_has_a_suite() {
            let covered = [$($index,)* 9];
            assert_eq!(
                covered.len() + 1,
                backend_uring::Features::ladder().len(),
                "add the new ladder step to tests/conformance_ladder.rs"
            );
        }
    };
}

ladder! {
    step1 => 1;
    step2 => 2;
    step3 => 3;
    step4 => 4;
    step5 => 5;
    step6 => 6;
    step7 => 7;
    step8 => 8;
}

/// The top step adds fixed (direct) descriptors: accepted sockets live in the ring's file
/// table, not the process's, so the EMFILE case (which watches the process's descriptors
/// fill up to RLIMIT_NOFILE) cannot observe its limit; at its table limit it pauses like
/// EMFILE (`ENFILE` from auto-allocation). Every other case runs.
mod step9 {
    fn backend() -> std::sync::Arc<dyn backend_api::Backend> {
        std::sync::Arc::new(backend_uring::Tuned::new(
            backend_uring::Features::ladder()[9],
        ))
    }

    fn child() -> backend_conformance::child::ChildSpec {
        backend_conformance::child::ChildSpec::new(module_path!())
    }

    backend_conformance::__cases!(
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
    );

    /// The child server of the process-level cases.
    #[test]
    fn child_server_entry() {
        backend_conformance::child::child_main(backend());
    }
}

mod coop {
    backend_conformance::suite!(backend_uring::Tuned::new(
        backend_uring::Features::NONE.with(backend_uring::Feature::Coop)
    ));
}
