#!/usr/bin/env bash
# Installs what ringside uses beyond the Rust toolchain, from Debian's packages:
#   apache2-utils (ab) and wrk   external load generators used to validate `harness load`
#   nginx-light                  an external server to compare backends against
#   linux-perf                   syscall counts, and `harness profile` (its test runs in CI)
#   chromium                     headless browser the HTML report's test renders it in
#   gcc (cc)                     builds the C server that `compare --external`'s test runs
#   openssh-server               sshd, which the test of `--topology ssh` starts on 127.0.0.1
# and, as root, mounts tracefs where it is missing (perf's raw_syscalls tracepoint, which
# counts syscalls per request, lives there; runtime only, `umount /sys/kernel/tracing` undoes
# it; scripts/tune-host.sh makes the same change among its others).
# Usage: scripts/install-deps.sh [--ci]   (--ci: only what the tests need)
set -euo pipefail
pkgs=(apache2-utils wrk nginx-light linux-perf chromium openssh-server)
if [[ "${1:-}" == "--ci" ]]; then
  pkgs=(linux-perf chromium gcc openssh-server)
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

if [[ $(id -u) -eq 0 && ! -e /sys/kernel/tracing/events/raw_syscalls ]] && ! mountpoint -q /sys/kernel/tracing 2>/dev/null; then
  mount -t tracefs nodev /sys/kernel/tracing ||
    echo "warning: could not mount tracefs on /sys/kernel/tracing: syscalls per request will read as absent" >&2
fi
