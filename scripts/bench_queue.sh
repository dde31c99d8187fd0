#!/usr/bin/env bash
# Issue 17: every queue figure of BENCHMARKS.md in one run, in this order:
# echorelay's own cycle (criterion, benches/queue.rs) on memory, Postgres
# (backlogs 0, 1k, 100k, 1M) and Redis (backlogs 0, 5k, 50k); then the
# ceilings on the same servers (pgbench, redis-benchmark) and the peers
# (pgqueuer, apalis-postgres, apalis-redis). Then the table.
#
#   scripts/bench_queue.sh            # ~30 min on 2 cores; nothing else running
#
# Needs: PostgreSQL and Redis on 127.0.0.1 (DATABASE_URL, REDIS_URL), the
# pgqueuer venv (scripts/queue_bench/README.md: /work/peers-venv).
# Output: target/bench-queue/peers.jsonl (ceilings and peers, one JSON
# object per line), target/criterion/queue_* (ours), and the markdown
# table on stdout (scripts/bench_queue_table.py).
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://root@127.0.0.1:5432/test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
out=target/bench-queue
mkdir -p "$out"
: > "$out/peers.jsonl"
venv="${PEERS_VENV:-/work/peers-venv}"

echo "bench_queue: $(date -u +%FT%TZ) echorelay (criterion)" >&2
cargo bench --features pg,redis --bench queue >&2

echo "bench_queue: $(date -u +%FT%TZ) Postgres ceiling (pgbench)" >&2
RUNS=3 DURATION=5 BACKLOGS="0 1000 100000 1000000" scripts/queue_bench/pg_ceiling.sh >> "$out/peers.jsonl"
echo "bench_queue: $(date -u +%FT%TZ) Redis ceiling (redis-benchmark)" >&2
RUNS=3 BACKLOGS="0 5000 50000" scripts/queue_bench/redis_ceiling.sh >> "$out/peers.jsonl"
echo "bench_queue: $(date -u +%FT%TZ) pgqueuer" >&2
"$venv/bin/python" scripts/queue_bench/pgqueuer_bench.py --runs 3 --jobs 5000 --mode drain >> "$out/peers.jsonl"
"$venv/bin/python" scripts/queue_bench/pgqueuer_bench.py --runs 3 --jobs 50000 --batch 100 --mode drain >> "$out/peers.jsonl"
echo "bench_queue: $(date -u +%FT%TZ) apalis-postgres, apalis-redis" >&2
scripts/queue_bench/apalis_peers.sh --runs 3 >> "$out/peers.jsonl"
echo "bench_queue: $(date -u +%FT%TZ) done" >&2
python3 scripts/bench_queue_table.py
