#!/usr/bin/env bash
# Issue 17: the Redis ceiling of one queue cycle (enqueue -> reserve ->
# ack), measured with redis-benchmark running minimal Lua scripts
# (redis_*.lua beside this file) by EVALSHA, keys under one hash tag.
#
# Prints one JSON object per line on stdout; progress goes to stderr.
# Per (backlog, consumers, batch):
#   - "op": "cycle": one EVALSHA does the whole cycle for 1 or 100 jobs
#     (redis_cycle.lua); jobs/s = calls/s x batch.
#   - with OPS=1 (default) also "enqueue", "reserve", "ack": each step
#     alone (redis_enqueue.lua, redis_reserve.lua, redis_ack.lua), run one
#     after the other on the same jobs, and "cycle-3-calls": the cycle as
#     three round trips (as echorelay-store-redis does it), derived per
#     run as 1 / (1/enqueue + 1/reserve + 1/ack). Not measured directly:
#     redis-benchmark cannot carry a reserve's tokens into the next call.
# See README.md beside this file.
#
#   scripts/queue_bench/redis_ceiling.sh
#   RUNS=2 TARGET_SECONDS=1 scripts/queue_bench/redis_ceiling.sh   # smoke
#
# Environment (defaults in brackets):
#   REDIS_HOST [127.0.0.1] REDIS_PORT [6379] REDIS_DB [0]
#   RUNS [5]  TARGET_SECONDS [4]  (each cycle run is sized by a
#   calibration run, not counted, to take about this long)
#   CONSUMERS ["1 8"]  BATCHES ["1 100"]  BACKLOGS ["0"] e.g. "0 5000 50000"
#   OPS [1]  0 skips the per-step figures
# Keys: {echorelay-ceiling}:*, deleted before and after.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
host="${REDIS_HOST:-127.0.0.1}"
port="${REDIS_PORT:-6379}"
dbnum="${REDIS_DB:-0}"
runs="${RUNS:-5}"
target="${TARGET_SECONDS:-4}"
consumers_list="${CONSUMERS:-1 8}"
batches="${BATCHES:-1 100}"
backlogs="${BACKLOGS:-0}"
ops="${OPS:-1}"

tag='{echorelay-ceiling}'
ready="$tag:q:bench:ready"
leased="$tag:q:bench:leased"
jp="$tag:j:"
payload='{"event":"bench","n":1}'
# A job id base per call: each __rand_int__ is replaced by its own random
# number below 2^31 (-r; redis-benchmark reads it as a C int), so three of
# them make collisions between calls of one run negligible.
rid='__rand_int__-__rand_int__-__rand_int__'

rc() { redis-cli -h "$host" -p "$port" -n "$dbnum" "$@"; }

cleanup() {
    rc --scan --pattern "$tag*" | xargs -r -n 1000 redis-cli -h "$host" -p "$port" -n "$dbnum" UNLINK >/dev/null
}
trap cleanup EXIT

sha_cycle="$(rc SCRIPT LOAD "$(cat "$here/redis_cycle.lua")")"
sha_enq="$(rc SCRIPT LOAD "$(cat "$here/redis_enqueue.lua")")"
sha_res="$(rc SCRIPT LOAD "$(cat "$here/redis_reserve.lua")")"
sha_ack="$(rc SCRIPT LOAD "$(cat "$here/redis_ack.lua")")"
server_version="$(rc INFO server | sed -n 's/^redis_version:\(.*\)\r$/\1/p')"
bench_version="$(redis-benchmark --version | awk '{print $2}')"

# bench CLIENTS CALLS ARGS... -> calls per second (redis-benchmark --csv).
bench() {
    local clients="$1" calls="$2"
    shift 2
    local out
    out="$(redis-benchmark -h "$host" -p "$port" --dbnum "$dbnum" -c "$clients" -n "$calls" \
        -r 2147483647 --csv "$@")"
    # The test name is the command line, quotes unescaped: read from the end.
    tail -1 <<<"$out" | python3 -c 'import sys; print(sys.stdin.read().strip().rsplit(",", 7)[1].strip("\""))'
}

# Waiting + leased jobs: what a run must leave as it found it.
held() { echo $(($(rc ZCARD "$ready") + $(rc ZCARD "$leased"))); }

emit() { # op consumers batch backlog calls "rates" "seconds" system
    python3 - "$@" "$server_version" "$bench_version" <<'PY'
import json, statistics, sys
op, consumers, batch, backlog, calls = sys.argv[1], *map(int, sys.argv[2:6])
rates = [float(x) for x in sys.argv[6].split()]
secs = [float(x) for x in sys.argv[7].split()]
system, server, tool = sys.argv[8], sys.argv[9], sys.argv[10]
row = {
    "system": system,
    "backend": "redis",
    "consumers": consumers,
    "batch": batch,
    "jobs": calls * batch,
    "backlog": backlog,
    "jobs_per_s": rates,
    "median": round(statistics.median(rates), 1),
    "op": op,
    "calls_per_run": calls,
    "seconds_per_run": [round(s, 2) for s in secs],
    "server": f"Redis {server}",
    "tool": f"redis-benchmark {tool} -c {consumers} -n {calls} EVALSHA",
}
if op == "cycle-3-calls":
    row["derived"] = "per run: 1 / (1/enqueue + 1/reserve + 1/ack) of the same run's step figures"
    del row["calls_per_run"], row["seconds_per_run"], row["tool"]
print(json.dumps(row), flush=True)
PY
}

