#!/usr/bin/env bash
# Applies the host settings `harness doctor` asks for, and prints how to undo each one.
# Changes are runtime only (sysctl -w, /sys writes): a reboot also undoes them.
#
# Usage: sudo scripts/tune-host.sh [--dry-run]
set -euo pipefail
dry=false
[[ "${1:-}" == "--dry-run" ]] && dry=true
[[ $(id -u) -eq 0 ]] || $dry || { echo "error: run as root (sudo $0), or --dry-run to see the changes" >&2; exit 1; }

undo=()
set_sysctl() { # name value
  local name=$1 want=$2 path="/proc/sys/${1//.//}"
  [[ -e $path ]] || { echo "skip  $name (not on this kernel)"; return; }
  local have
  have=$(tr -s '\t ' ' ' <"$path")
  if [[ "$have" == "$want" ]]; then echo "ok    $name = $have"; return; fi
  echo "set   $name: $have -> $want"
  $dry || sysctl -q -w "$name=$want"
  undo+=("sysctl -w $name=\"$have\"")
}

set_sysctl net.core.somaxconn 4096
set_sysctl net.ipv4.tcp_max_syn_backlog 4096
set_sysctl net.ipv4.ip_local_port_range "1024 65000"
set_sysctl kernel.perf_event_paranoid -1
set_sysctl kernel.io_uring_disabled 0
set_sysctl fs.nr_open 1048576

if [[ ! -e /sys/kernel/tracing/events/raw_syscalls ]] && ! mountpoint -q /sys/kernel/tracing 2>/dev/null; then
  echo "mount tracefs on /sys/kernel/tracing (for syscall counting)"
  $dry || mount -t tracefs nodev /sys/kernel/tracing
  undo+=("umount /sys/kernel/tracing")
fi

for gov in /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor; do
  [[ -e $gov ]] || break
  have=$(<"$gov")
  [[ $have == performance ]] && continue
  echo "set   $gov: $have -> performance"
  $dry || echo performance >"$gov"
  undo+=("echo $have > $gov")
done

echo
echo "Descriptor and locked-memory limits are per shell, not per host: before harness compare,"
echo "  ulimit -n 1048576; ulimit -l 65536"
if ((${#undo[@]})); then
  echo
  echo "To undo:"
  printf '  %s\n' "${undo[@]}"
else
  echo "Nothing to change."
fi
