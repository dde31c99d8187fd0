#!/usr/bin/env bash
# Issue 17 peers: apalis-postgres and apalis-redis 1.0.0. Builds the
# standalone crate benches/peers (release, -j1, its own target dir; not a
# member of the echorelay workspace), makes its scratch database, and runs
# it; every argument is passed on (see `--help`). One JSON object per
# line on stdout, progress on stderr. See README.md beside this file.
#
#   scripts/queue_bench/apalis_peers.sh                      # 5 runs each
#   scripts/queue_bench/apalis_peers.sh --runs 2 --model both
#
# Environment: CARGO_TARGET_DIR [/work/peers-target]
#   APALIS_PG_URL [postgres://postgres@127.0.0.1:5432/bench_apalis]
#   APALIS_REDIS_URL [redis://127.0.0.1:6379/]
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-/work/peers-target}"
pg_url="${APALIS_PG_URL:-postgres://postgres@127.0.0.1:5432/bench_apalis}"

# apalis-postgres's queries are checked at compile time against the
# .sqlx data it ships: never against a live DATABASE_URL.
SQLX_OFFLINE=true cargo build --release -j1 --quiet \
    --manifest-path "$root/benches/peers/Cargo.toml" >&2

db="${pg_url##*/}"
db="${db%%\?*}"
base="${pg_url%/*}"
psql "$base/postgres" -qtAX -c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1 \
    || psql "$base/postgres" -qX -c "CREATE DATABASE \"$db\"" >/dev/null

exec "$CARGO_TARGET_DIR/release/echorelay-queue-peers" --pg-url "$pg_url" "$@"
