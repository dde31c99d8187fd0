#!/usr/bin/env bash
# Issue 18: backup and restore throughput of a Postgres database of random
# (incompressible) bytes, in one run, side by side with
#   ceiling  a plain multipart upload / download of the same dump bytes
#            through the same object_store client (echorelay-store-s3's
#            `transfer` example: no encryption, no hashing, no read-back);
#   by hand  `pg_dump | age -r … | transfer put` and
#            `transfer get | age -d | pg_restore`;
#   restic   `pg_dump | restic backup --stdin` and
#            `restic dump … | pg_restore` (Debian's restic);
# to the local S3 server (moto, scripts/s3_server.sh) and to a directory.
#
#   scripts/bench_backup.sh            # RUNS=3, ROWS=1000000 (1 KiB each)
#
# Needs PostgreSQL on 127.0.0.1, age, restic, python3. Writes one JSON
# object per measurement to target/bench-backup/results.jsonl and prints
# the table (scripts/bench_backup_table.py). MB are 10^6 bytes of the
# plaintext dump.
set -euo pipefail
trap 'echo "bench_backup: failed at line $LINENO" >&2' ERR
cd "$(dirname "$0")/.."
root="$PWD"
runs="${RUNS:-3}"
rows="${ROWS:-1000000}"
pg="${PG_BASE:-postgres://root@127.0.0.1:5432}"
src="$pg/er_bench_backup"
dst_db=er_bench_restore
dst="$pg/$dst_db"
work="${BENCH_DIR:-/work/bench-backup}"
out="$root/target/bench-backup"
mkdir -p "$out" "$work"
results="$out/results.jsonl"
: > "$results"

export AWS_ENDPOINT_URL="$(scripts/s3_server.sh echorelay-bench)"
export AWS_ALLOW_HTTP=true AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
s3="s3://echorelay-bench"

echo "bench_backup: building (release)" >&2
cargo build --release --quiet -p echorelay-http --features backup --bin echorelay-server
cargo build --release --quiet -p echorelay-store-s3 --example transfer
bin="${CARGO_TARGET_DIR:-$root/target}/release/echorelay-server"
transfer="${CARGO_TARGET_DIR:-$root/target}/release/examples/transfer"

# The source: ROWS rows of 1 KiB from gen_random_bytes, made once.
if ! psql "$src" -qtAX -c "SELECT count(*) FROM blob" 2>/dev/null | grep -qx "$rows"; then
  echo "bench_backup: making the source database ($rows random rows)" >&2
  psql "$pg/postgres" -qX -c "DROP DATABASE IF EXISTS er_bench_backup" -c "CREATE DATABASE er_bench_backup"
  psql "$src" -qX -c "CREATE EXTENSION pgcrypto" \
    -c "CREATE TABLE blob (id int PRIMARY KEY, b bytea)" \
    -c "ALTER TABLE blob ALTER b SET STORAGE EXTERNAL" \
    -c "INSERT INTO blob SELECT g, gen_random_bytes(1024) FROM generate_series(1, $rows) g"
fi
psql "$src" -qX -c "VACUUM ANALYZE"
db_bytes=$(psql "$src" -qtAX -c "SELECT pg_database_size(current_database())")

# Keys, SECRET_KEY, the migrated schema the binary's `backup run` needs
# (it reads the audit heads).
age-keygen -o "$work/identity.txt" 2>/dev/null || true
recipient=$(age-keygen -y "$work/identity.txt")
export SECRET_KEY=6a4e66c27687161095467ef0a963538822927a9e557405703abffe6271b315f6
export ECHORELAY_BACKUP_RECIPIENTS="$recipient"
DATABASE_URL="$src" "$bin" migrate >/dev/null
export RESTIC_PASSWORD=bench-only

# The staged dump, for the ceiling (the same flags as PgDumpSource).
dump_flags=(--format=custom --no-owner --no-privileges --compress=1)
pg_dump "${dump_flags[@]}" --dbname "$src" > "$work/dump.fc"
dump_bytes=$(stat -c %s "$work/dump.fc")
echo "bench_backup: database $db_bytes bytes, dump $dump_bytes bytes" >&2

