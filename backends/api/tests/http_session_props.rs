//! The HTTP session's invariants (see `session_invariants`) over generated inputs: the
//! same checks the fuzz target makes, bounded and deterministic so CI runs them.

mod session_invariants;

use session_invariants::{check, Rng};

/// Pieces requests are made of: valid, closing, malformed, and ones near the limits.
fn piece(rng: &mut Rng) -> Vec<u8> {
    match rng.below(14) {
        0..=3 => b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        4 => b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n".to_vec(),
        5 => b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".to_vec(),
        6 => b"GET / HTTP/1.0\r\n\r\n".to_vec(),
        7 => b"POST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        8 => b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n".to_vec(),
        9 => {
            // One header long enough to cross the head limit, or to stop just short of it.
            let len = MAX_HEAD - 40 + rng.below(80);
            let mut r = b"GET / HTTP/1.1\r\nX: ".to_vec();
            r.extend(std::iter::repeat_n(b'a', len));
            // Sometimes a byte httparse rejects, past the limit or before it.
            if rng.below(2) == 0 {
                let at = r.len() - rng.below(100) - 1;
                r[at] = 0x7f;
            }
            r.extend_from_slice(b"\r\n\r\n");
            r
        }
        10 => {
            let mut r = b"GET / HTTP/1.1\r\n".to_vec();
            for i in 0..60 + rng.below(10) {
                r.extend_from_slice(format!("H{i}: v\r\n").as_bytes());
            }
            r.extend_from_slice(b"\r\n");
            r
        }
        11 => (0..rng.below(12)).map(|_| rng.next() as u8).collect(),
        12 => b"\r\n".to_vec(),
        _ => b"GET / HTTP/1.1\nHost: x\n\n".to_vec(),
    }
}

use backend_api::session::MAX_HEAD;

#[test]
fn every_split_of_generated_inputs_gives_the_same_canned_output() {
    let cases = if std::env::var_os("CI").is_some() {
        150
    } else {
        300
    };
    let mut rng = Rng(0x5eed_1234_abcd_0001);
    for case in 0..cases {
        let mut input = Vec::new();
        for _ in 0..1 + rng.below(5) {
            input.extend(piece(&mut rng));
        }
        // Cut some inputs short: an incomplete head stays buffered.
        if rng.below(4) == 0 && !input.is_empty() {
            input.truncate(rng.below(input.len()));
        }
        let seed = rng.next();
        let r = std::panic::catch_unwind(|| check(&input, seed, 24));
        assert!(
            r.is_ok(),
            "case {case} (seed {seed:#x}) fails for input {:?}",
            String::from_utf8_lossy(&input[..input.len().min(300)])
        );
    }
}

#[test]
fn the_checks_catch_a_broken_session() {
    // The checker itself must fail on what it guards against.
    use backend_api::session::http::{OK_CLOSE, OK_KEEP_ALIVE};
    use backend_api::Flow;
    let after_close = [OK_CLOSE, OK_KEEP_ALIVE].concat();
    for (out, flow) in [
        (after_close.as_slice(), Flow::Close),
        (OK_KEEP_ALIVE, Flow::Close),
        (OK_CLOSE, Flow::Continue),
        (&b"HTTP/1.1 200 OK\r\n\r\n"[..], Flow::Continue),
    ] {
        let r = std::panic::catch_unwind(|| session_invariants::check_output(out, flow));
        assert!(
            r.is_err(),
            "accepted {:?} {flow:?}",
            String::from_utf8_lossy(out)
        );
    }
}
