#!/usr/bin/env bash
# The served security.txt checked by an independent parser: sectxt (PyPI,
# the Dutch DigitalTrustCenter's RFC 9116 validator). Starts
# `echorelay-server serve --security-txt` with a file expiring in 180
# days and fails on any sectxt error.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -c 'import sectxt' 2>/dev/null || { echo "security_txt_interop.sh: pip install sectxt==0.9.8" >&2; exit 2; }
cargo build --quiet -p echorelay-http --bin echorelay-server
dir=$(mktemp -d)
expires=$(date -u -d '+180 days' +%Y-%m-%dT%H:%M:%SZ)
cat >"$dir/security.txt" <<TXT
# The operator's file.
Contact: mailto:security@example.com
Contact: https://example.com/report
Expires: $expires
Encryption: https://example.com/pgp-key.txt
Acknowledgments: https://example.com/hall-of-fame
Preferred-Languages: en, de
Canonical: https://relay.example.com/.well-known/security.txt
Policy: https://example.com/security-policy
TXT
env -u DATABASE_URL "${CARGO_TARGET_DIR:-target}/debug/echorelay-server" serve --listen 127.0.0.1:0 --security-txt "$dir/security.txt" >"$dir/log" 2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do grep -q 'listening on' "$dir/log" && break; sleep 0.1; done
addr=$(sed -n 's/.*listening on http:\/\/\([^ ]*\).*/\1/p' "$dir/log")
curl -sf -D "$dir/headers" "http://$addr/.well-known/security.txt" -o "$dir/served"
grep -qi '^content-type: text/plain; charset=utf-8' "$dir/headers" || { echo "wrong content type" >&2; exit 1; }
python3 - "$dir/served" <<'PY'
import sys
from sectxt import Parser
p = Parser(open(sys.argv[1], "rb").read(), urls="https://relay.example.com/.well-known/security.txt")
print("sectxt: valid" if p.is_valid() else "sectxt: INVALID", "errors:", p.errors)
print("sectxt recommendations:", [r["code"] for r in p.recommendations])
sys.exit(0 if p.is_valid() and not p.errors else 1)
PY
