#!/usr/bin/env bash
# Benchmark (not a test): orch backup of one big table to local disk against
# the same backup streamed into S3-compatible storage (s3rver, the test server
# that scripts/install-deps installs), then verify and restore from S3:
# seconds and peak RSS of each. s3rver's own ingest (Node.js, writing files and
# MD5s) is the ceiling of the S3 figures; a real S3 endpoint is another matter.
#   tests/bench/s3_upload.sh [ROWS] [COMPRESS] [PART_SIZE]    (defaults: 1500000 none 16MiB)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROWS=${1:-1500000}
COMPRESS=${2:-none}
export ORCH_S3_PART_SIZE=${3:-16MiB}
ORCH=${ORCH_BIN:-build/orch}
S3RVER=.orch/test-tools/s3rver/node_modules/.bin/s3rver
[ -x "$S3RVER" ] || { echo "no $S3RVER: run scripts/install-deps" >&2; exit 1; }
WORK=$(mktemp -d /tmp/orch-bench-XXXXXX)
S3PID=
trap '[ -n "$S3PID" ] && kill $S3PID; $ORCH tests/pgcluster.lua stop "$WORK/pg" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
URL=$($ORCH tests/pgcluster.lua start "$WORK/pg" | grep -o 'postgresql://[^ ]*')
PORT=$(echo "$URL" | sed 's#.*:\([0-9]*\)/.*#\1#')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
"$PGBIN/createdb" bench
echo "building a table of $ROWS rows ..." >&2
"$PGBIN/psql" -q -d bench -c "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g*3)::text) || md5((g*7)::text) AS v, now() AS at FROM generate_series(1, $ROWS) g"
mkdir -p "$WORK/s3"
"$S3RVER" -d "$WORK/s3" -a 127.0.0.1 -p 0 --configure-bucket bench > "$WORK/s3rver.log" 2>&1 &
S3PID=$!
for i in $(seq 100); do grep -q listening "$WORK/s3rver.log" && break; sleep 0.1; done
export AWS_ENDPOINT_URL=http://$(grep -o '127.0.0.1:[0-9]*' "$WORK/s3rver.log") AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
DB="postgresql://postgres@127.0.0.1:$PORT/bench"
measure() { # label, command... -> "label seconds peak_kib"
  local out
  out=$( { /usr/bin/time -f "%e %M" "${@:2}" > /dev/null; } 2>&1 | tail -1 )
  echo "$1 $out"
}
echo "label seconds peak_rss_kib   (compress $COMPRESS, part size $ORCH_S3_PART_SIZE)"
measure backup_to_disk $ORCH backup --db "$DB" --dir "$WORK/disk" --compress "$COMPRESS" --no-prune --quiet
measure backup_to_s3 $ORCH backup --db "$DB" --dir s3://bench/b --compress "$COMPRESS" --no-prune --quiet
KEY=$($ORCH backups list --dir s3://bench/b --json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["path"])')
ls -l "$WORK"/disk/*.dump | awk '{printf "archive_bytes %s\n", $5}'
measure verify_s3_streamed $ORCH verify "$KEY"
"$PGBIN/createdb" r1
measure restore_from_s3 $ORCH restore "$KEY" --db "postgresql://postgres@127.0.0.1:$PORT/r1"
"$PGBIN/createdb" r4
measure restore_from_s3_jobs4 $ORCH restore "$KEY" --db "postgresql://postgres@127.0.0.1:$PORT/r4" --jobs 4