now() { date +%s.%N; }
record() { # system direction target seconds
  python3 -c 'import json,sys; s,d,t,sec,b=sys.argv[1:6]; print(json.dumps({"system":s,"direction":d,"target":t,"seconds":float(sec),"bytes":int(b),"mb_per_s":int(b)/1e6/float(sec)}))' \
    "$1" "$2" "$3" "$4" "$dump_bytes" | tee -a "$results" >&2
}
fresh_dst() {
  psql "$pg/postgres" -qX -c "DROP DATABASE IF EXISTS $dst_db WITH (FORCE)" -c "CREATE DATABASE $dst_db"
}
timed() { # system direction target command…
  local s=$1 d=$2 t=$3; shift 3
  local t0; t0=$(now)
  "$@"
  record "$s" "$d" "$t" "$(python3 -c "print($(now) - $t0)")"
}

for r in $(seq 1 "$runs"); do
  echo "bench_backup: run $r of $runs" >&2
  for kind in s3 file; do
    if [ "$kind" = s3 ]; then
      base="$s3/r$r"
      restic_repo="s3:$AWS_ENDPOINT_URL/echorelay-bench/restic-r$r"
    else
      rm -rf "$work/target-r$r" "$work/restic-r$r"
      mkdir -p "$work/target-r$r"/{ceiling,ours,hand}
      base="file://$work/target-r$r"
      restic_repo="$work/restic-r$r"
    fi

    # Ceiling: the staged dump up and down.
    timed ceiling backup "$kind" sh -c "'$transfer' put '$base/ceiling' dump.fc '$work/dump.fc' 2>/dev/null"
    timed ceiling restore "$kind" sh -c "'$transfer' get '$base/ceiling' dump.fc 2>/dev/null > /dev/null"

    # echorelay: backup run (pg_dump → age → upload, read back, manifest);
    # verify (download, authenticate, hash); restore (verify, then
    # download again into pg_restore --single-transaction).
    export ECHORELAY_BACKUP_URL="$base/ours"
    timed echorelay backup "$kind" sh -c "DATABASE_URL='$src' '$bin' backup run > /dev/null 2>&1"
    id=$("$bin" backup list 2>/dev/null | tail -1 | cut -f1)
    timed echorelay verify "$kind" sh -c "'$bin' backup verify -i '$work/identity.txt' '$id' > /dev/null 2>&1"
    fresh_dst
    timed echorelay restore "$kind" sh -c "DATABASE_URL='$dst' '$bin' backup restore -i '$work/identity.txt' '$id' > /dev/null 2>&1"

    # By hand: pg_dump | age | upload; download | age -d | pg_restore.
    timed by-hand backup "$kind" sh -c "pg_dump ${dump_flags[*]} --dbname '$src' | age -r '$recipient' | '$transfer' put '$base/hand' dump.fc.age - 2>/dev/null"
    fresh_dst
    timed by-hand restore "$kind" sh -c "'$transfer' get '$base/hand' dump.fc.age 2>/dev/null | age -d -i '$work/identity.txt' | pg_restore --single-transaction --exit-on-error --no-owner --no-privileges --dbname '$dst'"

    # restic: the same dump through restic (encrypted, deduplicated).
    restic -q -r "$restic_repo" init >/dev/null
    timed restic backup "$kind" sh -c "pg_dump ${dump_flags[*]} --dbname '$src' | restic -q -r '$restic_repo' backup --stdin --stdin-filename dump.fc > /dev/null"
    fresh_dst
    timed restic restore "$kind" sh -c "restic -q -r '$restic_repo' dump latest /dump.fc | pg_restore --single-transaction --exit-on-error --no-owner --no-privileges --dbname '$dst'"
    # and restic's own restore to a directory (no pg_restore), beside our verify.
    rm -rf "$work/restic-out"
    timed restic restore-files "$kind" restic -q -r "$restic_repo" restore latest --target "$work/restic-out"
    rm -rf "$work/restic-out"
    if [ "$kind" = s3 ]; then
      # moto keeps every object in memory: start it afresh for the next run.
      pkill -f "moto_server -H 127.0.0.1 -p ${ECHORELAY_S3_PORT:-9090}" || true
      sleep 1
      scripts/s3_server.sh echorelay-bench >/dev/null
    else
      rm -rf "$work/target-r$r" "$work/restic-r$r"
    fi
  done
done

# pg_dump and pg_restore alone (no transport): the floor every pipeline shares.
for r in $(seq 1 "$runs"); do
  timed pg_dump backup none sh -c "pg_dump ${dump_flags[*]} --dbname '$src' > /dev/null"
  fresh_dst
  timed pg_restore restore none pg_restore --single-transaction --exit-on-error --no-owner --no-privileges --dbname "$dst" "$work/dump.fc"
done

python3 scripts/bench_backup_table.py "$results"
