#!/usr/bin/env bash
# Benchmark (not a test): orch backup/restore against pg_dump -Fc/pg_restore on
# ../shared/bench/make-bench-db.sql, same compression level, one connection,
# runs alternated in one session. Reports wall time, archive size and peak RSS.
#   tests/bench/backup_vs_pgdump.sh [SCALE] [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/../.."
SCALE=${1:-10}
ROUNDS=${2:-3}
ORCH=${ORCH_BIN:-build/orch}
DATASET=${DATASET:-../shared/bench/make-bench-db.sql}
WORK=$(mktemp -d /tmp/orch-bench-XXXXXX)
trap 'build/orch tests/pgcluster.lua stop "$WORK/pg" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
URL=$($ORCH tests/pgcluster.lua start "$WORK/pg" | grep -o 'postgresql://[^ ]*')
PORT=$(echo "$URL" | sed 's#.*:\([0-9]*\)/.*#\1#')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
"$PGBIN/createdb" bench
echo "building the dataset at scale $SCALE ..." >&2
"$PGBIN/psql" -q -v scale="$SCALE" -d bench -f "$DATASET" >/dev/null
measure() { # label, command... -> "seconds peak_kib"
  local out
  out=$( { /usr/bin/time -f "%e %M" "${@:2}" > /dev/null; } 2>&1 | tail -1 )
  echo "$1 $out"
}
rm -f "$WORK"/*.dump
for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK/orch" "$WORK/pg.dump"
  measure "orch_backup" $ORCH backup --db "postgresql://postgres@127.0.0.1:$PORT/bench" --output "$WORK/orch.dump.$i" --quiet
  measure "pg_dump" "$PGBIN/pg_dump" -Fc -d bench -f "$WORK/pg.dump.$i"
done
echo "size orch $(stat -c %s "$WORK/orch.dump.1") pg_dump $(stat -c %s "$WORK/pg.dump.1")"
for i in $(seq "$ROUNDS"); do
  "$PGBIN/dropdb" --if-exists r_orch; "$PGBIN/createdb" r_orch
  "$PGBIN/dropdb" --if-exists r_pg; "$PGBIN/createdb" r_pg
  measure "orch_restore" $ORCH restore "$WORK/orch.dump.1" --db "postgresql://postgres@127.0.0.1:$PORT/r_orch"
  measure "pg_restore" "$PGBIN/pg_restore" -d r_pg "$WORK/pg.dump.1"
done
