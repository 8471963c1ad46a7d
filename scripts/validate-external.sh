#!/usr/bin/env bash
# Validates ringside backends against external tools, the way a new user would:
# each server pinned to one core, wrk (or ab) pinned to another, and for each server
# req/s, server CPU µs per request (user and system, /proc/PID/stat deltas over the run)
# and syscalls per request (perf stat -e raw_syscalls:sys_enter -p PID).
# nginx-light (1 worker, pinned, `return 200`) runs in the same loop as the reference.
#
# Usage: scripts/validate-external.sh [--server-core N] [--client-core N] [--duration S]
#                                     [--tool wrk|ab|ab-k] [BACKEND ...]
# Default backends: every backend `harness list` reports available, plus nginx.
# Needs: wrk, ab (apache2-utils), nginx-light, perf (scripts/install-deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

server_core=0
client_core=1
duration=10
tool=wrk
backends=()
while (($#)); do
  case "$1" in
    --server-core) server_core=$2; shift 2 ;;
    --client-core) client_core=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --tool) tool=$2; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) backends+=("$1"); shift ;;
  esac
done
for t in wrk ab nginx perf taskset; do
  command -v "$t" >/dev/null || { echo "error: $t not found; run scripts/install-deps.sh" >&2; exit 1; }
done
cargo build --release -q -p harness
harness=target/release/harness
if ((${#backends[@]} == 0)); then
  mapfile -t backends < <($harness list | awk '$2 == "available" {print $1}')
  backends+=(nginx)
fi
hz=$(getconf CLK_TCK)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

source "$(dirname "$0")/lib/nginx.sh"

printf '%-16s %10s %9s %9s %9s %10s %8s\n' server req/s "usr µs/r" "sys µs/r" "cpu µs/r" "sysc/req" "busy%"
port=18080
for b in "${backends[@]}"; do
  port=$((port + 1))
  if [[ $b == nginx ]]; then
    start_nginx "$work" "$server_core" "$port"
  else
    coproc SERVER { exec $harness serve --backend "$b" --service http --cores "$server_core" --listen "127.0.0.1:$port"; }
    server_pid=$SERVER_PID
    read -r ready <&"${SERVER[0]}"
    [[ $ready == READY* ]] || { echo "error: $b did not become ready: $ready" >&2; exit 1; }
  fi
  read -r u0 s0 < <(cpu_ticks "$server_pid")
  t0=$(date +%s.%N)
  perf stat -e raw_syscalls:sys_enter -p "$server_pid" -x, -o "$work/perf.txt" &
  perf_pid=$!
  case "$tool" in
    wrk) taskset -c "$client_core" wrk -t1 -c64 -d"${duration}s" "http://127.0.0.1:$port/" >"$work/out.txt" ;;
    ab) taskset -c "$client_core" ab -q -c 50 -n 10000 "http://127.0.0.1:$port/" >"$work/out.txt" ;;
    ab-k) taskset -c "$client_core" ab -q -k -c 50 -n 100000 "http://127.0.0.1:$port/" >"$work/out.txt" ;;
  esac
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  t1=$(date +%s.%N)
  read -r u1 s1 < <(cpu_ticks "$server_pid")
  if [[ $tool == wrk ]]; then
    reqs=$(awk '/requests in/ {print $1}' "$work/out.txt")
    rps=$(awk '/Requests\/sec/ {print $2}' "$work/out.txt")
    errors=$(awk '/Non-2xx|Socket errors/' "$work/out.txt")
  else
    reqs=$(awk '/Complete requests/ {print $3}' "$work/out.txt")
    rps=$(awk '/Requests per second/ {print $4}' "$work/out.txt")
    failed=$(awk '/Failed requests/ {print $3}' "$work/out.txt")
    errors=$([[ $failed == 0 ]] || echo "failed requests: $failed")
  fi
  sysc=$(awk -F, '/raw_syscalls/ {print $1}' "$work/perf.txt")
  awk -v b="$b" -v r="$reqs" -v u="$((u1 - u0))" -v s="$((s1 - s0))" -v hz="$hz" -v t="$t0" -v t1="$t1" -v sc="$sysc" -v rps="$rps" 'BEGIN {
    el = t1 - t; us = u / hz * 1e6 / r; ss = s / hz * 1e6 / r;
    printf "%-16s %10.0f %9.2f %9.2f %9.2f %10.2f %7.0f%%\n", b, rps, us, ss, us + ss, sc / r, (u + s) / hz / el * 100 }'
  [[ -z $errors ]] || echo "  $b: $errors"
  if [[ $b == nginx ]]; then kill "$server_pid"; wait "$server_pid" 2>/dev/null || true
  else eval "exec ${SERVER[1]}>&-"; wait "$server_pid" || true; fi
done
echo "(server on core $server_core, $tool on core $client_core, $(uname -r), $(date -u +%FT%TZ))"
