#!/usr/bin/env bash
# The relay beside its peer, Svix server, in one run (BENCHMARKS.md,
# issue 19): both on the same PostgreSQL and Redis, one application /
# project with one endpoint, the same receiver and the same 1,019-byte
# JSON payload, driven by examples/relay_load.rs (load and receiver in one
# process). Rounds alternate which system goes first; medians are
# reported, with the ratios echorelay / Svix.
#
#   SVIX_BIN=/path/to/svix-server scripts/bench_relay.sh [ROUNDS] [SECONDS] [CONNECTIONS]
#
# Defaults: 3 rounds, 20 s, 16 connections. Each round runs, per system:
#   e2e     one process accepts and delivers (echorelay: `serve --work`;
#           Svix: API and worker, its default), load for SECONDS, then
#           the receiver waits until every accepted message has arrived;
#   accept  the API alone (echorelay: `serve`; Svix:
#           SVIX_WORKER_ENABLED=false), load for SECONDS;
#   drain   the delivery side alone (echorelay: `work`; Svix:
#           SVIX_API_ENABLED=false) delivers the backlog `accept` left.
# e2e and accept each start on a fresh database and an empty Redis db.
#
# Needs: PostgreSQL on 127.0.0.1:5432 (trust, user root; BENCH_PG to
# change), Redis on 127.0.0.1:6379 (BENCH_REDIS), psql, redis-cli, curl,
# jq, python3, and a svix-server binary built outside this repository
# (how: BENCHMARKS.md). Databases `relaybench` and `svixbench` are dropped
# and made again; Redis dbs 11 (echorelay) and 10 (Svix) are flushed.
#
# Knobs (environment): SYSTEMS ("echorelay svix"; one of them for a
# check), ER_CONCURRENCY (echorelay's delivery loops, 128; Svix's worker runs
# up to 500 tasks by default, worker_max_tasks),
# DRAIN_TIMEOUT (s, 180), BUILD=0 (skip the cargo build), KEEP_LOGS=1
# (keep the servers' logs), ECHORELAY_KEY_CACHE=1 (echorelay's API-key
# cache; off unless set). Svix runs at its defaults (config.default.toml)
# but for the variables the Svix anchor set (cache and queue on Redis)
# and one more: SVIX_DB_POOL_MAX_SIZE (50 here; Svix's default, which
# the anchor ran, is 100). A pool of 100 does not fit in a PostgreSQL
# with max_connections = 100 once anything else is connected: Svix's
# drain then stalls on "too many clients" and a few messages wait ~40 s
# for a retry (seen here, 2026-12-05); with 50 it does not. Set
# SVIX_DB_POOL_MAX_SIZE=100 for the anchor's exact configuration (the
# script warns when the pool may not fit). Any other SVIX_* variable set
# in the environment reaches Svix too. (echorelay's pool: 10.)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds="${1:-3}"
seconds="${2:-20}"
conns="${3:-16}"
PG="${BENCH_PG:-postgresql://root@127.0.0.1:5432}"
REDIS="${BENCH_REDIS:-redis://127.0.0.1:6379}"
SVIX_BIN="${SVIX_BIN:-/work/svix/svix-webhooks/server/target/release/svix-server}"
ER_CONCURRENCY="${ER_CONCURRENCY:-128}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-180}"
ER_DB=relaybench
SVIX_DB=svixbench
ER_REDIS="$REDIS/11"
SVIX_REDIS="$REDIS/10"
ER_ADDR=127.0.0.1:8090
SVIX_ADDR=127.0.0.1:8071
RX=127.0.0.1:9911

for tool in psql redis-cli curl jq python3; do
  command -v "$tool" >/dev/null || { echo "bench_relay.sh: $tool is not installed" >&2; exit 2; }
done
[ -x "$SVIX_BIN" ] || { echo "bench_relay.sh: no svix-server at $SVIX_BIN (set SVIX_BIN)" >&2; exit 2; }
if [ "${BUILD:-1}" = 1 ]; then
  nice -n 19 cargo build --quiet --release -p echorelay-http --features pg,redis \
    --bin echorelay-server --example relay_load
fi
ER_BIN=target/release/echorelay-server
LOAD=target/release/examples/relay_load

