#!/usr/bin/env bash
# Validates `harness load` against wrk and ab, both driving nginx-light (one worker pinned
# to the server core, `return 200`), the generator on the client core:
#   1. keep-alive http, 64 connections: req/s, nginx busy %, generator CPU µs and
#      syscalls per request (whole process, perf stat) for harness load and wrk;
#   2. churn (Connection: close, 50 concurrent): connections/s of harness load and ab;
#   3. open-loop accuracy at 25/50/80% of the closed-loop saturation: achieved vs target.
# Usage: scripts/validate-load.sh [--server-core N] [--client-core N] [--duration S]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/nginx.sh
server_core=0; client_core=1; duration=10
while (($#)); do
  case "$1" in
    --server-core) server_core=$2; shift 2 ;;
    --client-core) client_core=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
for t in wrk ab nginx perf taskset; do
  command -v "$t" >/dev/null || { echo "error: $t not found; run scripts/install-deps.sh" >&2; exit 1; }
done
cargo build --release -q -p harness
harness=$PWD/target/release/harness
hz=$(getconf CLK_TCK)
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port=18500
start_nginx "$work" "$server_core" "$port"
url="http://127.0.0.1:$port/"

# measure NAME REQUESTS_CMD... : runs a client under perf stat, prints its cost and nginx's.
perf_client() { # outfile cmd...
  local out=$1; shift
  perf stat -e raw_syscalls:sys_enter -o "$out" -- taskset -c "$client_core" "$@"
}
row() { # name reqs elapsed perf_file nginx_ticks
  awk -v n="$1" -v r="$2" -v el="$3" -v nt="$5" -v hz="$hz" '
    /raw_syscalls:sys_enter/ { gsub(",", "", $1); sc = $1 }
    /seconds user/ { u = $1 } /seconds sys/ { s = $1 }
    END { printf "%-14s %10.0f %8.0f%% %10.2f %10.2f %10.2f\n", n, r / el, nt / hz / el * 100, u * 1e6 / r, s * 1e6 / r, sc / r }' "$4"
}

echo "== keep-alive http, 64 connections, ${duration}s (nginx on core $server_core, client on core $client_core)"
printf '%-14s %10s %9s %10s %10s %10s\n' client req/s nginx-busy "usr µs/req" "sys µs/req" "sysc/req"
read -r u0 s0 < <(cpu_ticks "$server_pid"); t0=$(date +%s.%N)
perf_client "$work/wrk.perf" wrk -t1 -c64 -d"${duration}s" "$url" >"$work/wrk.txt"
t1=$(date +%s.%N); read -r u1 s1 < <(cpu_ticks "$server_pid")
wrk_reqs=$(awk '/requests in/ {print $1}' "$work/wrk.txt")
row wrk "$wrk_reqs" "$(echo "$t1 - $t0" | bc)" "$work/wrk.perf" $((u1 + s1 - u0 - s0))

read -r u0 s0 < <(cpu_ticks "$server_pid"); t0=$(date +%s.%N)
perf_client "$work/load.perf" "$harness" load --target "127.0.0.1:$port" --workload http --connections 64 \
  --duration "$duration" --warmup 0 --cores "$client_core" --json "$work/load.json" >"$work/load.txt"
t1=$(date +%s.%N); read -r u1 s1 < <(cpu_ticks "$server_pid")
load_reqs=$(python3 -c "import json;print(json.load(open('$work/load.json'))['requests']['completed'])")
row "harness load" "$load_reqs" "$(echo "$t1 - $t0" | bc)" "$work/load.perf" $((u1 + s1 - u0 - s0))
sat=$(python3 -c "import json;print(json.load(open('$work/load.json'))['throughput']['requests_per_s'])")

echo
echo "== churn: Connection: close, 50 concurrent"
taskset -c "$client_core" ab -q -c 50 -n 20000 "$url" >"$work/ab.txt"
ab_rps=$(awk '/Requests per second/ {print $4}' "$work/ab.txt")
ab_failed=$(awk '/Failed requests/ {print $3}' "$work/ab.txt")
"$harness" load --target "127.0.0.1:$port" --workload churn --connections 50 --duration 5 --warmup 1 \
  --cores "$client_core" --json "$work/churn.json" >/dev/null
python3 - "$ab_rps" "$ab_failed" "$work/churn.json" <<'PY'
import json, sys
ab, failed, r = float(sys.argv[1]), sys.argv[2], json.load(open(sys.argv[3]))
cps = r["throughput"]["connections_per_s"] or r["throughput"]["requests_per_s"]
print(f"ab -c 50 -n 20000     {ab:10.0f} conn/s (failed {failed})")
print(f"harness load churn    {cps:10.0f} conn/s (errors {r['errors_total']})   ratio {cps / ab:.2f}x")
PY

echo
echo "== open loop accuracy (saturation measured above: ${sat%.*} req/s)"
for pct in 25 50 80; do
  rate=$(python3 -c "print(round($sat * $pct / 100))")
  "$harness" load --target "127.0.0.1:$port" --workload http --connections 64 --rate "$rate" \
    --duration "$duration" --warmup 1 --cores "$client_core" --json "$work/open.json" >/dev/null
  python3 - "$pct" "$work/open.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[2])); s = r["schedule"]
print(f"{sys.argv[1]:>3}% target {s['target_rate']:10.0f}  achieved {s['achieved_rate']:10.0f}  ({(s['achieved_rate'] / s['target_rate'] - 1) * 100:+.2f}%)  p99 {r['latency']['p99_ns'] / 1000:.0f} µs corrected, {r['latency_uncorrected']['p99_ns'] / 1000:.0f} µs uncorrected")
PY
done
echo "($(uname -r), $(date -u +%FT%TZ))"
