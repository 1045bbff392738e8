#!/usr/bin/env bash
# Builds and runs every package under Examples/ against a database of its own on the cluster
# DATABASE_URL points at (created here, dropped afterwards). Each example exits 0 when what it
# shows worked.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DATABASE_URL:?set DATABASE_URL (a role that may create databases)}"
for dir in Examples/*/; do
    name=$(basename "$dir")
    database="example_$(echo "$name" | tr '[:upper:]' '[:lower:]')"
    echo "== example $name"
    swift build --package-path "$dir" 2>&1 | tail -1
    psql -X -q "$DATABASE_URL" -c "DROP DATABASE IF EXISTS $database" -c "CREATE DATABASE $database"
    url=$(echo "$DATABASE_URL" | sed -E "s#^(postgres(ql)?://[^/]*)/[^?]*#\1/$database#")
    DATABASE_URL="$url" "$(swift build --package-path "$dir" --show-bin-path)/$name"
    psql -X -q "$DATABASE_URL" -c "DROP DATABASE $database"
done
