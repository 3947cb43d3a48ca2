#!/usr/bin/env bash
# Benchmark (not a test): orch backup and restore of a wide schema against
# pg_dump -Fc and pg_restore — N tables (default 2000), each with a serial
# primary key, a NOT NULL column, a CHECK, a default, an index and a comment,
# plus one sequence per table; the per-object cost is what it measures (the
# catalog's query count in a backup, round trips and scheduling in a
# restore), so the tables hold few rows. Restores: pg_restore -j 1/2 and orch
# restore --jobs 1/2 of the same pg_dump -Fc file (and orch_restore_own: of
# orch's backup), into fresh databases.
#   tests/bench/many_tables.sh [TABLES] [ROUNDS]     (ORCH_BIN selects the binary)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-2000}
ROUNDS=${2:-3}
ORCH=${ORCH_BIN:-build/orch}
WORK=$(mktemp -d /tmp/orch-bench-XXXXXX)
trap 'build/orch tests/pgcluster.lua stop "$WORK/pg" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
URL=$($ORCH tests/pgcluster.lua start "$WORK/pg" | grep -o 'postgresql://[^ ]*')
PORT=$(echo "$URL" | sed 's#.*:\([0-9]*\)/.*#\1#')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
"$PGBIN/createdb" bench
echo "building $N tables ..." >&2
"$PGBIN/psql" -q -d bench -v n="$N" >/dev/null <<'SQL'
SELECT format('CREATE SEQUENCE s%s; CREATE TABLE t%s (id serial PRIMARY KEY, a text NOT NULL, b integer CHECK (b > 0), ' ||
  'c timestamptz DEFAULT now(), d bigint DEFAULT nextval(%L)); CREATE INDEX t%s_a ON t%s (a); ' ||
  'COMMENT ON TABLE t%s IS %L; INSERT INTO t%s (a, b) VALUES (''x'', 1), (''y'', 2)', i, i, 's' || i, i, i, i, 'table ' || i, i)
FROM generate_series(1, :n) i \gexec
SQL
measure() { # label, command... -> "label seconds peak_kib"
  local out
  out=$( { /usr/bin/time -f "%e %M" "${@:2}" > /dev/null; } 2>&1 | tail -1 )
  echo "$1 $out"
}
for i in $(seq "$ROUNDS"); do
  measure "orch_backup" $ORCH backup --db "postgresql://postgres@127.0.0.1:$PORT/bench" --output "$WORK/orch.dump.$i" --quiet
  measure "pg_dump" "$PGBIN/pg_dump" -Fc -d bench -f "$WORK/pg.dump.$i"
done
for i in $(seq "$ROUNDS"); do
  for j in 1 2; do
    "$PGBIN/dropdb" --if-exists r_pg; "$PGBIN/createdb" r_pg
    measure "pg_restore_j$j" "$PGBIN/pg_restore" -j $j -d r_pg "$WORK/pg.dump.1"
    "$PGBIN/dropdb" --if-exists r_orch; "$PGBIN/createdb" r_orch
    measure "orch_restore_j$j" $ORCH restore "$WORK/pg.dump.1" --db "postgresql://postgres@127.0.0.1:$PORT/r_orch" --jobs $j --no-manifest --quiet
    "$PGBIN/dropdb" --if-exists r_orch; "$PGBIN/createdb" r_orch
    measure "orch_restore_own_j$j" $ORCH restore "$WORK/orch.dump.1" --db "postgresql://postgres@127.0.0.1:$PORT/r_orch" --jobs $j --quiet
  done
done
