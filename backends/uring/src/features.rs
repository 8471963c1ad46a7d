//! The io_uring feature set a backend is built from: the one-shot baseline (`uring`) plus
//! independent toggles, their names, the rules for combining them, and the ladder.
//!
//! # Naming a combination
//!
//! `uring` followed by `+feature` for every toggle, in any order: `uring+fixed+recv-multi`.
//! Parsing checks every name and every combination rule, and gives each distinct set one
//! canonical name (toggles in [`Feature::ALL`] order), so `uring+recv-multi+fixed` and
//! `uring+fixed+recv-multi` are one backend in results. The three historical names are
//! aliases of their sets and stay their canonical names: `uring-multishot` is
//! `uring+single+defer+accept-multi+recv-multi`, `uring-sqpoll` is
//! `uring+sqpoll+accept-multi+recv-multi`.
//!
//! # Why names are interned
//!
//! [`backend_api::Backend::name`] returns `&'static str`, and results, plots and the
//! registry compare names by value. A parsed combination's name is built at run time, so
//! [`Features::name`] leaks it once per distinct set into a process-wide table and hands out
//! that one copy ever after: at most one small string per set ever asked for (2^14 at the
//! very most), never one per call.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

/// One toggle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// `IORING_SETUP_COOP_TASKRUN` (5.19): completion task work runs only when the shard
    /// enters the kernel, instead of interrupting it with an IPI.
    Coop,
    /// `IORING_SETUP_SINGLE_ISSUER` (6.0): only the shard's thread submits.
    Single,
    /// `IORING_SETUP_DEFER_TASKRUN` (6.1): task work deferred until the shard waits for
    /// completions; the kernel requires `single` with it.
    Defer,
    /// `IORING_SETUP_SQPOLL` (unprivileged since 5.11): a kernel thread polls the SQ, pinned
    /// to the shard's core.
    Sqpoll,
    /// `IORING_REGISTER_RING_FDS` (5.18): `io_uring_enter` names the ring by a registered
    /// index, skipping the file lookup on every call.
    RingFd,
    /// Min-wait batching (`min_wait_usec` of `IORING_ENTER_EXT_ARG`, 6.12): a wait returns
    /// after [`crate::Tuning::min_wait_usec`] with what arrived, or once
    /// [`crate::Tuning::min_wait_batch`] completions are in.
    MinWait,
    /// Multishot `Accept` (5.19): one SQE accepts every connection.
    AcceptMulti,
    /// Fixed (direct) descriptors (5.19 for accept's auto-allocation): accepted sockets live
    /// in the ring's file table, every operation names them by index, and options are set
    /// with `IORING_OP_URING_CMD` setsockopt (6.7).
    Fixed,
    /// Multishot `Recv` (6.0) from a provided buffer ring (5.19): no buffer per connection.
    RecvMulti,
    /// Incremental buffer consumption (`IOU_PBUF_RING_INC`, 6.12): receives fill a provided
    /// buffer piece by piece instead of taking a whole buffer each.
    Inc,
    /// Receive bundles (`IORING_RECVSEND_BUNDLE`, 6.10): one completion carries several
    /// provided buffers.
    Bundle,
    /// Send bundles (`IORING_RECVSEND_BUNDLE` on `Send`, 6.10): output is queued into a
    /// small provided buffer ring per sending connection, and one send takes every buffer
    /// queued (see `sendring.rs`).
    SendBundle,
    /// `IORING_OP_SEND_ZC` (6.0) for sends of at least [`crate::Tuning::zc_threshold`]
    /// bytes; the buffer stays frozen until the kernel's notification.
    SendZc,
    /// NAPI busy polling (`IORING_REGISTER_NAPI`, 6.9), for sockets behind a NAPI device.
    Napi,
}