for backlog in $backlogs; do
    cleanup
    if [ "$backlog" -gt 0 ]; then
        echo "redis_ceiling: filling a backlog of $backlog" >&2
        # Due an hour ago (older than anything a run enqueues), 1,000 a call.
        left="$backlog"
        while [ "$left" -gt 0 ]; do
            k=$((left < 1000 ? left : 1000))
            rc EVAL "local t = redis.call('TIME')
                     local base = (tonumber(t[1]) - 3600) * 1000000
                     for i = 1, tonumber(ARGV[3]) do
                       local id = 'fill-' .. ARGV[2] .. '-' .. i
                       redis.call('HSET', ARGV[1] .. id, 'q', 'bench', 'p', ARGV[4], 'a', '0', 'm', '5', 'e', string.format('%d', base), 'k', '')
                       redis.call('ZADD', KEYS[1], string.format('%d', base + i), id)
                     end
                     return 1" 1 "$ready" "$jp" "$left" "$k" "$payload" >/dev/null
            left=$((left - k))
        done
    fi
    for batch in $batches; do
        for consumers in $consumers_list; do
            cycle_args=(EVALSHA "$sha_cycle" 2 "$ready" "$leased" "$jp" "$rid" "$batch" "$payload" __rand_int__)
            calib=$((batch == 1 ? 3000 : 100))
            rps="$(bench "$consumers" "$calib" "${cycle_args[@]}")"
            calls="$(python3 -c "print(max($calib, int($rps * $target)))")"
            echo "redis_ceiling: backlog $backlog c$consumers b$batch: calibration $rps calls/s -> -n $calls" >&2
            rates=() secs=() e_rates=() r_rates=() a_rates=() e_secs=() r_secs=() a_secs=() d_rates=()
            ops_calls=$((2 * calls))
            cap=$((500000 / batch))
            [ "$ops_calls" -gt "$cap" ] && ops_calls="$cap"
            for run in $(seq 1 "$runs"); do
                before="$(held)"
                rps="$(bench "$consumers" "$calls" "${cycle_args[@]}")"
                after="$(held)"
                if [ "$before" != "$after" ]; then
                    echo "redis_ceiling: a cycle run left $((after - before)) jobs behind" >&2
                    exit 1
                fi
                rates+=("$(python3 -c "print(round($rps * $batch, 1))")")
                secs+=("$(python3 -c "print($calls / $rps)")")
                echo "redis_ceiling: backlog $backlog c$consumers b$batch run $run: cycle $rps calls/s = ${rates[-1]} jobs/s" >&2
                if [ "$ops" = 1 ]; then
                    e="$(bench "$consumers" "$ops_calls" EVALSHA "$sha_enq" 1 "$ready" "$jp" "$rid" "$batch" "$payload")"
                    if [ "$(held)" != $((before + ops_calls * batch)) ]; then
                        echo "redis_ceiling: enqueue only stored $(($(held) - before)) jobs, not $((ops_calls * batch)) (id collisions?)" >&2
                        exit 1
                    fi
                    r="$(bench "$consumers" "$ops_calls" EVALSHA "$sha_res" 2 "$ready" "$leased" "$jp" "$batch" __rand_int__)"
                    a="$(bench "$consumers" "$ops_calls" EVALSHA "$sha_ack" 1 "$leased" "$jp" "$batch")"
                    if [ "$(held)" != "$before" ] || [ "$(rc ZCARD "$leased")" != 0 ]; then
                        echo "redis_ceiling: the step runs did not end where they started" >&2
                        exit 1
                    fi
                    read -r er rr ar dr es rs as < <(python3 -c "
b, n = $batch, $ops_calls
e, r, a = $e * b, $r * b, $a * b
print(round(e, 1), round(r, 1), round(a, 1), round(1 / (1 / e + 1 / r + 1 / a), 1), n / $e, n / $r, n / $a)")
                    e_rates+=("$er") r_rates+=("$rr") a_rates+=("$ar") d_rates+=("$dr")
                    e_secs+=("$es") r_secs+=("$rs") a_secs+=("$as")
                    echo "redis_ceiling: backlog $backlog c$consumers b$batch run $run: enqueue $er, reserve $rr, ack $ar jobs/s; 3-call cycle (derived) $dr jobs/s" >&2
                fi
            done
            emit cycle "$consumers" "$batch" "$backlog" "$calls" "${rates[*]}" "${secs[*]}" \
                "redis Lua ceiling (redis-benchmark, 1 EVALSHA per cycle)"
            if [ "$ops" = 1 ]; then
                emit enqueue "$consumers" "$batch" "$backlog" "$ops_calls" "${e_rates[*]}" "${e_secs[*]}" \
                    "redis Lua ceiling (redis-benchmark, enqueue only)"
                emit reserve "$consumers" "$batch" "$backlog" "$ops_calls" "${r_rates[*]}" "${r_secs[*]}" \
                    "redis Lua ceiling (redis-benchmark, reserve only)"
                emit ack "$consumers" "$batch" "$backlog" "$ops_calls" "${a_rates[*]}" "${a_secs[*]}" \
                    "redis Lua ceiling (redis-benchmark, ack only)"
                emit cycle-3-calls "$consumers" "$batch" "$backlog" "$ops_calls" "${d_rates[*]}" "${e_secs[*]}" \
                    "redis Lua ceiling (3 EVALSHAs per cycle, derived)"
            fi
        done
    done
done
