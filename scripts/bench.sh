#!/usr/bin/env bash
# `make bench`: builds the release binary and runs `imagejobs bench` against $DATABASE_URL, or
# against a fresh local cluster with durability on (fsync, synchronous_commit) like the peer
# benchmark's, stopped afterwards. BENCH_QUICK=1 runs the quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -c release --product imagejobs 2>&1 | tail -n 1
# The multi-process tests run the drills' worker, which also runs the benchmark's no-op jobs.
swift build -c release --product imagejobs-drill-worker 2>&1 | tail -n 1
bin=.build/release/imagejobs
started=0
if [ -z "${DATABASE_URL:-}" ]; then
    scripts/db.sh down >/dev/null 2>&1 || true
    eval "export $(PG_FSYNC=on scripts/db.sh up)"
    started=1
fi
trap '[ "$started" = 1 ] && scripts/db.sh down' EXIT
args=()
[ "${BENCH_QUICK:-0}" = 1 ] && args+=(--quick)
"$bin" bench "${args[@]}" "$@"
