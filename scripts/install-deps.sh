#!/usr/bin/env bash
# Installs what ringside uses beyond the Rust toolchain, from Debian's packages:
#   apache2-utils (ab) and wrk   external load generators used to validate `harness load`
#   nginx-light                  an external server to compare backends against
#   linux-perf                   syscall counts, and `harness profile` (its test runs in CI)
#   chromium                     headless browser the HTML report's test renders it in
#   openssh-server               sshd, which the test of `--topology ssh` starts on 127.0.0.1
# Usage: scripts/install-deps.sh [--ci]   (--ci: only what the tests need)
set -euo pipefail
pkgs=(apache2-utils wrk nginx-light linux-perf chromium openssh-server)
if [[ "${1:-}" == "--ci" ]]; then
  pkgs=(linux-perf chromium openssh-server)
fi
command -v rustfmt >/dev/null || rustup component add rustfmt
cargo clippy --version >/dev/null 2>&1 || rustup component add clippy
if ((${#pkgs[@]})); then
  missing=()
  for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if ((${#missing[@]})); then
    sudo_cmd=""
    [[ $(id -u) -eq 0 ]] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
  fi
fi
