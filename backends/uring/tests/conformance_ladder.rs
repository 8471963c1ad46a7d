//! The shared conformance suite, run against every step of the uring ladder beyond `uring`
//! (which `conformance_uring.rs` covers), against `uring+coop`, the one toggle not on it, and
//! against the send-bundle branch.
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
    backend_conformance::suite!(
        backend_uring::Tuned::new(backend_uring::Features::ladder()[9]),
        except {
            emfile_does_not_spin_and_recovers:
                "fixed descriptors live in the ring's file table, not the process's: the \
                 case cannot fill RLIMIT_NOFILE through this backend's sockets",
        }
    );
}

mod coop {
    backend_conformance::suite!(backend_uring::Tuned::new(
        backend_uring::Features::NONE.with(backend_uring::Feature::Coop)
    ));
}

/// Send bundles clash with `zc` (SEND_ZC takes no buffers from a ring), so they are a branch
/// off the step below `zc`, and also run on the one-shot baseline (one-shot receives).
mod send_bundle {
    backend_conformance::suite!(backend_uring::Tuned::new(
        backend_uring::Features::send_bundle_branch()
    ));
}

mod send_bundle_one_shot {
    backend_conformance::suite!(backend_uring::Tuned::new(
        backend_uring::Features::NONE.with(backend_uring::Feature::SendBundle)
    ));
}

/// Bundle sends on fixed descriptors (the branch with `fixed` added; EMFILE as in step 9).
mod send_bundle_fixed {
    backend_conformance::suite!(
        backend_uring::Tuned::new(
            backend_uring::Features::send_bundle_branch().with(backend_uring::Feature::Fixed)
        ),
        except {
            emfile_does_not_spin_and_recovers:
                "fixed descriptors live in the ring's file table, not the process's: the \
                 case cannot fill RLIMIT_NOFILE through this backend's sockets",
        }
    );
}
