#!/usr/bin/env python3
"""The issue-18 backup table from target/bench-backup/results.jsonl
(scripts/bench_backup.sh): medians in MB/s of the plaintext dump, each
beside the ceiling and restic as ratios, and the 100 GB projection."""
import json
import statistics
import sys
from collections import defaultdict

path = sys.argv[1] if len(sys.argv) > 1 else "target/bench-backup/results.jsonl"
rows = [json.loads(line) for line in open(path) if line.strip()]
runs = defaultdict(list)
for r in rows:
    runs[(r["system"], r["direction"], r["target"])].append(r)


def med(system, direction, target):
    rs = runs.get((system, direction, target))
    if not rs:
        return None
    return statistics.median(x["mb_per_s"] for x in rs), len(rs)


def cell(v):
    return "—" if v is None else f"{v[0]:.1f}"


def ratio(a, b):
    if a is None or b is None:
        return "—"
    return f"{a[0] / b[0]:.2f}"


dump = rows[0]["bytes"] if rows else 0
print(f"Dump: {dump} bytes ({dump / 1e9:.2f} GB). MB/s = 10^6 bytes of the dump per wall second; median of n runs.\n")
print("| direction | target | echorelay | ceiling | by hand (age) | restic | echorelay ÷ ceiling | echorelay ÷ restic | echorelay ÷ by hand |")
print("|---|---|---|---|---|---|---|---|---|")
for direction, ours_dir in [("backup", "backup"), ("restore (into Postgres)", "restore"), ("download + authenticate (no import)", "verify")]:
    for target in ["s3", "file"]:
        ours = med("echorelay", ours_dir, target)
        ceiling = med("ceiling", "backup" if ours_dir == "backup" else "restore", target)
        hand = med("by-hand", ours_dir, target) if ours_dir != "verify" else None
        restic = med("restic", "restore-files" if ours_dir == "verify" else ours_dir, target)
        n = ours[1] if ours else 0
        print(f"| {direction} | {target} | {cell(ours)} (n={n}) | {cell(ceiling)} | {cell(hand)} | {cell(restic)} | {ratio(ours, ceiling)} | {ratio(ours, restic)} | {ratio(ours, hand)} |")
for system, direction in [("pg_dump", "backup"), ("pg_restore", "restore")]:
    v = med(system, direction, "none")
    print(f"\n{system} alone (no transport): {cell(v)} MB/s", end="")
print("\n")
ours = med("echorelay", "restore", "s3")
if ours:
    secs = 100e9 / (ours[0] * 1e6)
    print(f"Projection: a 100 GB dump restored from S3 at {ours[0]:.1f} MB/s takes 100e9 / {ours[0] * 1e6:.3g} = {secs:.0f} s = {secs / 3600:.2f} h (objective: 4 h).")
