#!/usr/bin/env bash
# Fuzzes every route from the OpenAPI document with schemathesis (PyPI),
# against `echorelay-server serve --demo` (in memory), authenticated with
# the demo owner key: any 5xx answer fails the run.
#
#   scripts/api_fuzz.sh [EXAMPLES_PER_OPERATION]   (default 30)
#
# Needs schemathesis (`pip install schemathesis==4.32.5`); builds the
# server if needed.
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-30}"
command -v st >/dev/null || { echo "api_fuzz.sh: schemathesis is not installed (pip install schemathesis==4.32.5)" >&2; exit 2; }
cargo build --quiet -p echorelay-http --bin echorelay-server
log=$(mktemp)
env -u DATABASE_URL target/debug/echorelay-server serve --demo --listen 127.0.0.1:0 >"$log" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true; rm -f "$log"' EXIT
for _ in $(seq 50); do grep -q 'listening on' "$log" && break; sleep 0.1; done
key=$(grep '^er_test_' "$log")
addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$log")
[[ -n $key && -n $addr ]] || { echo "api_fuzz.sh: the server did not start" >&2; exit 2; }
st --config-file scripts/schemathesis.toml run "http://$addr/openapi.json" \
  -H "Authorization: Bearer $key" \
  --checks not_a_server_error \
  --max-examples "$examples" \
  --generation-deterministic
