#!/usr/bin/env bash
# The Python tools the tests use, in .venv (created on first use; pip reaches PyPI then, later
# runs are offline): check-jsonschema for compose-check (its jsonschema also checks the API's OpenAPI
# document against the API), psycopg for the SQL-client test.
# Prints the venv's python.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ ! -x "$venv/bin/python" ]; then python3 -m venv "$venv" >/dev/null; fi
if ! "$venv/bin/python" -c "import check_jsonschema, psycopg" 2>/dev/null; then
    "$venv/bin/pip" install -q check-jsonschema "psycopg[binary]" >/dev/null
fi
echo "$PWD/$venv/bin/python"
