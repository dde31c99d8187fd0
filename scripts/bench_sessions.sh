#!/usr/bin/env bash
# Issue 20's session benchmarks, side by side with their ceiling in one
# run: redis-benchmark (the ceiling), then the criterion bench
# `cargo bench -p echorelay-store-redis --bench sessions`
# (echorelay-store-redis/benches/sessions.rs: AccountService::authenticate
# on memory, Memory+Redis, Postgres+Redis (and its one Postgres read
# alone) and Postgres, and the redis-rs
# pipelined GET+EXPIRE), then redis-benchmark again; prints the medians,
# the ceiling and the ratios.
#
# The ceiling, "one GET + one EXPIRE per authenticate": one client (the
# bench is one client, sequential), a 256-byte string (about a session
# record), GET and EXPIRE each run with `-c 1 -P 2` (two commands per
# round trip); one round trip carrying a GET and an EXPIRE costs
# 1/rps(GET) + 1/rps(EXPIRE) (the pipeline's round trip is shared, each
# command's server work is its own). Printed beside it, for reading the
# figures, not as the ceiling: the same commands one per round trip
# (`-P 1`, two round trips, as many as authenticate makes to Redis), one
# EVAL doing both, and the server's throughput for one connection
# pipelined 16 deep (`-P 16`, the round trip amortised over 16
# authentications, which no sequential client can do).
#
#   DATABASE_URL=… REDIS_URL=… scripts/bench_sessions.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://root@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
hostport=${REDIS_URL#redis://}
hostport=${hostport%%/*}
hostport=${hostport##*@}
host=${hostport%%:*}
port=${hostport##*:}
[ "$port" = "$hostport" ] && port=6379
key="er-bench-ceiling:$$"
out=$(mktemp)
trap 'redis-cli -h "$host" -p "$port" DEL "$key" >/dev/null 2>&1 || true; rm -f "$out"' EXIT

rb() { # label, n, pipeline, command...
  local label=$1 n=$2 p=$3
  shift 3
  redis-benchmark -h "$host" -p "$port" -c 1 -P "$p" -n "$n" --csv "$@" |
    awk -F'"' -v l="$label" 'NR == 2 {print l, $4}' | tee -a "$out"
}

ceiling() { # phase
  redis-cli -h "$host" -p "$port" SET "$key" "$(head -c 256 /dev/zero | tr '\0' x)" >/dev/null
  echo "== redis-benchmark ($1): label, commands/s (-c 1)"
  for p in 2 1 16; do
    rb "$1 get_p$p" 200000 "$p" GET "$key"
    rb "$1 expire_p$p" 200000 "$p" EXPIRE "$key" 1800
  done
  rb "$1 eval_get_expire" 100000 1 EVAL "redis.call('GET', KEYS[1]) return redis.call('EXPIRE', KEYS[1], 1800)" 1 "$key"
}

load() { echo "== load: $(cut -d' ' -f1-3 /proc/loadavg); mutation runs: $(pgrep -c -f 'cargo-mutants|cargo mutants' || true)"; }

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(redis-server --version | cut -d' ' -f3), $(psql -Atc 'show server_version' "$DATABASE_URL")"
echo "== date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
load
ceiling before
echo "== criterion: cargo bench -p echorelay-store-redis --bench sessions ($(date -u +%H:%M:%SZ))"
cargo bench -q -p echorelay-store-redis --bench sessions 2>&1 | grep -E "^sessions/|time:|skipped"
load
ceiling after
echo "== end: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
python3 - "$out" target/criterion <<'PY'
import json, pathlib, statistics, sys
path, root = sys.argv[1], pathlib.Path(sys.argv[2])
rps = {}
for line in open(path):
    label, v = line.rsplit(" ", 1)
    phase, name = label.split(" ", 1)
    rps.setdefault(name, []).append(float(v))
mean = {k: statistics.mean(v) for k, v in rps.items()}
us = lambda r: 1e6 / r
ceil = {p: us(mean[f"get_p{p}"]) + us(mean[f"expire_p{p}"]) for p in (2, 1, 16)}
print("\n## ceiling: µs per GET+EXPIRE pair, mean of the two redis-benchmark runs")
for p, label in ((2, "pipelined in one round trip (-P 2): THE CEILING"), (1, "one per round trip (-P 1, two round trips)"), (16, "pipelined 16 deep (-P 16, server throughput)")):
    runs = [us(g) + us(e) for g, e in zip(rps[f"get_p{p}"], rps[f"expire_p{p}"])]
    print(f"{label}: {ceil[p]:.2f} µs ({1e6 / ceil[p]:,.0f} pairs/s); runs {', '.join(f'{r:.2f}' for r in runs)}")
ev = us(mean["eval_get_expire"])
print(f"one EVAL doing both: {ev:.2f} µs; runs {', '.join(f'{us(r):.2f}' for r in rps['eval_get_expire'])}")
med = {}
for est in root.glob("**/new/estimates.json"):
    full = json.loads((est.parent / "benchmark.json").read_text())["full_id"]
    if full.startswith("sessions/"):
        med[full.split("/", 1)[1]] = json.loads(est.read_text())["median"]["point_estimate"] / 1e3
print("\n| benchmark | median | as a rate | vs authenticate_pg (times faster) | ceiling (-P 2) ÷ this |")
print("|---|---|---|---|---|")
pg = med.get("authenticate_pg")
for name in ("authenticate_mem", "authenticate_mem_redis", "authenticate_pg_redis", "pg_account_read", "authenticate_pg", "ceiling_redis_rs_get_expire_pipelined"):
    if name not in med:
        print(f"| sessions/{name} | not measured | | | |")
        continue
    m = med[name]
    vs = f"{pg / m:.2f}×" if pg else "—"
    print(f"| sessions/{name} | {m:.2f} µs | {1e6 / m:,.0f}/s | {vs} | {ceil[2] / m:.2f} |")
PY
