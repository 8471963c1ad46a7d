//! What must hold for the HTTP session whatever bytes arrive, however they are split into
//! reads: shared by the property test beside it and by the fuzz target in `fuzz/`.
//!
//! - no panic;
//! - the output is a sequence of the canned responses, a closing one only last, and only
//!   when the session said [`Flow::Close`];
//! - nothing follows a close: later input gets no bytes and `Close` again;
//! - every split of the same input gives the same output and the same final flow;
//! - the session holds at most [`MAX_HEAD`] bytes of incomplete input between reads.

use backend_api::session::http::{
    BAD_REQUEST, NOT_ALLOWED, OK_CLOSE, OK_KEEP_ALIVE, OK_KEEP_ALIVE_10, TOO_LARGE,
};
use backend_api::session::{HttpSession, MAX_HEAD};
use backend_api::{Flow, Session};

/// Every response the session may write, and whether it ends the connection.
const CANNED: [(&[u8], bool); 6] = [
    (OK_KEEP_ALIVE, false),
    (OK_KEEP_ALIVE_10, false),
    (OK_CLOSE, true),
    (BAD_REQUEST, true),
    (TOO_LARGE, true),
    (NOT_ALLOWED, true),
];

/// Feeds `input` to a fresh session in pieces cut at `cuts` (sorted offsets inside the
/// input), checking the per-read invariants; returns the output and the last flow.
pub fn run(input: &[u8], cuts: &[usize]) -> (Vec<u8>, Flow) {
    let mut session = HttpSession::new();
    let mut out = Vec::new();
    let mut flow = Flow::Continue;
    let mut from = 0;
    for &to in cuts.iter().chain(std::iter::once(&input.len())) {
        let before = out.len();
        let now = session.on_input(&input[from..to], &mut out);
        if flow == Flow::Close {
            assert_eq!(now, Flow::Close, "a closed session went on");
            assert_eq!(out.len(), before, "bytes written after a close");
        }
        flow = now;
        assert!(
            session.buffered() <= MAX_HEAD,
            "session holds {} bytes of input (limit {MAX_HEAD})",
            session.buffered()
        );
        from = to;
    }
    check_output(&out, flow);
    (out, flow)
}

/// Checks that `out` is canned responses only, a closing one exactly when `flow` is Close
/// and then last.
pub fn check_output(mut out: &[u8], flow: Flow) {
    let mut closed = false;
    while !out.is_empty() {
        assert!(!closed, "bytes after a closing response: {:?}", lossy(out));
        let (r, closes) = CANNED
            .iter()
            .find(|(r, _)| out.starts_with(r))
            .unwrap_or_else(|| panic!("not a canned response: {:?}", lossy(out)));
        closed = *closes;
        out = &out[r.len()..];
    }
    assert_eq!(
        closed,
        flow == Flow::Close,
        "flow {flow:?} but closing response written: {closed}"
    );
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned()
}

/// A small deterministic generator (xorshift64*), so runs are reproducible.
pub struct Rng(pub u64);

impl Rng {
    /// The next pseudo-random number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Checks every invariant for `input`: the whole input at once is the reference; every
/// 2-way split (all of them for short inputs, `samples` seeded ones otherwise), byte at a
/// time (short inputs), and `samples` seeded many-way splits must give the same.
pub fn check(input: &[u8], seed: u64, samples: usize) {
    let reference = run(input, &[]);
    let n = input.len();
    let mut rng = Rng(seed | 1);
    let same = |cuts: &[usize]| {
        let got = run(input, cuts);
        assert!(
            got == reference,
            "split at {cuts:?} gives {:?} {:?}, whole input gives {:?} {:?}",
            lossy(&got.0),
            got.1,
            lossy(&reference.0),
            reference.1
        );
    };
    if n <= 512 {
        for c in 1..n {
            same(&[c]);
        }
        same(&(1..n).collect::<Vec<_>>());
    } else {
        // Around the head limit, where the verdicts change, and elsewhere at random.
        for c in (MAX_HEAD - 2..MAX_HEAD + 3).filter(|&c| c > 0 && c < n) {
            same(&[c]);
        }
        for _ in 0..samples {
            same(&[1 + rng.below(n - 1)]);
        }
    }
    if n > 1 {
        for _ in 0..samples {
            let mut cuts: Vec<usize> = (0..1 + rng.below(8))
                .map(|_| 1 + rng.below(n - 1))
                .collect();
            cuts.sort_unstable();
            cuts.dedup();
            same(&cuts);
        }
    }
}
