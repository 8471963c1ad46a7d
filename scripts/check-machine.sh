#!/usr/bin/env bash
# Says what a fresh Debian machine still needs to build, test and run ringside, with the
# command that installs each missing piece. Changes nothing. Exit status: 0 when the build
# and the tests can run, 1 otherwise (optional tools are reported, never fatal).
# Usage: scripts/check-machine.sh
set -uo pipefail

min_rust="1.85"
missing=0
ok() { printf '  ok       %s\n' "$1"; }
need() { printf '  MISSING  %s\n           fix: %s\n' "$1" "$2"; missing=1; }
optional() { printf '  absent   %s (optional: %s)\n           fix: %s\n' "$1" "$2" "$3"; }

# Versions compare as dotted numbers: 1.85.0 >= 1.85.
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

echo "Build and test:"
if command -v cc >/dev/null && command -v make >/dev/null; then
  ok "C compiler and make ($(cc --version | head -n1))"
else
  need "C compiler and make (build-essential)" "sudo apt-get install -y build-essential"
fi
if command -v git >/dev/null; then
  ok "git ($(git --version))"
else
  need "git" "sudo apt-get install -y git"
fi
if command -v rustc >/dev/null && command -v cargo >/dev/null; then
  v=$(rustc --version | awk '{print $2}')
  if version_ge "${v%%-*}" "$min_rust"; then
    ok "Rust $v (>= $min_rust)"
  else
    need "Rust >= $min_rust (found $v)" "rustup update stable"
  fi
  cargo fmt --version >/dev/null 2>&1 && ok "rustfmt" ||
    need "rustfmt (CI checks formatting)" "rustup component add rustfmt"
  cargo clippy --version >/dev/null 2>&1 && ok "clippy" ||
    need "clippy (CI runs it)" "rustup component add clippy"
else
  need "Rust >= $min_rust via rustup" \
    "sudo apt-get install -y curl && curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh"
fi
if command -v chromium >/dev/null || command -v chromium-browser >/dev/null; then
  ok "chromium (the HTML report's test renders in it)"
else
  need "chromium (the HTML report's test; skipped without it, required under CI)" \
    "scripts/install-deps.sh --ci"
fi

echo "Measuring (harness doctor checks the host's settings in detail):"
for tool in perf ab wrk nginx; do
  case $tool in
    perf) pkg=linux-perf why="syscall counts cross-checked with perf" ;;
    ab) pkg=apache2-utils why="scripts/validate-external.sh" ;;
    wrk) pkg=wrk why="scripts/validate-external.sh" ;;
    nginx) pkg=nginx-light why="an external server to compare against" ;;
  esac
  if command -v "$tool" >/dev/null; then ok "$tool"; else optional "$tool" "$why" "sudo apt-get install -y $pkg"; fi
done
cores=$(nproc 2>/dev/null || echo 1)
if ((cores >= 2)); then
  ok "$cores online cores (server and load generator get their own)"
else
  optional "a second core" "server and client on one core skew every number" "run on a machine with 2+ cores"
fi

if ((missing)); then
  echo "Something the build or the tests need is missing: see the fixes above."
  exit 1
fi
echo "Ready: cargo build --release -p harness, then target/release/harness doctor before the first compare."
