#!/usr/bin/env python3
"""Repeat-to-repeat spread of a compare run, the old way beside the new way.

For every cell shape (group, backend, offered rate, connections, depth, size, idle) with at least 3 ok repeats it takes
the coefficient of variation (sample sd / mean) and the relative width of a 95% bootstrap
interval of the median, for
  - req/s,
  - server CPU per request from /proc/PID/stat ticks (the old ledger),
  - server CPU per request from the ns ledger (the new one),
and prints their distributions, fixed-rate cells and saturation cells apart. It also fits
how far perf's task-clock reads below the ledger per context switch.

Usage: scripts/repeatability.py RESULTS.json [RESULTS.json ...]
"""
import json
import random
import statistics as st
import sys
from collections import defaultdict


def status_ok(c):
    s = c.get("status")
    return s == "ok" or (isinstance(s, dict) and s.get("status", next(iter(s), None)) == "ok") or s == {"ok": None}


def cv(v):
    return st.stdev(v) / st.mean(v) * 100 if len(v) > 1 and st.mean(v) > 0 else None


def boot_width(v, rounds=2000, seed=1):
    rng = random.Random(seed)
    meds = sorted(st.median(rng.choices(v, k=len(v))) for _ in range(rounds))
    lo, hi = meds[int(0.025 * rounds)], meds[int(0.975 * rounds) - 1]
    m = st.median(v)
    return (hi - lo) / m * 100 if m > 0 else None


def dist(xs):
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return "–"
    q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
    return f"median {st.median(xs):5.1f}%  p25 {q(.25):5.1f}%  p75 {q(.75):5.1f}%  max {xs[-1]:5.1f}%  (n={len(xs)})"


def main(paths):
    for path in paths:
        d = json.load(open(path))
        shapes = defaultdict(list)
        slope = []
        for c in d["cells"]:
            if not status_ok(c) or not c.get("client") or not c.get("server"):
                continue
            w = c["workload"]
            # A group may hold several shapes (echo-64B at 64 and 256 connections).
            key = (c["group"], c["backend"], w.get("rate"), w.get("connections"),
                   w.get("depth"), w.get("size"), w.get("idle"))
            shapes[key].append(c)
            l = c.get("ledger") or {}
            s = c["server"]
            tc, ns = l.get("server_cpu_ns_task_clock"), l.get("server_cpu_ns")
            if tc and ns and "cgroup" in l.get("server_cpu_method", ""):
                slope.append((s["ctx_voluntary"] + s["ctx_involuntary"], ns - tc, w.get("rate") is not None))
        rows = {True: defaultdict(list), False: defaultdict(list)}
        for (g, b, rate, *_), cells in shapes.items():
            if len(cells) < 3:
                continue
            fixed = rate is not None
            rps = [c["client"]["throughput_rps"] for c in cells]
            req = [max(c["client"]["requests"], 1) for c in cells]
            ticks = [(c["server"]["cpu_user_s"] + c["server"]["cpu_sys_s"]) * 1e6 / r for c, r in zip(cells, req)]
            ns = [(c.get("ledger") or {}).get("server_cpu_us_per_req") for c in cells]
            r = rows[fixed]
            r["req/s CV"].append(cv(rps))
            if all(t > 0 for t in ticks):
                r["CPU/req CV, ticks"].append(cv(ticks))
                r["CPU/req 95% interval width, ticks"].append(boot_width(ticks))
            if all(x for x in ns):
                r["CPU/req CV, ns ledger"].append(cv(ns))
                r["CPU/req 95% interval width, ns ledger"].append(boot_width(ns))
        print(f"== {path}")
        for fixed in (True, False):
            print(f"  {'fixed-rate cells' if fixed else 'saturation cells'}:")
            for k, v in rows[fixed].items():
                print(f"    {k:40s} {dist(v)}")
        if len(slope) >= 3:
            for fixed in (True, False):
                pts = [(x, y) for x, y, f in slope if f == fixed and x > 0]
                if len(pts) < 3:
                    continue
                sx = sum(x for x, _ in pts)
                sy = sum(y for _, y in pts)
                fit = sum(x * y for x, y in pts) / sum(x * x for x, _ in pts)
                print(
                    f"  task-clock below the ledger, {'fixed-rate' if fixed else 'saturation'} cells: "
                    f"{sy / sx / 1e3:.1f} µs per context switch overall, fit through 0: {fit / 1e3:.1f} µs (n={len(pts)})"
                )


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