work=$(mktemp -d)
results="$work/results"
stop() { # stop PID: SIGTERM, then SIGKILL after 5 s (Svix waits out its queue poll)
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() { # every background process of this shell (servers, receivers)
  for pid in $(jobs -p); do stop "$pid"; done
  if [ "${KEEP_LOGS:-0}" = 1 ]; then echo "logs: $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free() { # free ADDR...: fail when something listens there (a server left over)
  for addr in "$@"; do
    if (exec 3<>"/dev/tcp/${addr%:*}/${addr#*:}") 2>/dev/null; then
      echo "bench_relay.sh: something already listens on $addr" >&2; exit 2
    fi
  done
}
free "$ER_ADDR" "$SVIX_ADDR" "$RX"

wait_http() { # wait_http URL: until anything answers (30 s)
  for _ in $(seq 300); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$1")" != 000 ] && return 0
    sleep 0.1
  done
  echo "bench_relay.sh: nothing answers at $1; logs in $work" >&2
  KEEP_LOGS=1; exit 1
}
fresh_db() { # fresh_db NAME
  PGOPTIONS='-c client_min_messages=warning' psql -q "$PG/postgres" -v ON_ERROR_STOP=1 \
    -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" -c "CREATE DATABASE $1" >/dev/null
}
result() { # result ROUND SYSTEM MODE FILE: keep its RESULT line
  local line
  line=$(sed -n 's/^RESULT //p' "$4")
  [ -n "$line" ] || { echo "bench_relay.sh: no result from $2 $3:" >&2; cat "$4" >&2; KEEP_LOGS=1; exit 1; }
  echo "$1 $2 $3 $line" >>"$results"
  grep -v '^RESULT \|^listening ' "$4"
}
drain() { # drain ROUND SYSTEM EXPECT LOG START-CMD...: receiver first, then the worker
  local round=$1 sys=$2 expect=$3 log=$4; shift 4
  local out="$work/$sys-drain-$round.out"
  free "$RX"
  : >"$out"
  "$LOAD" drain --receiver "$RX" --expect "$expect" --drain-timeout "$DRAIN_TIMEOUT" \
    --label "$sys" >"$out" &
  local rx=$!
  for _ in $(seq 300); do grep -q '^listening' "$out" && break; sleep 0.1; done
  "$@" >>"$log" 2>&1 &
  local worker=$!
  wait "$rx" || true
  stop "$worker"
  result "$round" "$sys" drain "$out"
}
accepted() { jq -r .accepted <<<"$(sed -n 's/^RESULT //p' "$1")"; }

