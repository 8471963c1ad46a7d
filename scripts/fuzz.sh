#!/usr/bin/env bash
# Bounded fuzz run of the targets in fuzz/ (cargo fuzz, libFuzzer):
#   http_session       backend-api's HTTP session: canned responses only, nothing after a
#                      close, every split of the input alike, at most MAX_HEAD bytes buffered
#   load_http_replies  the load generator's reply parser: no panic, bounded buffer, the same
#                      replies and verdict however the bytes are split
# Seeds: fuzz/corpus/<target> (committed). What a run adds: fuzz/work/<target>. Crashes:
# fuzz/artifacts/<target>/, and the script exits non-zero. Prints executions and corpus size.
# Usage: scripts/fuzz.sh [--seconds S] [TARGET...]     (default: 60 s for each target)
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a C++ compiler (libFuzzer is built from
# source). On a stable toolchain it builds with RUSTC_BOOTSTRAP=1 and --sanitizer none:
# the targets are safe Rust, so ASan adds little; overflow checks and debug assertions stay on.
# The same invariants run on stable in CI: cargo test -p backend-api --test http_session_props.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=60
targets=()
while (($#)); do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "unknown argument $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
((${#targets[@]})) || targets=(http_session load_http_replies)
command -v cargo-fuzz >/dev/null || { echo "error: cargo-fuzz not found; run: cargo install cargo-fuzz" >&2; exit 1; }
rustc -V | grep -q nightly || export RUSTC_BOOTSTRAP=1
flags=(--sanitizer none)
timeout 3600 cargo fuzz build "${flags[@]}"
status=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t"
  log="fuzz/work/$t.log"
  # max_len reaches past the session's 8 KiB head limit, where its verdicts change.
  if ! timeout $((seconds + 120)) cargo fuzz run "${flags[@]}" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -max_len=16384 -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    echo "$t: FAILED (see $log and fuzz/artifacts/$t/)" >&2
    tail -30 "$log" >&2
    status=1
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  corpus=$(grep -Eo 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1)
  echo "$t: ${execs:-?} executions in ${seconds} s, ${corpus:-corp: ?} (units/bytes), seeds $(ls "fuzz/corpus/$t" | wc -l)"
done
exit $status
