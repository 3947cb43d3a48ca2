#!/usr/bin/env bash
# Benchmark (not a test): the gzip engine of orch backup against zlib, on the
# COPY text of ../shared/bench/make-bench-db.sql's tables at SCALE (dumped
# from a throwaway cluster): CPU seconds and bytes of zlib as pg_dump uses it,
# of libdeflate per chunk, of pdeflate's block walker and of pdeflate end to
# end (its output inflated back and compared), at LEVEL and CHUNK_KIB.
#   tests/bench/deflate_engines.sh [SCALE] [LEVEL] [CHUNK_KIB]
set -euo pipefail
cd "$(dirname "$0")/../.."
SCALE=${1:-10}
LEVEL=${2:-6}
CHUNK=${3:-256}
DATASET=${DATASET:-../shared/bench/make-bench-db.sql}
WORK=$(mktemp -d /tmp/orch-bench-deflate-XXXXXX)
trap 'build/orch tests/pgcluster.lua stop "$WORK/pg" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
cc -O2 -Wall -D_GNU_SOURCE -Isrc -o "$WORK/deflate_engines" tests/bench/deflate_engines.c src/pdeflate.c -ldeflate -lz -lpthread
URL=$(build/orch tests/pgcluster.lua start "$WORK/pg" | grep -o 'postgresql://[^ ]*')
PORT=$(echo "$URL" | sed 's#.*:\([0-9]*\)/.*#\1#')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
"$PGBIN/createdb" bench
echo "# building the dataset at scale $SCALE ..." >&2
"$PGBIN/psql" -q -v scale="$SCALE" -d bench -f "$DATASET" > /dev/null
files=()
for t in bench_accounts bench_events bench_blobs; do
  "$PGBIN/psql" -XAtc "COPY $t TO STDOUT" -d bench > "$WORK/$t.copy"
  files+=("$WORK/$t.copy")
done
echo "# $(uptime)"
"$WORK/deflate_engines" "$LEVEL" "$CHUNK" "${files[@]}"
