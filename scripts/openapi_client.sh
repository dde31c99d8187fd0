#!/usr/bin/env bash
# A client generated from the served /openapi.json by an outside generator
# (openapi-python-client, PyPI) lists lines and mints a key against
# `echorelay-server serve --demo` (scripts/generated_client.py). The
# generator must take the whole document without a warning.
#
#   scripts/openapi_client.sh
#
# Needs openapi-python-client (`pip install openapi-python-client==0.29.1`);
# builds the server if needed and runs a copy of it.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v openapi-python-client >/dev/null || { echo "openapi_client.sh: openapi-python-client is not installed (pip install openapi-python-client==0.29.1)" >&2; exit 2; }
cargo build --quiet -p echorelay-http --bin echorelay-server
target="${CARGO_TARGET_DIR:-target}"
work=$(mktemp -d)
cp "$target/debug/echorelay-server" "$work/echorelay-server"
server=""
trap '[[ -n $server ]] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
env -u DATABASE_URL "$work/echorelay-server" serve --demo --listen 127.0.0.1:0 >"$work/log" 2>/dev/null &
server=$!
for _ in $(seq 100); do grep -q 'listening on' "$work/log" && break; sleep 0.1; done
key=$(grep '^er_test_' "$work/log")
addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$work/log")
[[ -n $key && -n $addr ]] || { echo "openapi_client.sh: the server did not start" >&2; exit 2; }
curl -sf "http://$addr/openapi.json" -o "$work/openapi.json"
openapi-python-client generate --path "$work/openapi.json" --meta none \
  --output-path "$work/client/echorelay_client" >"$work/generate.log" 2>&1 \
  || { cat "$work/generate.log" >&2; exit 1; }
if grep -qiE 'warning|unable|error' "$work/generate.log"; then
  echo "openapi_client.sh: the generator did not take the whole document:" >&2
  cat "$work/generate.log" >&2
  exit 1
fi
python3 scripts/generated_client.py "$work/client" "http://$addr" "$key" demo
