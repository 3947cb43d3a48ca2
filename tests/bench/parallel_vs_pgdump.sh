#!/usr/bin/env bash
# Benchmark (not a test): issue 11's figures in one run, on a throwaway cluster
# with ../shared/bench/make-bench-db.sql at SCALE, runs alternated, medians of
# ROUNDS, wall seconds and peak RSS (KiB, /usr/bin/time's %M):
#   backup:  orch backup --jobs 1/2/4  vs  pg_dump -Fc, pg_dump -Fd -j 2 (same gzip level)
#   restore: orch restore --jobs 1/2   vs  pg_restore -j 1/2 (the same pg_dump -Fc file), and of orch's
#            own backup (--jobs 1/2, and --jobs 2 --copy-format text: every row as text)
#   status:  orch status with N applied vs dbmate 2.36.0 status (npm package dbmate,
#            installed into $DBMATE_DIR, default /tmp/orch-bench-dbmate, when missing)
#   tests/bench/parallel_vs_pgdump.sh [SCALE] [ROUNDS] [N_MIGRATIONS]
# ORCH_BIN=/path/to/orch compares another build; SKIP_STATUS=1 leaves the status part out.
set -euo pipefail
cd "$(dirname "$0")/../.."
SCALE=${1:-1}
ROUNDS=${2:-3}
NMIG=${3:-1000}
ORCH=$(realpath "${ORCH_BIN:-build/orch}")
DATASET=${DATASET:-../shared/bench/make-bench-db.sql}
DBMATE_DIR=${DBMATE_DIR:-/tmp/orch-bench-dbmate}
WORK=$(mktemp -d /tmp/orch-bench-par-XXXXXX)
trap 'build/orch tests/pgcluster.lua stop "$WORK/pg" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
URL=$(build/orch tests/pgcluster.lua start "$WORK/pg" | grep -o 'postgresql://[^ ]*')
PORT=$(echo "$URL" | sed 's#.*:\([0-9]*\)/.*#\1#')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DB="postgresql://postgres@127.0.0.1:$PORT"
"$PGBIN/createdb" bench
echo "# orch: $ORCH ($("$ORCH" --version 2>&1 | head -1)); pg_dump: $("$PGBIN/pg_dump" --version); $(nproc) cores" >&2
echo "# building the dataset at scale $SCALE ..." >&2
"$PGBIN/psql" -q -v scale="$SCALE" -d bench -f "$DATASET" >/dev/null
"$PGBIN/psql" -XAtc "SELECT 'dataset ' || pg_size_pretty(pg_database_size('bench'))" -d bench >&2

declare -A T M C  # label -> "s1 s2 ...", "kib1 kib2 ...", CPU seconds (user + sys, of orch or the client only)
measure() { # label, command...
  local e m u s
  /usr/bin/time -o "$WORK/last.time" -f "%e %M %U %S" "${@:2}" > /dev/null 2> "$WORK/last.err" || { echo "failed: ${*:2}" >&2; cat "$WORK/last.err" >&2; exit 1; }
  read -r e m u s < "$WORK/last.time"
  T[$1]="${T[$1]:-} $e"
  M[$1]="${M[$1]:-} $m"
  C[$1]="${C[$1]:-} $(echo "$u + $s" | bc)"
}
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
report() { # label [baseline label]
  local t m c
  t=$(echo "${T[$1]}" | median); m=$(echo "${M[$1]}" | median); c=$(echo "${C[$1]}" | median)
  if [ -n "${2:-}" ]; then
    printf "%-22s %8.2fs  %6.1f MiB peak  client CPU %6.2fs  %5.2fx %s\n" "$1" "$t" "$(echo "$m / 1024" | bc -l)" "$c" "$(echo "$t / $(echo "${T[$2]}" | median)" | bc -l)" "$2"
  else
    printf "%-22s %8.2fs  %6.1f MiB peak  client CPU %6.2fs\n" "$1" "$t" "$(echo "$m / 1024" | bc -l)" "$c"
  fi
}

echo "# backup, $ROUNDS rounds alternated" >&2
for i in $(seq "$ROUNDS"); do
  rm -rf "$WORK"/b.* "$WORK/pgdir"
  measure pg_dump_Fc "$PGBIN/pg_dump" -Fc -d bench -f "$WORK/b.pg.dump"
  for j in 1 2 4; do
    measure "orch_backup_j$j" "$ORCH" backup --db "$DB/bench" --output "$WORK/b.orch$j.dump" --jobs $j --quiet
  done
  measure pg_dump_Fd_j2 "$PGBIN/pg_dump" -Fd -j 2 -d bench -f "$WORK/pgdir"