impl Feature {
    /// Every toggle, in canonical-name order.
    pub const ALL: [Feature; 14] = [
        Feature::Coop,
        Feature::Single,
        Feature::Defer,
        Feature::Sqpoll,
        Feature::RingFd,
        Feature::MinWait,
        Feature::AcceptMulti,
        Feature::Fixed,
        Feature::RecvMulti,
        Feature::Inc,
        Feature::Bundle,
        Feature::SendBundle,
        Feature::SendZc,
        Feature::Napi,
    ];

    /// The name used after `+`.
    pub const fn name(self) -> &'static str {
        match self {
            Feature::Coop => "coop",
            Feature::Single => "single",
            Feature::Defer => "defer",
            Feature::Sqpoll => "sqpoll",
            Feature::RingFd => "ringfd",
            Feature::MinWait => "minwait",
            Feature::AcceptMulti => "accept-multi",
            Feature::Fixed => "fixed",
            Feature::RecvMulti => "recv-multi",
            Feature::Inc => "inc",
            Feature::Bundle => "bundle",
            Feature::SendBundle => "send-bundle",
            Feature::SendZc => "zc",
            Feature::Napi => "napi",
        }
    }

    /// What it is, briefly (for `harness list` and errors).
    pub const fn describe(self) -> &'static str {
        match self {
            Feature::Coop => "COOP_TASKRUN",
            Feature::Single => "SINGLE_ISSUER",
            Feature::Defer => "DEFER_TASKRUN",
            Feature::Sqpoll => "SQPOLL thread on the shard's core",
            Feature::RingFd => "registered ring fd",
            Feature::MinWait => "min-wait completion batching",
            Feature::AcceptMulti => "multishot accept",
            Feature::Fixed => "fixed (direct) descriptors",
            Feature::RecvMulti => "multishot recv from a provided buffer ring",
            Feature::Inc => "incremental provided-buffer consumption",
            Feature::Bundle => "recv bundles",
            Feature::SendBundle => "send bundles from a per-connection send buffer ring",
            Feature::SendZc => "SEND_ZC above a size threshold",
            Feature::Napi => "NAPI busy poll",
        }
    }

    const fn bit(self) -> u32 {
        1 << self as u32
    }

    fn from_name(name: &str) -> Option<Feature> {
        Feature::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// A set of toggles: which io_uring features one backend uses.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Features(u32);

/// Why a name is not a valid uring backend.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadName(String);

impl Features {
    /// The one-shot baseline: no toggles.
    pub const NONE: Features = Features(0);

    /// This set plus `f`.
    pub const fn with(self, f: Feature) -> Features {
        Features(self.0 | f.bit())
    }

    /// True when `f` is on.
    pub const fn has(self, f: Feature) -> bool {
        self.0 & f.bit() != 0
    }

    /// The toggles that are on, in canonical order.
    pub fn iter(self) -> impl Iterator<Item = Feature> {
        Feature::ALL.into_iter().filter(move |f| self.has(*f))
    }

    /// A provided buffer ring is registered (multishot receive and what builds on it).
    pub const fn buffer_ring(self) -> bool {
        self.has(Feature::RecvMulti)
    }

    /// Checks the combination rules; `Err` says which rule and how to fix the name.
    pub fn validate(self) -> Result<Features, BadName> {
        let need = |f: Feature, on: Feature, why: &str| -> Result<(), BadName> {
            if self.has(f) && !self.has(on) {
                return Err(BadName(format!(
                    "'{}' needs '{}' ({why}): add +{}",
                    f.name(),
                    on.name(),
                    on.name()
                )));
            }
            Ok(())
        };
        let clash = |a: Feature, b: Feature, why: &str| -> Result<(), BadName> {
            if self.has(a) && self.has(b) {
                return Err(BadName(format!(
                    "'{}' and '{}' cannot be combined ({why}): drop one",
                    a.name(),
                    b.name()
                )));
            }
            Ok(())
        };
        need(
            Feature::Defer,
            Feature::Single,
            "the kernel refuses DEFER_TASKRUN without SINGLE_ISSUER",
        )?;
        need(
            Feature::Inc,
            Feature::RecvMulti,
            "incremental consumption applies to the provided buffer ring",
        )?;
        need(
            Feature::Bundle,
            Feature::RecvMulti,
            "bundles take buffers from the provided buffer ring",
        )?;
        clash(
            Feature::Sqpoll,
            Feature::Defer,
            "the kernel refuses DEFER_TASKRUN with SQPOLL",
        )?;
        clash(
            Feature::Sqpoll,
            Feature::MinWait,
            "with SQPOLL the shard does not wait in io_uring_enter for each batch",
        )?;
        clash(
            Feature::SendBundle,
            Feature::SendZc,
            "SEND_ZC cannot take its data from a provided buffer ring, and one connection's \
             sends must not overtake each other",
        )?;
        clash(
            Feature::Inc,
            Feature::Bundle,
            "this backend does not track partially consumed buffers inside a bundle",
        )?;
        Ok(self)
    }

    /// Parses `uring`, `uring-multishot`, `uring-sqpoll` or `uring+feature+...`. `None` when
    /// the name is not a uring name at all; `Err` lists what is valid.
    pub fn parse(name: &str) -> Option<Result<Features, BadName>> {
        if let Some(v) = crate::Variant::ALL.into_iter().find(|v| v.name() == name) {
            return Some(Ok(v.features()));
        }
        let rest = name.strip_prefix("uring+")?;
        let mut set = Features::NONE;
        for part in rest.split('+') {
            match Feature::from_name(part) {
                Some(f) if set.has(f) => {
                    return Some(Err(BadName(format!("'{part}' appears twice in '{name}'"))))
                }
                Some(f) => set = set.with(f),
                None => {
                    let valid: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
                    return Some(Err(BadName(format!(
                        "unknown io_uring feature '{part}' in '{name}'; valid features: {} \
                         (write uring+feature+feature, e.g. uring+fixed+recv-multi)",
                        valid.join(", ")
                    ))));
                }
            }
        }
        Some(set.validate())
    }

    /// The canonical name, interned (see the module docs).
    pub fn name(self) -> &'static str {
        self.interned().0
    }

    /// One line for `harness list`.
    pub fn describe(self) -> &'static str {
        self.interned().1
    }

    fn interned(self) -> (&'static str, &'static str) {
        if let Some(v) = crate::Variant::ALL
            .into_iter()
            .find(|v| v.features() == self)
        {
            return (v.name(), v.describe());
        }
        static NAMES: OnceLock<Mutex<HashMap<Features, (&'static str, &'static str)>>> =
            OnceLock::new();
        let mut names = NAMES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *names.entry(self).or_insert_with(|| {
            let name: String = std::iter::once("uring")
                .chain(self.iter().map(Feature::name))
                .collect::<Vec<_>>()
                .join("+");
            let parts: Vec<&str> = self.iter().map(Feature::describe).collect();
            let describe = format!("io_uring, one-shot baseline + {}", parts.join(", "));
            (
                Box::leak(name.into_boxed_str()),
                Box::leak(describe.into_boxed_str()),
            )
        })
    }

    /// The ladder: from `uring`, one feature at a time, up to everything that works together
    /// on loopback (SQPOLL is its own branch since it excludes DEFER_TASKRUN; NAPI needs a
    /// NAPI device; `inc` excludes `bundle`).
    pub fn ladder() -> Vec<Features> {
        let steps = [
            Feature::Single,
            Feature::Defer,
            Feature::RingFd,
            Feature::AcceptMulti,
            Feature::RecvMulti,
            Feature::Bundle,
            Feature::MinWait,
            Feature::SendZc,
            // Last: direct descriptors take connections out of the process's descriptor
            // table, which the conformance suite's EMFILE case cannot see (see
            // tests/conformance_ladder.rs).
            Feature::Fixed,
        ];
        let mut set = Features::NONE;
        let mut ladder = vec![set];
        for f in steps {
            set = set.with(f);
            ladder.push(set);
        }
        ladder
    }

    /// The send-bundle branch: the ladder step below `zc` plus `send-bundle` (the two
    /// exclude each other), so its marginal change is measured against that step.
    pub fn send_bundle_branch() -> Features {
        Features::ladder()
            .into_iter()
            .take_while(|f| !f.has(Feature::SendZc))
            .last()
            .unwrap_or(Features::NONE)
            .with(Feature::SendBundle)
    }

    /// The top of the ladder: every feature that works together here.
    pub fn full() -> Features {
        Features::ladder().last().copied().unwrap_or(Features::NONE)
    }
}

