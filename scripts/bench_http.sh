#!/usr/bin/env bash
# Authentication overhead over HTTP: requests/s and p99 latency of an
# API-key-authenticated GET /v1/projects/{slug}/lines against the same
# route with the key taken as verified once (examples/auth_overhead.rs),
# side by side in one run, with wrk (Debian package `wrk`). Rounds
# alternate between the two; medians are reported.
#
#   scripts/bench_http.sh [ROUNDS] [SECONDS]        in memory
#   DATABASE_URL=… SECRET_KEY=… scripts/bench_http.sh   on Postgres
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-5}"
seconds="${2:-10}"
command -v wrk >/dev/null || { echo "bench_http.sh: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
cargo build --quiet --release -p echorelay-http --features bench,pg --example auth_overhead
log=$(mktemp)
target/release/examples/auth_overhead >"$log" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 100); do grep -q '^store' "$log" && break; sleep 0.1; done
key=$(sed -n 's/^key //p' "$log")
authenticated=$(sed -n 's/^authenticated //p' "$log")
unauthenticated=$(sed -n 's/^unauthenticated //p' "$log")
store=$(sed -n 's/^store //p' "$log")
out=$(mktemp)
for r in $(seq "$rounds"); do
  for arm in authenticated unauthenticated; do
    url=${!arm}
    # The same request in both arms (the header is ignored by the second).
    printf '%s ' "$arm" >>"$out"
    wrk -t1 -c16 -d"${seconds}s" --latency -H "Authorization: Bearer $key" "$url" |
      awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} END {print rps, p99}' >>"$out"
  done
done
python3 - "$out" "$store" "$rounds" "$seconds" <<'PY'
import statistics, sys
path, store, rounds, seconds = sys.argv[1:]
def ms(t):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if t.endswith(unit) and (unit != "s" or not t.endswith(("us", "ms"))):
            return float(t[: -len(unit)]) * f
    raise ValueError(t)
rows = {"authenticated": [], "unauthenticated": []}
for line in open(path):
    arm, rps, p99 = line.split()
    rows[arm].append((float(rps), ms(p99)))
med = {a: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for a, v in rows.items()}
(ar, ap), (ur, up) = med["authenticated"], med["unauthenticated"]
print(f"store: {store}; {rounds} rounds of {seconds} s each arm, wrk -t1 -c16")
print(f"| arm | requests/s (median) | p99 latency (median) |")
print(f"|---|---|---|")
print(f"| API key verified per request | {ar:,.0f} | {ap:.2f} ms |")
print(f"| same route, key taken as verified | {ur:,.0f} | {up:.2f} ms |")
print(f"ratio authenticated/unauthenticated: {ar/ur:.3f} (overhead {100*(1-ar/ur):.1f} %)")
for a, v in rows.items():
    print(a, "rounds:", ", ".join(f"{r:,.0f}/s p99 {p:.2f} ms" for r, p in v))
PY
