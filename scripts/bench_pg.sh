#!/usr/bin/env bash
# Issue 7's benchmarks, side by side with their reference in one run:
# pgbench -S (indexed primary-key reads) at 4 clients before and after the
# criterion benches of echorelay-store-pg, on the same server.
set -euo pipefail
cd "$(dirname "$0")/.."
export DATABASE_URL="${DATABASE_URL:-postgres://root@127.0.0.1:5432/test}"
schema=echorelay_pgbench
psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema"
ref() {
  PGOPTIONS="-c search_path=$schema" pgbench -n -S -c 4 -j 2 -T 15 "$DATABASE_URL" \
    | grep -E "^(tps|latency average)"
}
echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(psql -Atc 'show server_version' "$DATABASE_URL")"
echo "== date: $(date -u +%Y-%m-%dT%H:%MZ)"
PGOPTIONS="-c search_path=$schema" pgbench -q -i -s 10 "$DATABASE_URL" >/dev/null 2>&1
echo "== reference before: pgbench -S -c 4 -j 2 -T 15"
ref
echo "== criterion: cargo bench -p echorelay-store-pg --bench pg"
cargo bench -q -p echorelay-store-pg --bench pg 2>&1 | grep -E "^pg/|time:|pg bench:"
echo "== reference after: pgbench -S -c 4 -j 2 -T 15"
ref
psql -q "$DATABASE_URL" -c "DROP SCHEMA $schema CASCADE"