impl From<crate::Variant> for Features {
    fn from(v: crate::Variant) -> Features {
        v.features()
    }
}

impl fmt::Debug for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Features {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Variant;

    #[test]
    fn names_parse_to_one_canonical_set() {
        let a = Features::parse("uring+recv-multi+fixed").unwrap().unwrap();
        let b = Features::parse("uring+fixed+recv-multi").unwrap().unwrap();
        assert_eq!(a, b);
        assert_eq!(a.name(), "uring+fixed+recv-multi");
        assert!(std::ptr::eq(a.name(), b.name()), "interned once");
        assert_eq!(Features::parse("epoll-et"), None);
        for v in Variant::ALL {
            assert_eq!(Features::parse(v.name()), Some(Ok(v.features())));
            assert_eq!(
                v.features().name(),
                v.name(),
                "historical names stay canonical"
            );
        }
        let m = Features::parse("uring+single+defer+accept-multi+recv-multi")
            .unwrap()
            .unwrap();
        assert_eq!(m.name(), "uring-multishot");
    }

    #[test]
    fn bad_names_list_the_valid_features_or_the_rule() {
        let e = Features::parse("uring+fixd")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("fixd") && e.contains("recv-multi") && e.contains("napi"),
            "{e}"
        );
        let e = Features::parse("uring+defer")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("+single"), "{e}");
        let e = Features::parse("uring+single+defer+sqpoll")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot be combined"), "{e}");
        assert!(Features::parse("uring+coop+coop").unwrap().is_err());
        let e = Features::parse("uring+send-bundle+zc")
            .unwrap()
            .unwrap_err()
            .to_string();
        assert!(e.contains("'send-bundle' and 'zc'"), "{e}");
        let sb = Features::parse("uring+send-bundle").unwrap().unwrap();
        assert!(sb.has(Feature::SendBundle) && sb.name() == "uring+send-bundle");
    }

    #[test]
    fn the_ladder_adds_one_valid_feature_per_step() {
        let ladder = Features::ladder();
        assert_eq!(ladder[0], Features::NONE);
        for pair in ladder.windows(2) {
            assert_eq!((pair[1].0 & !pair[0].0).count_ones(), 1);
            assert!(pair[1].validate().is_ok(), "{}", pair[1]);
        }
        assert_eq!(Features::full(), *ladder.last().unwrap());
        let branch = Features::send_bundle_branch();
        assert!(branch.validate().is_ok(), "{branch}");
        assert!(ladder.contains(&Features(branch.0 & !Feature::SendBundle.bit())));
    }

    #[test]
    fn the_ablation_suite_names_every_ladder_step() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../suites/uring-ablation.toml"
        );
        let suite = std::fs::read_to_string(path).expect("suites/uring-ablation.toml");
        let names: Vec<&str> = suite
            .split('"')
            .skip(1)
            .step_by(2)
            .filter(|s| s.starts_with("uring") && *s != "uring-ablation")
            .collect();
        for step in Features::ladder() {
            assert!(
                names.contains(&step.name()),
                "the suite lacks {}",
                step.name()
            );
        }
        assert!(
            names.contains(&Features::send_bundle_branch().name()),
            "the suite lacks the send-bundle branch"
        );
        for name in names {
            let parsed = Features::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(parsed.unwrap().name(), name, "canonical names in the suite");
        }
    }
}
