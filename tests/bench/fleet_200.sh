#!/usr/bin/env bash
# Benchmark (not a test): orch fleet over N databases (default 200) of a
# throwaway cluster, each a tenant with a tiny migration, found by a query
# (targets = { query = ... }). Prints the rollout's wall time, the peak
# resident memory of the fleet process and of its largest child, and the
# most connections the tenants' databases had at once (sampled every 0.2 s).
#   tests/bench/fleet_200.sh [N] [PARALLEL] [RECIPE]     (RECIPE default recipes/prod.lua)
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-200}
PAR=${2:-4}
RECIPE=$(realpath "${3:-recipes/prod.lua}")
ORCH=$(realpath "${ORCH_BIN:-build/orch}")
WORK=$(mktemp -d /tmp/orch-bench-fleet-XXXXXX)
trap '[ -n "${SAMPLER:-}" ] && kill "$SAMPLER" 2>/dev/null; $ORCH tests/pgcluster.lua stop "$WORK/pg" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
URL=$($ORCH tests/pgcluster.lua start "$WORK/pg" | grep -o 'postgresql://[^ ]*')
PORT=$(echo "$URL" | sed 's#.*:\([0-9]*\)/.*#\1#')
export PGHOST=127.0.0.1 PGPORT=$PORT PGUSER=postgres
PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
echo "creating $N databases ..." >&2
t0=$(date +%s.%N)
"$PGBIN/psql" -X -q -d postgres -v n="$N" >/dev/null <<'SQL'
SELECT format('CREATE DATABASE %I STRATEGY FILE_COPY', 'tenant_' || lpad(i::text, 4, '0')) FROM generate_series(1, :n) i \gexec
SQL
echo "created in $(echo "$(date +%s.%N) - $t0" | bc) s" >&2
mkdir -p "$WORK/project/migrations"
cd "$WORK/project"
echo "CREATE TABLE tickets (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, title text NOT NULL);" > migrations/V1__tickets.sql
echo "ALTER TABLE tickets ADD COLUMN tenant text NOT NULL DEFAULT '\${tenant}';" > migrations/V2__tenant.sql
# a recipe works in its own project: link it into this one
mkdir -p recipes && ln -s "$RECIPE" recipes/ && RECIPE="$WORK/project/recipes/$(basename "$RECIPE")"
cat > orch.env.lua <<'LUA'
return {
  tenants = { database = { env = "BENCH_SERVER" }, protected = true, backups = { dir = "backups", keep = 2 },
    placeholders = { tenant = "?" },
    targets = { query = [[SELECT datname AS name, datname AS dbname, upper(datname) AS tenant
                          FROM pg_database WHERE datname LIKE 'tenant\_%' ORDER BY 1]] } },
}
LUA
# the connections to the tenants' databases, sampled while the rollout runs
( max=0; while true; do
    n=$("$PGBIN/psql" -X -At -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE datname LIKE 'tenant\_%'" 2>/dev/null || echo 0)
    [ "$n" -gt "$max" ] && max=$n && echo "$max" > "$WORK/maxconn"
    sleep 0.2
  done ) &
SAMPLER=$!
echo "rolling $(basename "$RECIPE") over $N databases, --parallel $PAR ..." >&2
set +e
/usr/bin/time -f "%e %M" -o "$WORK/time" env BENCH_SERVER="$URL" "$ORCH" fleet "$RECIPE" --env tenants --parallel "$PAR" --yes --json \
  > "$WORK/report.json" 2> "$WORK/fleet.err"
code=$?
set -e
kill "$SAMPLER" 2>/dev/null || true
read -r secs rss < "$WORK/time"
python3 - "$WORK/report.json" "$code" "$secs" "$rss" "$(cat "$WORK/maxconn" 2>/dev/null || echo 0)" "$N" "$PAR" <<'PY'
import json, sys
rep = json.load(open(sys.argv[1]))
code, secs, rss, conns, n, par = sys.argv[2:8]
child = max((t.get("maxrss_kb") or 0) for t in rep["targets"])
print(f"fleet over {n} databases, --parallel {par}: exit {code}, {rep['counts']}")
print(f"  wall time {secs} s (fleet's own {rep['seconds']:.1f} s), peak {rep['peak_running']} targets at once")
print(f"  peak RSS: fleet process {rep['maxrss_kb']} KiB; largest child {child} KiB; /usr/bin/time %M {rss} KiB")
print(f"  most connections to the tenants' databases at once: {conns}")
PY
[ "$code" = 0 ] || { tail -20 "$WORK/fleet.err"; exit 1; }
