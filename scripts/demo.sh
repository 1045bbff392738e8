#!/usr/bin/env bash
# `make demo`: start the local PostgreSQL (unless DATABASE_URL is set), migrate, and show the
# schema status. Later issues grow this into the end-to-end image generation demo.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build -q 2>/dev/null || swift build
bin="$(swift build --show-bin-path)/imagejobs"
if [ -z "${DATABASE_URL:-}" ]; then
    eval "export $(scripts/db.sh up)"
fi
"$bin" migrate up
"$bin" migrate status
echo
echo "The local cluster keeps running for you: DATABASE_URL=$DATABASE_URL"
echo "Stop it with: make db-down"
