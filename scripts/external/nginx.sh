#!/usr/bin/env bash
# Runs nginx (Debian's nginx-light) in the foreground as an external server for
# `harness compare`: renders suites/external/nginx.conf for PORT with one worker per CPU
# of CORES (a CPU list as the harness gives it: 0, 0-3, 0,2), then runs nginx and stops it
# on SIGTERM. Its configuration lives in a temporary directory, removed on exit.
#
# Usage: scripts/external/nginx.sh PORT CORES
#   harness compare --external 'nginx=scripts/external/nginx.sh {port} {cores}'
set -euo pipefail
if (($# != 2)); then
  echo "usage: $0 PORT CORES   (e.g. $0 8080 0-1)" >&2
  exit 2
fi
port=$1 cores=$2
command -v nginx >/dev/null || {
  echo "error: nginx not found; install nginx-light (scripts/install-deps.sh)" >&2
  exit 1
}
workers=0
IFS=, read -ra parts <<<"$cores"
for p in "${parts[@]}"; do
  if [[ $p =~ ^([0-9]+)-([0-9]+)$ ]]; then
    workers=$((workers + BASH_REMATCH[2] - BASH_REMATCH[1] + 1))
  elif [[ $p =~ ^[0-9]+$ ]]; then
    workers=$((workers + 1))
  else
    echo "error: CORES '$cores' is not a CPU list (like 0, 0-3 or 0,2)" >&2
    exit 2
  fi
done
template="$(cd "$(dirname "$0")/../.." && pwd)/suites/external/nginx.conf"
dir=$(mktemp -d "${TMPDIR:-/tmp}/ringside-nginx.XXXXXX")
trap 'rm -rf "$dir"' EXIT
sed -e "s|@PORT@|$port|g" -e "s|@WORKERS@|$workers|g" -e "s|@DIR@|$dir|g" "$template" >"$dir/nginx.conf"
nginx -c "$dir/nginx.conf" -p "$dir" -e stderr &
pid=$!
# The harness sends SIGTERM to the whole group; pass it on should it come to this shell
# alone, then wait for nginx's fast shutdown so the directory goes after it.
stopping=0
trap 'stopping=1; kill -TERM "$pid" 2>/dev/null || true' TERM INT
status=0
wait "$pid" || status=$?
# A wait cut short by the trap returns 128 + the signal while nginx may still be
# finishing: wait until it is gone. Its own status is then not always known to bash (a
# second wait on a child already reaped returns -1), and a stop that was asked for is a
# clean one.
while kill -0 "$pid" 2>/dev/null; do wait "$pid" || true; done
if ((stopping)); then
  exit 0
fi
exit "$status"