# ----------------------------------------------------------- echorelay
SECRET_KEY=$(openssl rand -hex 32 2>/dev/null || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
# Background processes are started as simple commands (`env … &`), never
# through a shell function: their $! is then the server itself.
ER_ENV=(DATABASE_URL="$PG/$ER_DB" SECRET_KEY="$SECRET_KEY" REDIS_URL="$ER_REDIS")
er_fresh() { # a migrated empty database; sets ER_URL, ER_AUTH
  fresh_db "$ER_DB"
  redis-cli -u "$ER_REDIS" FLUSHDB >/dev/null
  env "${ER_ENV[@]}" "$ER_BIN" migrate >>"$work/echorelay.log" 2>&1
  local p
  p=$(env DATABASE_URL="$PG/$ER_DB" SECRET_KEY="$SECRET_KEY" "$LOAD" provision --receiver "$RX" 2>>"$work/echorelay.log")
  ER_URL="http://$ER_ADDR/v1/in/$(sed -n 's/^endpoint //p' <<<"$p")"
  ER_AUTH="Bearer $(sed -n 's/^key //p' <<<"$p")"
}
er_serve() { # er_serve FLAGS...: sets SERVER
  free "$ER_ADDR"
  env "${ER_ENV[@]}" "$ER_BIN" serve --listen "$ER_ADDR" --max-requests-per-connection 0 \
    --maintenance-interval-secs 0 "$@" >>"$work/echorelay.log" 2>&1 &
  SERVER=$!
  wait_http "http://$ER_ADDR/nope"
}
workers=(--concurrency "$ER_CONCURRENCY" --allow-http --allow-net 127.0.0.1/32)
run_echorelay() { # run_echorelay ROUND
  local r=$1 out
  er_fresh
  er_serve --work "${workers[@]}"
  out="$work/echorelay-e2e-$r.out"
  "$LOAD" e2e --url "$ER_URL" --auth "$ER_AUTH" --connections "$conns" --duration "$seconds" \
    --receiver "$RX" --drain-timeout "$DRAIN_TIMEOUT" --label echorelay >"$out"
  stop "$SERVER"
  result "$r" echorelay e2e "$out"

  er_fresh
  er_serve
  out="$work/echorelay-accept-$r.out"
  "$LOAD" accept --url "$ER_URL" --auth "$ER_AUTH" --connections "$conns" --duration "$seconds" \
    --receiver "$RX" --label echorelay >"$out"
  stop "$SERVER"
  result "$r" echorelay accept "$out"

  drain "$r" echorelay "$(accepted "$out")" "$work/echorelay.log" \
    env "${ER_ENV[@]}" "$ER_BIN" work "${workers[@]}"
}

# ---------------------------------------------------------------- Svix
# Svix with its database and Redis: the anchor's variables, and a pool
# that fits (see the header).
SVIX_POOL="${SVIX_DB_POOL_MAX_SIZE:-50}"
SVIX_ENV=(SVIX_DB_DSN="$PG/$SVIX_DB" SVIX_REDIS_DSN="$SVIX_REDIS" SVIX_QUEUE_TYPE=redis
  SVIX_CACHE_TYPE=redis SVIX_JWT_SECRET=echorelay-bench-jwt-secret
  SVIX_WHITELIST_SUBNETS='[127.0.0.1/32]' SVIX_LISTEN_ADDRESS="$SVIX_ADDR"
  SVIX_DB_POOL_MAX_SIZE="$SVIX_POOL")
svix_fresh() { # a migrated empty database; sets SVIX_AUTH
  fresh_db "$SVIX_DB"
  redis-cli -u "$SVIX_REDIS" FLUSHDB >/dev/null
  env "${SVIX_ENV[@]}" "$SVIX_BIN" migrate >>"$work/svix.log" 2>&1
  SVIX_AUTH="Bearer $(env "${SVIX_ENV[@]}" "$SVIX_BIN" jwt generate | sed -n 's/^Token (Bearer): //p')"
}
svix_serve() { # svix_serve [VAR=VALUE...]: sets SERVER; waits for the API
  free "$SVIX_ADDR"
  env "${SVIX_ENV[@]}" "$@" "$SVIX_BIN" >>"$work/svix.log" 2>&1 &
  SERVER=$!
  wait_http "http://$SVIX_ADDR/api/v1/health/"
}
svix_provision() { # one application, one endpoint at the receiver; sets SVIX_URL
  local api="http://$SVIX_ADDR/api/v1"
  curl -sf -H "Authorization: $SVIX_AUTH" -H 'content-type: application/json' \
    -d '{"name":"bench","uid":"bench"}' "$api/app/" >/dev/null
  curl -sf -H "Authorization: $SVIX_AUTH" -H 'content-type: application/json' \
    -d "{\"url\":\"http://$RX/hook\"}" "$api/app/bench/endpoint/" >/dev/null
  SVIX_URL="$api/app/bench/msg/"
}
run_svix() { # run_svix ROUND
  local r=$1 out
  svix_fresh
  svix_serve
  svix_provision
  out="$work/svix-e2e-$r.out"
  "$LOAD" e2e --url "$SVIX_URL" --auth "$SVIX_AUTH" --svix-event-type bench.event \
    --connections "$conns" --duration "$seconds" --receiver "$RX" \
    --drain-timeout "$DRAIN_TIMEOUT" --label svix >"$out"
  stop "$SERVER"
  result "$r" svix e2e "$out"

  svix_fresh
  svix_serve SVIX_WORKER_ENABLED=false
  svix_provision
  out="$work/svix-accept-$r.out"
  "$LOAD" accept --url "$SVIX_URL" --auth "$SVIX_AUTH" --svix-event-type bench.event \
    --connections "$conns" --duration "$seconds" --receiver "$RX" --label svix >"$out"
  stop "$SERVER"
  result "$r" svix accept "$out"

  drain "$r" svix "$(accepted "$out")" "$work/svix.log" \
    env "${SVIX_ENV[@]}" SVIX_API_ENABLED=false "$SVIX_BIN"
}

echo "bench_relay.sh: $rounds rounds, $seconds s, $conns connections; echorelay $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . 2>/dev/null || echo ' (dirty tree)'), delivery loops $ER_CONCURRENCY, key cache ${ECHORELAY_KEY_CACHE:-off}; $("$SVIX_BIN" --version 2>/dev/null || echo svix-server)"
echo "started $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"
pg_max=$(psql -Atq "$PG/postgres" -c 'SHOW max_connections')
pg_used=$(psql -Atq "$PG/postgres" -c 'SELECT count(*) FROM pg_stat_activity')
echo "PostgreSQL max_connections $pg_max, $pg_used connections now; Svix pool $SVIX_POOL"
if [ "$SVIX_POOL" -ge $((pg_max - pg_used)) ]; then
  echo "warning: Svix's pool may not fit in PostgreSQL's free connections (see the header)" >&2
fi
for r in $(seq "$rounds"); do
  if [ $((r % 2)) = 1 ]; then order="echorelay svix"; else order="svix echorelay"; fi
  for sys in $order; do
    case " ${SYSTEMS:-echorelay svix} " in *" $sys "*) "run_$sys" "$r" ;; esac
  done
