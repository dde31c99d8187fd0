#!/usr/bin/env python3
"""Prints the criterion medians under target/criterion as a markdown table,
with each benchmark's reference (same group, name starting "reference") and
the ratio. Run after `cargo bench`."""
import json
import pathlib
import sys

root = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "target/criterion")


def fmt(ns):
    if ns >= 1e9:
        return f"{ns / 1e9:.3f} s"
    if ns >= 1e6:
        return f"{ns / 1e6:.3f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.3f} µs"
    return f"{ns:.1f} ns"


rows = {}
for est in sorted(root.glob("*/*/new/estimates.json")):
    group, name = est.parts[-4], est.parts[-3]
    rows.setdefault(group, {})[name] = json.loads(est.read_text())["median"]["point_estimate"]

print("| benchmark | median | reference (same run) | reference median | ratio |")
print("|---|---|---|---|---|")
for group, benches in rows.items():
    refs = {n: v for n, v in benches.items() if n.startswith("reference")}
    for name, value in benches.items():
        if name.startswith("reference"):
            continue
        if refs:
            ref_name, ref = next(iter(refs.items()))
            print(f"| {group}/{name} | {fmt(value)} | {group}/{ref_name} | {fmt(ref)} | {value / ref:.2f} |")
        else:
            print(f"| {group}/{name} | {fmt(value)} | — | — | — |")
