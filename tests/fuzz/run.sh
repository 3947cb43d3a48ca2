#!/usr/bin/env bash
# Builds the archive reader's libFuzzer harness with clang in BUILD_DIR and
# runs it for SECONDS (default 25) from the committed seed corpus; fails on
# any finding (crash, sanitizer report, leak, timeout, allocation over the
# limit) and leaves the input that caused it in BUILD_DIR/findings/.
#   tests/fuzz/run.sh build/fuzz 300 -seed=1 -runs=10000   (what ctest's fuzz/pgarchive runs: the same inputs everywhere)
#   tests/fuzz/run.sh build/fuzz 25          (25 s from a random seed)
#   tests/fuzz/run.sh build/fuzz 600 -jobs=2  (a longer hunt; extra args go to libFuzzer)
set -euo pipefail
src="$(cd "$(dirname "$0")/../.." && pwd)"
bdir="${1:?usage: tests/fuzz/run.sh BUILD_DIR [SECONDS] [libFuzzer args...]}"
secs="${2:-25}"
shift 2 || shift $#
command -v clang > /dev/null || { echo "clang not found: run scripts/install-deps (Debian: clang, libclang-rt-14-dev)" >&2; exit 1; }
cmake -S "$src" -B "$bdir" -DCMAKE_C_COMPILER=clang -DORCH_FUZZ=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo > /dev/null
cmake --build "$bdir" --target fuzz_pgarchive -j2 > "$bdir/build.log" 2>&1 || { cat "$bdir/build.log" >&2; exit 1; }
# a scratch corpus: the seeds stay as committed, what the run learns stays in the build dir
work="$bdir/corpus"
mkdir -p "$work" "$bdir/findings"
cp "$src"/tests/fuzz/corpus/* "$work"/
# zstd may allocate its window (up to 2^27 bytes, its own default limit)
# when a frame declares it; everything else the reader allocates is bounded
# by the input's size, which -max_len caps.
exec "$bdir/fuzz_pgarchive" -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
  -malloc_limit_mb=160 -print_final_stats=1 -dict="$src/tests/fuzz/pgarchive.dict" \
  -artifact_prefix="$bdir/findings/" "$@" "$work"
