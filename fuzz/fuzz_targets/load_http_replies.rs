//! The load generator's HTTP reply parser against arbitrary bytes: no panic, a bounded
//! buffer (checked inside `replies_for_fuzzing`), and the same replies and verdict however
//! the bytes are split into reads.
#![no_main]

use harness::load::replies_for_fuzzing;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Byte 0: requests outstanding (1-32); bytes 1-8: seed for the splits; then the replies.
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (seed, replies) = match rest.split_first_chunk::<8>() {
        Some((seed, r)) => (u64::from_le_bytes(*seed), r),
        None => (0, rest),
    };
    let outstanding = 1 + usize::from(n % 32);
    let whole = replies_for_fuzzing(replies, &[], outstanding);
    let len = replies.len();
    let mut rng = seed | 1;
    let mut next = move || {
        rng ^= rng >> 12;
        rng ^= rng << 25;
        rng ^= rng >> 27;
        rng.wrapping_mul(0x2545_f491_4f6c_dd1d) as usize
    };
    let mut splits: Vec<Vec<usize>> = Vec::new();
    if len <= 512 {
        splits.extend((1..len).map(|c| vec![c]));
        splits.push((1..len).collect());
    }
    if len > 1 {
        for _ in 0..8 {
            splits.push(
                (0..1 + next() % 8)
                    .map(|_| 1 + next() % (len - 1))
                    .collect(),
            );
        }
    }
    for cuts in splits {
        let got = replies_for_fuzzing(replies, &cuts, outstanding);
        assert_eq!(got, whole, "split at {cuts:?}");
    }
});