done
cp "$WORK/b.pg.dump" "$WORK/pg.dump"
echo "== backup at scale $SCALE (median of $ROUNDS)"
report pg_dump_Fc
report pg_dump_Fd_j2 pg_dump_Fc
for j in 1 2 4; do report "orch_backup_j$j" pg_dump_Fc; done
echo "size: pg_dump -Fc $(stat -c %s "$WORK/pg.dump"), pg_dump -Fd $(du -sb "$WORK/pgdir" | cut -f1), orch --jobs 1 $(stat -c %s "$WORK/b.orch1.dump"), --jobs 2 $(stat -c %s "$WORK/b.orch2.dump") bytes" \
  "($(echo "$(stat -c %s "$WORK/b.orch2.dump") / $(stat -c %s "$WORK/pg.dump")" | bc -l | cut -c1-5)x pg_dump -Fc)"

# orch restore of the pg_dump file proves it first (no manifest: every block inflated once before
# the first statement); of its own backup (orch backup --jobs 2, with its manifest) a SHA-256 does
echo "# restore, $ROUNDS rounds alternated" >&2
fresh() { "$PGBIN/dropdb" --if-exists "$1"; "$PGBIN/createdb" "$1"; }
for i in $(seq "$ROUNDS"); do
  for j in 1 2; do
    fresh r_pg; measure "pg_restore_j$j" "$PGBIN/pg_restore" -j $j -d r_pg "$WORK/pg.dump"
    fresh r_orch; measure "orch_restore_j$j" "$ORCH" restore "$WORK/pg.dump" --db "$DB/r_orch" --jobs $j --no-manifest --quiet
    fresh r_own; measure "orch_restore_own_j$j" "$ORCH" restore "$WORK/b.orch2.dump" --db "$DB/r_own" --jobs $j --quiet
  done
  # what the binary rows give: the same restore with every row sent as text, as pg_restore sends them
  fresh r_own; measure orch_restore_own_j2_text "$ORCH" restore "$WORK/b.orch2.dump" --db "$DB/r_own" --jobs 2 --copy-format text --quiet
done
echo "== restore at scale $SCALE (median of $ROUNDS): pg_restore and orch_restore of pg_dump's file, orch_restore_own of orch's backup"
report pg_restore_j1
report pg_restore_j2 pg_restore_j1
report orch_restore_j1 pg_restore_j1
report orch_restore_j2 pg_restore_j2
report orch_restore_own_j1 pg_restore_j1
report orch_restore_own_j2 pg_restore_j2
report orch_restore_own_j2_text pg_restore_j2

[ -n "${SKIP_STATUS:-}" ] && exit 0
echo "# status with $NMIG applied" >&2
if [ ! -x "$DBMATE_DIR/node_modules/.bin/dbmate" ]; then
  mkdir -p "$DBMATE_DIR" && (cd "$DBMATE_DIR" && npm install --no-audit --no-fund dbmate@2.36.0 >&2)
fi
DBMATE="$DBMATE_DIR/node_modules/.bin/dbmate"   # the npm command: node starts, then runs the binary below
DBMATE_NATIVE="$DBMATE_DIR/node_modules/@dbmate/linux-x64/bin/dbmate"
mkdir -p "$WORK/orchmig" "$WORK/dbmate/db/migrations"
for i in $(seq "$NMIG"); do
  body="CREATE TABLE t_$i (id int PRIMARY KEY, note text);
INSERT INTO t_$i VALUES ($i, 'row');"
  printf '%s\n' "$body" > "$WORK/orchmig/V${i}__step_$i.sql"
  printf -- '-- migrate:up\n%s\n\n-- migrate:down\nDROP TABLE t_%d;\n' "$body" "$i" > "$WORK/dbmate/db/migrations/$(printf '%014d' "$i")_step_$i.sql"
done
"$PGBIN/createdb" s_orch; "$PGBIN/createdb" s_dbmate
"$ORCH" migrate --db "$DB/s_orch" --dir "$WORK/orchmig" --quiet > /dev/null
(cd "$WORK/dbmate" && DATABASE_URL="$DB/s_dbmate?sslmode=disable" "$DBMATE" --no-dump-schema up > /dev/null)
for i in $(seq $((ROUNDS * 3))); do
  measure orch_status "$ORCH" status --db "$DB/s_orch" --dir "$WORK/orchmig"
  measure orch_validate "$ORCH" validate --db "$DB/s_orch" --dir "$WORK/orchmig"
  measure dbmate_status env -C "$WORK/dbmate" DATABASE_URL="$DB/s_dbmate?sslmode=disable" "$DBMATE" status
  [ -x "$DBMATE_NATIVE" ] && measure dbmate_native_status env -C "$WORK/dbmate" DATABASE_URL="$DB/s_dbmate?sslmode=disable" "$DBMATE_NATIVE" status
done
echo "== status with $NMIG applied (median of $((ROUNDS * 3)))"
report dbmate_status
[ -x "$DBMATE_NATIVE" ] && report dbmate_native_status dbmate_status
report orch_status dbmate_status
[ -x "$DBMATE_NATIVE" ] && report orch_status dbmate_native_status
report orch_validate dbmate_status
