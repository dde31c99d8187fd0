#!/usr/bin/env python3
"""Issue 17's tables for BENCHMARKS.md, from one run of scripts/bench_queue.sh:
echorelay's medians (criterion, target/criterion/queue_*) beside the
ceilings and peers (target/bench-queue/peers.jsonl), with ratios.

    python3 scripts/bench_queue_table.py
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRIT = ROOT / "target" / "criterion"
PEERS = ROOT / "target" / "bench-queue" / "peers.jsonl"
SHAPES = [(1, 1), (8, 1), (1, 100), (8, 100)]


def ours(group):
    """{(consumers, batch): jobs/s} from criterion's median time per iteration."""
    out = {}
    for c, b in SHAPES:
        d = CRIT / group / f"c{c}_b{b}"
        if not d.exists():
            continue
        for param in d.iterdir():
            est = param / "new" / "estimates.json"
            if est.exists():
                ns = json.loads(est.read_text())["median"]["point_estimate"]
                out[(c, b)] = int(param.name) / (ns / 1e9)
    return out


def peers():
    rows = []
    if PEERS.exists():
        for line in PEERS.read_text().splitlines():
            line = line.strip()
            if line.startswith("{"):
                rows.append(json.loads(line))
    return rows


def pick(rows, system_prefix, backlog=None, jobs=None, extra=None):
    """{(consumers, batch): (median, row)} of the rows of one system."""
    out = {}
    for r in rows:
        if not r.get("system", "").startswith(system_prefix):
            continue
        if backlog is not None and r.get("backlog") != backlog:
            continue
        if jobs is not None and r.get("jobs") != jobs:
            continue
        if extra and any(r.get(k) != v for k, v in extra.items()):
            continue
        out[(r["consumers"], r["batch"])] = (r.get("median"), r)
    return out


def fmt(x):
    if x is None:
        return "—"
    return f"{x:,.0f}"


def table(title, mine, refs, target=None):
    print(f"\n#### {title}\n")
    head = "| consumers × batch | echorelay (jobs/s) |"
    sep = "|---|---|"
    for name, _ in refs:
        head += f" {name} | ratio |"
        sep += "---|---|"
    if target:
        head += " target | met |"
        sep += "---|---|"
    print(head)
    print(sep)
    for c, b in SHAPES:
        v = mine.get((c, b))
        line = f"| {c} × {b} | **{fmt(v)}** |"
        for _, ref in refs:
            m, r = ref.get((c, b), (None, None))
            if r is not None and r.get("error"):
                line += f" fails: `{r['error'][:60]}` | — |"
            else:
                ratio = f"{v / m:.2f}" if (v and m) else "—"
                line += f" {fmt(m)} | {ratio} |"
        if target:
            t = target(c, b)
            line += f" {fmt(t)} | {'yes' if (v and t and v >= t) else ('—' if not t else 'no')} |"
        print(line)


def main():
    rows = peers()
    if not rows:
        print("no target/bench-queue/peers.jsonl: run scripts/bench_queue.sh", file=sys.stderr)
    table("Memory", ours("queue_mem"), [], target=lambda c, b: 500_000)
    pg_target = lambda c, b: 3_500 if b == 1 else 25_000
    table(
        "Postgres, no backlog",
        ours("queue_pg"),
        [
            ("raw-SQL ceiling (pgbench)", pick(rows, "postgres raw SQL ceiling", backlog=0)),
            ("pgqueuer, 5k jobs", pick(rows, "pgqueuer", jobs=5000)),
            ("pgqueuer, 50k jobs", pick(rows, "pgqueuer", jobs=50000)),
            ("apalis-postgres, 5k", pick(rows, "apalis-postgres", jobs=5000)),
        ],
        target=pg_target,
    )
    for backlog in (1_000, 100_000, 1_000_000):
        table(
            f"Postgres, {backlog:,} jobs waiting",
            ours(f"queue_pg_backlog_{backlog}"),
            [("raw-SQL ceiling (pgbench)", pick(rows, "postgres raw SQL ceiling", backlog=backlog))],
            target=pg_target,
        )
    for backlog in (0, 5_000, 50_000):
        group = "queue_redis" if backlog == 0 else f"queue_redis_backlog_{backlog}"
        refs = [
            ("ceiling: whole cycle in 1 Lua call", pick(rows, "", backlog=backlog, extra={"backend": "redis", "op": "cycle"})),
            ("ceiling: 3 Lua calls (derived)", pick(rows, "", backlog=backlog, extra={"backend": "redis", "op": "cycle-3-calls"})),
        ]
        if backlog in (5_000, 50_000):
            refs.append((f"apalis-redis, {backlog:,} jobs", pick(rows, "apalis-redis", jobs=backlog)))
        table(f"Redis, {backlog:,} jobs waiting", ours(group), refs, target=lambda c, b: 20_000)


if __name__ == "__main__":
    main()
