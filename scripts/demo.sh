#!/usr/bin/env bash
# `make demo`: the whole product in about a minute, with no configuration.
#
# Starts the embedded PostgreSQL (unless DATABASE_URL is set), migrates, submits a batch of
# varied prompts into one conversation plus single jobs of each priority, and from SQL two drill
# jobs in the same conversation (one fails once to show a retry, one has a 1 s timeout and needs
# 3 s to show a timeout), runs two worker processes with the offline procedural generator (one
# of them the drills' worker, which also runs the drill jobs), shows live progress, prints the
# summary and where the PNGs are. Serves the HTTP API and the dashboard throughout (their URL
# and an admin key are printed first). Stops everything it started; with DEMO_SERVE=1 it keeps
# serving, workers included, until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
out=demo-output
swift build 2>&1 | grep -E "error|warning: unre|Compiling|Build complete" | tail -n 1 || true
bin="$(swift build --show-bin-path)/imagejobs"
drill_worker="$(swift build --show-bin-path)/imagejobs-drill-worker"

started_db=0
workers=()
cleanup() {
    for pid in "${workers[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${workers[@]}"; do wait "$pid" 2>/dev/null || true; done
    if [ "$started_db" = 1 ]; then scripts/db.sh down; fi
}
trap cleanup EXIT

if [ -z "${DATABASE_URL:-}" ]; then
    eval "export $(scripts/db.sh up)"
    started_db=1
fi
echo "== database: ${DATABASE_URL}"
"$bin" migrate up

key=$("$bin" api-keys create --scopes admin --name demo | tail -n 1)
serve_log=$(mktemp)
"$bin" serve --port "${DEMO_PORT:-0}" --log-level error >"$serve_log" 2>&1 &
server=$!
workers+=("$server")
url=""
for _ in $(seq 100); do
    url=$(grep -o 'http://[^ ]*' "$serve_log" | head -n 1 || true)
    [ -n "$url" ] && break
    sleep 0.1
done
rm -f "$serve_log"
if [ -z "$url" ]; then echo "demo: imagejobs serve did not start" >&2; exit 1; fi
echo "== dashboard: $url/ (sign in with this admin key; API: Authorization: Bearer <key>)"
echo "   $key"

conversation=$(python3 -c 'import uuid; print(uuid.uuid4())')
rm -rf "$out" && mkdir -p "$out"
batch_file=$(mktemp)
python3 - "$conversation" >"$batch_file" <<'PY'
import json, sys
c = sys.argv[1]
prompts = [
    "a lighthouse on a cliff at dawn", "a red fox asleep in fresh snow", "neon koi in a midnight pond",
    "a desert caravan under two moons", "an origami crane made of stained glass", "a cozy library inside a tree",
    "storm clouds over a lavender field", "a tiny robot watering a bonsai", "the northern lights over a frozen lake",
    "a street market in the rain, watercolor", "a whale swimming through the clouds", "sunflowers in the style of a mosaic",
]
for i, p in enumerate(prompts):
    print(json.dumps({"conversation_id": c, "prompt": p, "seed": i, "width": 512, "height": 512,
                      "priority": ["normal", "low", "high"][i % 3]}))
PY
echo "== submitting a batch of 12 prompts to conversation $conversation"
"$bin" submit --batch "$batch_file"
rm -f "$batch_file"
for priority in high normal low; do
    "$bin" submit --conversation "$conversation" --prompt "a single $priority-priority painting of a harbor" --priority "$priority" --seed 7
done
echo "== from SQL, a drill job that fails its first attempt (watch it retry after 1 s),"
echo "   and one with a 1 s timeout that needs 3 s (watch it time out):"
psql -X -q -At "$DATABASE_URL" <<SQL
SELECT 'submitted ' || submit_job('{"kind": "test.script", "group_id": "$conversation", "params": {"fail_attempts": 1}, "priority": "high"}');
SELECT 'submitted ' || submit_job('{"kind": "test.script", "group_id": "$conversation", "params": {"sleep_ms": 3000}, "timeout": 1, "max_retries": 0}');
SQL

echo "== starting 2 worker processes (concurrency 2 each, procedural generator; the second also runs the drill jobs)"
"$bin" worker --concurrency 2 --output-dir "$out" --poll-interval 0.2 --log-level error &
workers+=($!)
"$drill_worker" --concurrency 2 --output-dir "$out" --poll-interval 0.2 --log-level error &
workers+=($!)

echo "== progress (per-status counts and the positions of the next waiting jobs):"
"$bin" watch --conversation "$conversation" --until-done --interval 0.5 --timeout 120

echo
echo "== summary"
"$bin" list --conversation "$conversation" --limit 100
echo
completed=$("$bin" list --conversation "$conversation" --status completed --limit 100 --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
pngs=$(ls "$out"/*.png 2>/dev/null | wc -l)
echo "$completed jobs completed; $pngs PNG files written to $out/"
for job in $("$bin" list --conversation "$conversation" --status error --json | python3 -c 'import json,sys; [print(j["id"]) for j in json.load(sys.stdin)]'); do
    "$bin" status "$job" | grep -E '^(id|status|error_message) '
done
# The demo is also a check (`make test` runs it): 16 of its 17 jobs complete (the 15 images with
# one PNG each, and the drill job on its second attempt), and the timed-out one ends in error.
if [ "$completed" != 16 ] || [ "$pngs" != 15 ]; then
    echo "demo: expected 16 completed jobs and 15 PNG files, got $completed and $pngs" >&2
    exit 1
fi
python3 - "$url/v1/jobs/$job" "$key" <<'PY'
import json, sys, urllib.request
request = urllib.request.Request(sys.argv[1], headers={"Authorization": "Bearer " + sys.argv[2]})
job = json.load(urllib.request.urlopen(request))
print(f"GET {sys.argv[1]}: {job['status']} ({job['error_message']})")
PY
if [ "${DEMO_SERVE:-0}" = 1 ]; then
    echo "== serving $url/ with the workers until Ctrl-C"
    wait "$server" || true
fi
