#!/usr/bin/env bash
# Benchmark (not a test): orch backup of a wide schema against pg_dump -Fc —
# N tables (default 2000), each with a serial primary key, a NOT NULL column, a
# CHECK, a default, an index and a comment, plus one sequence per table; the
# catalog's query count is what it measures, so the tables hold few rows.
#   tests/bench/many_tables.sh [TABLES] [ROUNDS]
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
