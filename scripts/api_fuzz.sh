#!/usr/bin/env bash
# Fuzzes every route from the OpenAPI document with schemathesis (PyPI),
# every check on (`--checks all`: no 5xx, and every answer, status, header
# and body as documented; every schema-valid request taken, every
# schema-violating one refused), authenticated with an owner API key:
#
#   - in memory: `echorelay-server serve --demo` (the demo project, whose
#     API keys may manage keys);
#   - on Postgres (DATABASE_URL set): a scratch schema, migrated, and an
#     owner made with `create-owner` (scripts/owner_key.py answers its
#     TOTP enrollment), project `demo`.
#
#   scripts/api_fuzz.sh [EXAMPLES_PER_OPERATION]   (default 30)
#
# Needs schemathesis (`pip install schemathesis==4.32.5`); builds the
# server (with Postgres) if needed and runs a copy of it, so a concurrent
# build of the target directory cannot swap the binary under the run.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-30}"
command -v st >/dev/null || { echo "api_fuzz.sh: schemathesis is not installed (pip install schemathesis==4.32.5)" >&2; exit 2; }
cargo build --quiet -p echorelay-http --features pg --bin echorelay-server
target="${CARGO_TARGET_DIR:-target}"
work=$(mktemp -d)
cp "$target/debug/echorelay-server" "$work/echorelay-server"
server=""
pg_url=""
cleanup() {
  [[ -n $server ]] && kill "$server" 2>/dev/null || true
  if [[ -n $pg_url ]]; then
    psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS echorelay_api_fuzz CASCADE" >/dev/null 2>&1 || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

# Serves with the environment given; sets $addr and $server.
start() {
  env "$@" "$work/echorelay-server" serve --listen 127.0.0.1:0 ${DEMO:+--demo} >"$work/log" 2>/dev/null &
  server=$!
  for _ in $(seq 100); do grep -q 'listening on' "$work/log" && break; sleep 0.1; done
  addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/log")
  [[ -n $addr ]] || { echo "api_fuzz.sh: the server did not start" >&2; exit 2; }
}

fuzz() {
  local store=$1 key=$2
  echo "api_fuzz.sh: $store store, http://$addr"
  # MCP's streamable HTTP transport needs this Accept; the other routes
  # answer JSON whatever it says.
  st --config-file scripts/schemathesis.toml run "http://$addr/openapi.json" \
    -H "Authorization: Bearer $key" \
    -H "Accept: application/json, text/event-stream" \
    --checks all \
    --max-examples "$examples" \
    --generation-deterministic
}

# In memory.
DEMO=1 start -u DATABASE_URL
key=$(grep '^er_test_' "$work/log")
fuzz memory "$key"
kill "$server"; wait "$server" 2>/dev/null || true; server=""

# Postgres, in a scratch schema.
if [[ -n ${DATABASE_URL:-} ]]; then
  pg_url=$DATABASE_URL
  PGOPTIONS=--client-min-messages=warning psql -q "$DATABASE_URL" -c "DROP SCHEMA IF EXISTS echorelay_api_fuzz CASCADE; CREATE SCHEMA echorelay_api_fuzz"
  sep='?'; [[ $DATABASE_URL == *\?* ]] && sep='&'
  url="$DATABASE_URL${sep}options=-c%20search_path%3Dechorelay_api_fuzz"
  secret=$("$work/echorelay-server" keygen)
  DATABASE_URL=$url SECRET_KEY=$secret "$work/echorelay-server" migrate >/dev/null
  key=$(DATABASE_URL=$url SECRET_KEY=$secret ECHORELAY_OWNER_PASSWORD="fuzz-$(openssl rand -hex 12)" \
    scripts/owner_key.py "$work/echorelay-server" fuzz@example.com demo)
  DEMO="" start DATABASE_URL="$url" SECRET_KEY="$secret"
  fuzz postgres "$key"
else
  echo "api_fuzz.sh: DATABASE_URL is not set: Postgres not fuzzed" >&2
  [[ ${ECHORELAY_REQUIRE_SERVICES:-} == 1 ]] && exit 1
fi
