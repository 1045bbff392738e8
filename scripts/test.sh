#!/usr/bin/env bash
# `make test`: build, start a throwaway cluster unless DATABASE_URL is set, run every test, the
# fault drills, the examples and `make demo`, and stop the cluster even when the tests fail.
set -euo pipefail
cd "$(dirname "$0")/.."

started=0
cleanup() {
    scripts/db.sh tls-down || true
    if [ "$started" = 1 ]; then scripts/db.sh down || true; fi
}
trap cleanup EXIT

if [ -z "${DATABASE_URL:-}" ]; then
    scripts/db.sh down >/dev/null 2>&1 || true
    eval "export $(scripts/db.sh up)"
    started=1
fi
# A second, TLS-only cluster with a local CA for the sslmode=verify-full tests.
eval "export $(scripts/db.sh tls-up)"
echo "tests use $(echo "$DATABASE_URL" | sed -E 's#//([^:@/]+):[^@/]*@#//\1:***@#')"

python3 scripts/embed-migrations.py >/dev/null
if ! git diff --quiet -- Sources/JobEngine/Generated 2>/dev/null; then
    echo "Sources/JobEngine/Generated is out of date with migrations/: run 'make generate' and commit" >&2
    exit 1
fi

swift build
IMAGEJOBS_BIN="$(swift build --show-bin-path)/imagejobs"
IMAGEJOBS_DRILL_WORKER_BIN="$(swift build --show-bin-path)/imagejobs-drill-worker"
export IMAGEJOBS_BIN IMAGEJOBS_DRILL_WORKER_BIN
# A Python with psycopg: the tests enqueue through a SQL client this project did not write.
IMAGEJOBS_PYTHON="$(scripts/python-env.sh)"
export IMAGEJOBS_PYTHON
scripts/compose-check.sh
# The million-job dashboard test loads the database for half a minute: it runs after the
# parallel tests, alone, so their leases and timeouts never compete with it.
swift test --skip DashboardScaleTests
echo "== the dashboard at a million jobs"
swift test --skip-build --filter DashboardScaleTests
# The fault drills restart and crash the server, so they run after the parallel tests, alone.
echo "== fault drills (imagejobs-chaos)"
"$(swift build --show-bin-path)/imagejobs-chaos" --worker-bin "$IMAGEJOBS_DRILL_WORKER_BIN" --pg-ctl "scripts/db.sh ctl" \
    --jobs "${CHAOS_JOBS:-5000}" --workers 4 --seed "${CHAOS_SEED:-$(date +%s)}"
# The packages a team would copy, built and run against databases of their own.
scripts/examples.sh
# The main job, end to end, in the database's default schema as a user runs it.
echo "== make demo"
scripts/demo.sh