done
echo "ended $(date -u +%FT%TZ), load average $(cut -d' ' -f1-3 /proc/loadavg)"

python3 - "$results" "$rounds" "$seconds" "$conns" <<'PY'
import json, statistics, sys
path, rounds, seconds, conns = sys.argv[1:]
runs = {}
for line in open(path):
    r, sys_, mode, js = line.split(" ", 3)
    runs.setdefault((sys_, mode), []).append(json.loads(js))
def med(sys_, mode, key):
    vals = [x[key] for x in runs.get((sys_, mode), []) if x.get(key) is not None]
    return statistics.median(vals) if vals else None
def num(v, unit):
    if v is None:
        return "—"
    return f"{v:,.0f}" if unit in ("req/s", "msg/s") else f"{v:.2f}"
rows = [
    ("e2e", "accepted_rps", "one process: accepted", "req/s"),
    ("e2e", "api_p50_ms", "one process: API p50", "ms"),
    ("e2e", "api_p99_ms", "one process: API p99", "ms"),
    ("e2e", "delivered_window_mps", "one process: delivered in the load window", "msg/s"),
    ("e2e", "delivered_until_drained_mps", "one process: delivered until drained", "msg/s"),
    ("e2e", "e2e_p50_ms", "one process: send→delivery p50", "ms"),
    ("e2e", "e2e_p99_ms", "one process: send→delivery p99", "ms"),
    ("accept", "accepted_rps", "accept only: accepted", "req/s"),
    ("accept", "api_p50_ms", "accept only: API p50", "ms"),
    ("accept", "api_p99_ms", "accept only: API p99", "ms"),
    ("drain", "drain_mps", "drain only: delivered (first→last)", "msg/s"),
    ("drain", "drain_99_mps", "drain only: delivered (first→99 % of the backlog)", "msg/s"),
    ("drain", "drain_since_start_mps", "drain only: delivered (from worker start)", "msg/s"),
]
print(f"\n{rounds} rounds, {seconds} s, {conns} connections; medians")
print("| mode: measure | unit | echorelay | Svix | echorelay ÷ Svix |")
print("|---|---|---|---|---|")
for mode, key, name, unit in rows:
    e, s = med("echorelay", mode, key), med("svix", mode, key)
    ratio = f"{e / s:.2f}" if e is not None and s else "—"
    print(f"| {name} | {unit} | {num(e, unit)} | {num(s, unit)} | {ratio} |")
print("(latency ratios: below 1 is faster)")
for sys_ in ("echorelay", "svix"):
    xs = [x for (s, _), v in runs.items() if s == sys_ for x in v]
    print(f"{sys_}: non-2xx {sum(x.get('non_2xx', 0) for x in xs)}, connection errors "
          f"{sum(x.get('errors', 0) for x in xs)}, duplicates {sum(x.get('duplicates', 0) for x in xs)}, "
          f"unreadable {sum(x.get('unreadable', 0) for x in xs)}, runs not drained "
          f"{sum(1 for (s, m), v in runs.items() if s == sys_ and m != 'accept' for x in v if not x.get('drained'))}, "
          f"accept-only deliveries {sum(x.get('delivered', 0) for x in runs.get((sys_, 'accept'), []))}")
for (sys_, mode), v in sorted(runs.items()):
    key = {"e2e": "delivered_until_drained_mps", "accept": "accepted_rps", "drain": "drain_mps"}[mode]
    print(f"{sys_} {mode} rounds: " + ", ".join(num(x.get(key), "req/s") for x in v))
PY
