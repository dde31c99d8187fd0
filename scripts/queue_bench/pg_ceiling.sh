#!/usr/bin/env bash
# Issue 17: the Postgres raw-SQL ceiling of one queue cycle (enqueue ->
# reserve -> ack), measured with pgbench on echorelay's own table
# (echorelay-store-pg/migrations/0004_queue.sql) in a scratch database.
#
# Prints one JSON object per line on stdout per (backlog, consumers,
# batch); progress goes to stderr. See README.md beside this file.
#
#   scripts/queue_bench/pg_ceiling.sh                # 5 runs x 10 s each
#   RUNS=2 DURATION=3 scripts/queue_bench/pg_ceiling.sh  # smoke test
#
# Environment (defaults in brackets):
#   PGHOST [127.0.0.1] PGPORT [5432] PGUSER [postgres]
#   BENCH_DB [bench_queue_ceiling]  created if missing; its queue_jobs
#                                   table is dropped and re-created
#   RUNS [5]  DURATION [10] seconds per pgbench run (-T)
#   CONSUMERS ["1 8"]  BATCHES ["1 100"]  BACKLOGS ["0"] e.g. "0 1000 100000"
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
migration="$root/echorelay-store-pg/migrations/0004_queue.sql"

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
db="${BENCH_DB:-bench_queue_ceiling}"
runs="${RUNS:-5}"
duration="${DURATION:-10}"
consumers_list="${CONSUMERS:-1 8}"
batches="${BATCHES:-1 100}"
backlogs="${BACKLOGS:-0}"

pgbench_bin="$(command -v pgbench || ls /usr/lib/postgresql/*/bin/pgbench 2>/dev/null | tail -1)"
[ -x "$pgbench_bin" ] || { echo "pg_ceiling: pgbench not found" >&2; exit 1; }

q() { psql -d "$db" -v ON_ERROR_STOP=1 -qtAX -c "$1"; }

psql -d postgres -qtAX -c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || createdb "$db"

server_version="$(q 'SHOW server_version')"
pgbench_version="$("$pgbench_bin" --version | awk '{print $3}')"
sync_commit="$(q 'SHOW synchronous_commit')"

for backlog in $backlogs; do
    echo "pg_ceiling: backlog $backlog: fresh queue_jobs from $(basename "$migration")" >&2
    q "DROP TABLE IF EXISTS queue_jobs"
    psql -d "$db" -v ON_ERROR_STOP=1 -qX -f "$migration" >/dev/null
    if [ "$backlog" -gt 0 ]; then
        # Older than anything a cycle enqueues, so cycles reserve these
        # first; every cycle enqueues as many as it acks, so the backlog
        # keeps its size (as in benches/queue.rs).
        q "INSERT INTO queue_jobs (id, queue, state, run_at, attempts, max_attempts, payload, enqueued_at)
           SELECT uuid_send(gen_random_uuid()), 'bench', 'ready',
                  now() - interval '1 hour' + i * interval '1 microsecond', 0, 5,
                  '\\x7b226576656e74223a2262656e6368222c226e223a317d'::bytea, now()
           FROM generate_series(1, $backlog) AS i"
    fi
    for batch in $batches; do
        case "$batch" in
            1) script="$here/pg_cycle_single.sql" ;;
            100) script="$here/pg_cycle_batch100.sql" ;;
            *) echo "pg_ceiling: batch must be 1 or 100" >&2; exit 2 ;;
        esac
        for consumers in $consumers_list; do
            threads=1
            [ "$consumers" -ge 8 ] && threads=2
            rates=()
            counts=()
            for run in $(seq 1 "$runs"); do
                # Start each run from the same state: no leases left from
                # the last one, exactly `backlog` waiting jobs, vacuumed.
                q "DELETE FROM queue_jobs WHERE lease_nonce IS NOT NULL" >/dev/null
                q "DELETE FROM queue_jobs WHERE id IN (SELECT id FROM queue_jobs
                     ORDER BY run_at DESC
                     LIMIT greatest((SELECT count(*) FROM queue_jobs) - $backlog, 0))" >/dev/null
                q "VACUUM ANALYZE queue_jobs" >/dev/null
                before="$(q 'SELECT count(*) FROM queue_jobs')"
                out="$("$pgbench_bin" -n -M prepared -c "$consumers" -j "$threads" \
                    -T "$duration" -f "$script" "$db" 2>&1)" || {
                    echo "$out" >&2
                    echo "pg_ceiling: pgbench failed" >&2
                    exit 1
                }
                after="$(q 'SELECT count(*) FROM queue_jobs')"
                txns="$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")"
                failed="$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")"
                tps="$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' <<<"$out")"
                if [ -z "$txns" ] || [ -z "$tps" ] || [ "${failed:-0}" != 0 ]; then
                    echo "$out" >&2
                    echo "pg_ceiling: could not read pgbench's result (or failed transactions)" >&2
                    exit 1
                fi
                # Completed cycles: enqueued (txns x batch) less what is
                # still in the table (reserved but not acked, or never
                # reserved); pgbench's seconds = txns / tps.
                read -r rate done_jobs < <(python3 -c "
txns, tps, batch, left = $txns, $tps, $batch, $after - $before
done = txns * batch - left
print(f'{done / (txns / tps):.1f} {done}')")
                echo "pg_ceiling: backlog $backlog c$consumers b$batch run $run: $txns txns, tps $tps, $done_jobs jobs, $rate jobs/s (left in table: $((after - before)))" >&2
                rates+=("$rate")
                counts+=("$done_jobs")
            done
            python3 - "$backlog" "$consumers" "$batch" "$duration" "$server_version" "$pgbench_version" "$sync_commit" \
                "${rates[*]}" "${counts[*]}" <<'PY'
import json, statistics, sys
backlog, consumers, batch, duration = map(int, sys.argv[1:5])
server, pgbench, sync_commit = sys.argv[5:8]
rates = [float(x) for x in sys.argv[8].split()]
counts = [int(x) for x in sys.argv[9].split()]
med = statistics.median(rates)
print(json.dumps({
    "system": "postgres raw SQL ceiling (pgbench)",
    "backend": "postgres",
    "consumers": consumers,
    "batch": batch,
    "jobs": counts[rates.index(min(rates, key=lambda r: abs(r - med)))],
    "backlog": backlog,
    "jobs_per_s": rates,
    "median": round(med, 1),
    "jobs_per_run": counts,
    "seconds_per_run": duration,
    "server": f"PostgreSQL {server}",
    "tool": f"pgbench {pgbench} -M prepared -c {consumers} -j {1 if consumers < 8 else 2} -T {duration}",
    "synchronous_commit": sync_commit,
}))
PY
        done
    done
done
