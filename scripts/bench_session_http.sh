#!/usr/bin/env bash
# A cookie-authenticated GET over HTTP (issue 20): requests/s and p99 of
# `GET /v1/me/sessions` with the session cookie, served by
# echorelay-http/examples/session_http.rs (the real router, release build)
# on three stores at once, each its own process: in memory; the
# deployment's split (DATABASE_URL + REDIS_URL: durable ports on Postgres,
# sessions, challenges and throttles on Redis); and all on Postgres
# (DATABASE_URL only). wrk -t1 -c16 (Debian package `wrk`), rounds
# alternating between the stores, medians reported, ratios to memory.
#
#   DATABASE_URL=… REDIS_URL=… [NO_BUILD=1] scripts/bench_session_http.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-10}"
base="${DATABASE_URL:-postgres://root@127.0.0.1:5432/test}"
redis="${REDIS_URL:-redis://127.0.0.1:6379}"
command -v wrk >/dev/null || { echo "bench_session_http.sh: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
# NO_BUILD=1: use the binary already built (while others edit the crate).
[ "${NO_BUILD:-0}" = 1 ] || cargo build --quiet --release -p echorelay-http --features pg,redis --example session_http
bin=target/release/examples/session_http
schema="er_bench_sessions_$$"
psql -q "$base" -c "CREATE SCHEMA $schema"
db="$base?options=-c%20search_path%3D$schema"
secret=$(openssl rand -hex 32)
dir=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  psql -q "$base" -c "SET client_min_messages = warning" -c "DROP SCHEMA IF EXISTS $schema CASCADE" || true
  rm -rf "$dir"
}
trap cleanup EXIT
start() { # arm, env...
  local arm=$1
  shift
  env -u DATABASE_URL -u REDIS_URL "$@" "$bin" >"$dir/$arm.log" 2>"$dir/$arm.err" &
  pids+=($!)
  for _ in $(seq 300); do grep -qs '^store' "$dir/$arm.log" && return; sleep 0.1; done
  echo "the $arm server did not start:" >&2
  cat "$dir/$arm.err" >&2
  exit 1
}
start memory
start pg_redis DATABASE_URL="$db" REDIS_URL="$redis" SECRET_KEY="$secret" ECHORELAY_MIGRATE=1
start pg DATABASE_URL="$db" SECRET_KEY="$secret" ECHORELAY_MIGRATE=1
arms=(memory pg_redis pg)
for arm in "${arms[@]}"; do echo "$arm: $(sed -n 's/^store //p' "$dir/$arm.log")"; done
echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ); load: $(cut -d' ' -f1-3 /proc/loadavg); mutation runs: $(pgrep -c -f 'cargo-mutants|cargo mutants' || true)"
out="$dir/results"
for r in $(seq "$rounds"); do
  for arm in "${arms[@]}"; do
    url=$(sed -n 's/^url //p' "$dir/$arm.log")
    cookie=$(sed -n 's/^cookie //p' "$dir/$arm.log")
    # Every answer must be a 200: a refused cookie would be a fast 401.
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "Cookie: $cookie" "$url")
    [ "$code" = 200 ] || { echo "$arm answered $code" >&2; exit 1; }
    printf '%s ' "$arm" >>"$out"
    wrk -t1 -c16 -d"${seconds}s" --latency -H "Cookie: $cookie" "$url" |
      awk '/Requests\/sec/ {rps=$2} /^ +99%/ {p99=$2} /Non-2xx/ {bad=$NF} END {print rps, p99, bad + 0}' >>"$out"
  done
done
echo "end: $(date -u +%Y-%m-%dT%H:%M:%SZ); load: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$out" "$rounds" "$seconds" <<'PY'
import statistics, sys
path, rounds, seconds = sys.argv[1:]
def ms(t):
    for unit, f in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
        if t.endswith(unit) and (unit != "s" or not t.endswith(("us", "ms"))):
            return float(t[: -len(unit)]) * f
    raise ValueError(t)
rows = {}
for line in open(path):
    arm, rps, p99, bad = line.split()
    assert bad == "0", f"{arm}: {bad} non-2xx answers"
    rows.setdefault(arm, []).append((float(rps), ms(p99)))
med = {a: (statistics.median(r for r, _ in v), statistics.median(p for _, p in v)) for a, v in rows.items()}
names = {"memory": "in memory", "pg_redis": "Postgres + Redis (sessions on Redis)", "pg": "all on Postgres"}
print(f"GET /v1/me/sessions with the session cookie; {rounds} rounds of {seconds} s per store, wrk -t1 -c16")
print("| store | requests/s (median) | p99 (median) | ÷ memory |")
print("|---|---|---|---|")
mem = med["memory"][0]
for a, (r, p) in med.items():
    print(f"| {names[a]} | {r:,.0f} | {p:.2f} ms | {r / mem:.3f} |")
if "pg" in med:
    print(f"Postgres + Redis ÷ all on Postgres: {med['pg_redis'][0] / med['pg'][0]:.2f}")
for a, v in rows.items():
    print(a, "rounds:", ", ".join(f"{r:,.0f}/s p99 {p:.2f} ms" for r, p in v))
PY
