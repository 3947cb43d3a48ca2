#!/usr/bin/env bash
# Benchmark (not a test): orch backup/restore against pg_dump -Fc/pg_restore on
# ../shared/bench/make-bench-db.sql, same compression level, one connection,
# runs alternated in one session. Reports each run's wall time and peak RSS,
# then the medians and the ratios to pg_dump / pg_restore.
#   tests/bench/backup_vs_pgdump.sh [SCALE] [ROUNDS]
# ORCH_BIN=path     the orch measured (default build/orch)
# ORCH_BEFORE=path  a second orch (an older build) measured in the same rounds,
#                   alternated with the first, for before/after figures
set -euo pipefail
cd "$(dirname "$0")/../.."
SCALE=${1:-10}
ROUNDS=${2:-3}
ORCH=${ORCH_BIN:-build/orch}
BEFORE=${ORCH_BEFORE:-}
DATASET=${DATASET:-../shared/bench/make-bench-db.sql}
WORK=$(mktemp -d /tmp/orch-bench-XXXXXX)
trap 'build/orch tests/pgcluster.lua stop "$WORK/pg" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
URL=$(build/orch tests/pgcluster.lua start "$WORK/pg" | grep -o 'postgresql://[^ ]*')
PORT=$(echo "$URL" | sed 's#.*:\([0-9]*\)/.*#\1#')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
DB="postgresql://postgres@127.0.0.1:$PORT"
"$PGBIN/createdb" bench
echo "building the dataset at scale $SCALE ..." >&2
"$PGBIN/psql" -q -v scale="$SCALE" -d bench -f "$DATASET" >/dev/null
RESULTS="$WORK/results"
measure() { # label, command... : appends "label seconds peak_kib cpu_seconds" (the client's own CPU, user + system)
  local out
  out=$( { /usr/bin/time -f "%e %M %U %S" "${@:2}" > /dev/null; } 2>&1 | tail -1 | awk '{ printf "%s %s %.2f", $1, $2, $3 + $4 }' )
  echo "$1 $out" | tee -a "$RESULTS"
}
fresh() { "$PGBIN/dropdb" --if-exists "$1"; "$PGBIN/createdb" "$1"; }
for i in $(seq "$ROUNDS"); do
  measure orch_backup $ORCH backup --db "$DB/bench" --output "$WORK/orch.dump.$i" --quiet
  measure pg_dump "$PGBIN/pg_dump" -Fc -d bench -f "$WORK/pg.dump.$i"
  if [ -n "$BEFORE" ]; then measure before_backup $BEFORE backup --db "$DB/bench" --output "$WORK/before.dump.$i" --quiet; fi
done
echo "size orch $(stat -c %s "$WORK/orch.dump.1") pg_dump $(stat -c %s "$WORK/pg.dump.1")"
for i in $(seq "$ROUNDS"); do
  fresh r_orch; fresh r_pg
  measure orch_restore $ORCH restore "$WORK/orch.dump.1" --db "$DB/r_orch"
  measure pg_restore "$PGBIN/pg_restore" -d r_pg "$WORK/pg.dump.1"
  if [ -n "$BEFORE" ]; then fresh r_before; measure before_restore $BEFORE restore "$WORK/before.dump.1" --db "$DB/r_before"; fi
done
echo "--- medians of $ROUNDS rounds at scale $SCALE (wall seconds, peak RSS KiB, client CPU seconds)"
awk '{ t[$1] = t[$1] " " $2; m[$1] = m[$1] " " $3; u[$1] = u[$1] " " $4 }
  function median(s,   a, n, i, j, x) { n = split(s, a, " ");
    for (i = 2; i <= n; i++) { x = a[i]; for (j = i - 1; j >= 1 && a[j] + 0 > x + 0; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
  END {
    for (k in t) { med[k] = median(t[k]); rss[k] = median(m[k]); printf "%-15s %7.2f s %9d KiB %7.2f s cpu\n", k, med[k], rss[k], median(u[k]) }
    printf "ratio orch_backup / pg_dump       %.2f\n", med["orch_backup"] / med["pg_dump"]
    printf "ratio orch_restore / pg_restore   %.2f\n", med["orch_restore"] / med["pg_restore"]
    if ("before_backup" in med) {
      printf "ratio before_backup / pg_dump     %.2f\n", med["before_backup"] / med["pg_dump"]
      printf "ratio before_restore / pg_restore %.2f\n", med["before_restore"] / med["pg_restore"]
    }
  }' "$RESULTS"
