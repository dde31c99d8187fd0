#!/usr/bin/env bash
# Starts a local S3-compatible server for the backup target tests: moto's
# server mode (PyPI, pinned below) on 127.0.0.1, and creates the buckets
# named as arguments (default: echorelay-test). Idempotent: a moto already
# answering on the port is left running, and an existing bucket is kept.
# Prints the endpoint on stdout and nothing else there; exports nothing.
#
#   scripts/s3_server.sh [bucket ...]
#   ECHORELAY_S3_PORT (default 9090) chooses the port.
#
# The tests then need (as .ci/run sets them):
#   ECHORELAY_S3_URL=s3://echorelay-test
#   AWS_ENDPOINT_URL=http://127.0.0.1:9090 AWS_ALLOW_HTTP=true
#   AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=us-east-1
# (moto accepts any keys; it does not check signatures.)
set -euo pipefail
MOTO_VERSION=5.2.6
port="${ECHORELAY_S3_PORT:-9090}"
endpoint="http://127.0.0.1:${port}"
log="${TMPDIR:-/tmp}/echorelay-moto-${port}.log"
if [ "$#" -eq 0 ]; then
  set -- echorelay-test
fi

# Answers as an S3 server (a bucket listing) on the port?
up() {
  curl -fsS -m 2 -o /dev/null "${endpoint}/" 2>/dev/null
}

if ! up; then
  if ! python3 -c "import moto, sys; sys.exit(moto.__version__ != '${MOTO_VERSION}')" 2>/dev/null \
    || ! command -v moto_server >/dev/null; then
    echo "s3_server: installing moto[server]==${MOTO_VERSION}" >&2
    python3 -m pip install --quiet --disable-pip-version-check "moto[server]==${MOTO_VERSION}" >&2
  fi
  echo "s3_server: starting moto ${MOTO_VERSION} on ${endpoint} (log: ${log})" >&2
  nohup moto_server -H 127.0.0.1 -p "${port}" >"${log}" 2>&1 </dev/null &
  for _ in $(seq 1 100); do
    up && break
    sleep 0.1
  done
  if ! up; then
    echo "s3_server: moto did not answer on ${endpoint}; its log:" >&2
    cat "${log}" >&2 || true
    exit 1
  fi
fi

for bucket in "$@"; do
  # PUT /bucket creates it; moto answers 409 BucketAlreadyOwnedByYou (or
  # 200 in us-east-1) when it exists: both are fine.
  code=$(curl -sS -m 5 -o /dev/null -w '%{http_code}' -X PUT "${endpoint}/${bucket}")
  case "$code" in
    200|409) ;;
    *) echo "s3_server: creating bucket ${bucket} answered HTTP ${code}" >&2; exit 1 ;;
  esac
done
echo "${endpoint}"
