#!/usr/bin/env python3
"""Where the CPU time of two benchmark scenarios goes, per request: perf samples placed in the
scenario whose window they fall in (see "Profiling by scenario" in docs/benchmarks.md).

    cargo bench --bench load --no-run
    perf record -k CLOCK_REALTIME -F 999 -o perf.data -- \\
        target/release/deps/load-<hash> --print-windows --output - 2> bench.err
    perf script -i perf.data -F comm,tid,time,ip,sym,dso > perf.txt
    scripts/perf-by-scenario.py bench.err perf.txt \\
        "sqlite:Health/Check (floor)" "sqlite:GetImageSpec, cache hit"

Scenarios are named "<backend>:<scenario>" as the benchmark prints them; a scenario measured in
several rounds adds up over its rounds. The servers' threads are named `server` (and SQLite's
workers `sqlx-sqlite-*`); the rest of the process is the load generator. At 999 Hz a sample
stands for about 1 ms of CPU time, so samples per request times 1,000,000 / 999 is microseconds
of CPU time per request.
"""

import bisect
import collections
import re
import sys

WINDOW = re.compile(r"^\s*window\t(.+?)\t([\d.]+)\t([\d.]+)\t(\d+)$")
BACKEND = re.compile(r"^(\w+):$")
SAMPLE = re.compile(r"^\s*(.+?)\s+(\d+)\s+(\d+\.\d+):\s+([0-9a-f]+)\s+(.*?)\s+\((.*)\)\s*$")

# Symbol groups, by the first pattern a symbol contains.
GROUPS = [
    ("moka", "moka"), ("crossbeam", "moka"), ("memmove", "memcpy"), ("memcpy", "memcpy"),
    ("malloc", "allocator"), ("_int_", "allocator"), ("cfree", "allocator"),
    ("unlink_chunk", "allocator"), ("realloc", "allocator"), ("clock_gettime", "clock"),
    ("tracing", "tracing"), ("hpack", "hpack"), ("h2::", "h2"), ("hyper", "hyper"),
    ("tonic", "tonic"), ("tokio", "tokio"), ("spec_provider", "spec_provider"),
    ("prometheus", "prometheus"), ("prost", "prost"), ("sqlite", "sqlite"),
]


def windows(bench_err):
    found, backend = [], ""
    with open(bench_err) as lines:
        for line in lines:
            if match := BACKEND.match(line):
                backend = match.group(1) + ":"
            elif match := WINDOW.match(line):
                name, start, end, requests = match.groups()
                found.append((float(start), float(end), backend + name, int(requests)))
    return sorted(found)


def group(symbol, dso):
    if "kernel" in dso:
        return "kernel"
    return next((g for pattern, g in GROUPS if pattern in symbol), "other")


def main(bench_err, perf_txt, first, second, hz=999.0):
    spans = windows(bench_err)
    starts = [span[0] for span in spans]
    requests = collections.Counter()
    for _, _, name, answered in spans:
        requests[name] += answered
    for name in (first, second):
        if not requests[name]:
            sys.exit(f"no window named {name!r}; named: {sorted(requests)}")
    # scenario -> (side, group or symbol) -> samples
    samples = collections.defaultdict(collections.Counter)
    with open(perf_txt, errors="replace") as lines:
        for line in lines:
            match = SAMPLE.match(line)
            if not match:
                continue
            comm, _, at, _, symbol, dso = match.groups()
            at = float(at)
            i = bisect.bisect_right(starts, at) - 1
            if i < 0 or at > spans[i][1] or spans[i][2] not in (first, second):
                continue
            side = "servers" if comm.startswith(("server", "sqlx-sqlite")) else "generator"
            scenario = samples[spans[i][2]]
            scenario[(side, "")] += 1
            if side == "servers":
                scenario[("group", group(symbol, dso))] += 1
                scenario[("symbol", symbol)] += 1

    def us(name, key):
        return samples[name][key] / requests[name] * 1e6 / hz

    print(f"{'µs of CPU time per request':40} {'A':>8} {'B':>8} {'B - A':>8}")
    print(f"  (A = {first}, B = {second})")
    for side in ("servers", "generator"):
        a, b = us(first, (side, "")), us(second, (side, ""))
        print(f"{side:40} {a:8.2f} {b:8.2f} {b - a:+8.2f}")
    keys = {k for name in (first, second) for k in samples[name] if k[0] == "group"}
    print("servers, by group:")
    for key in sorted(keys, key=lambda k: us(first, k) - us(second, k)):
        a, b = us(first, key), us(second, key)
        print(f"  {key[1]:38} {a:8.2f} {b:8.2f} {b - a:+8.2f}")
    keys = {k for name in (first, second) for k in samples[name] if k[0] == "symbol"}
    ranked = sorted(keys, key=lambda k: us(first, k) - us(second, k))
    print("servers, the symbols that differ most:")
    for key in ranked[:20] + ranked[-10:]:
        a, b = us(first, key), us(second, key)
        print(f"  {key[1][:38]:38} {a:8.2f} {b:8.2f} {b - a:+8.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    main(*sys.argv[1:])
