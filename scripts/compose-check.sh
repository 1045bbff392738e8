#!/usr/bin/env bash
# Validates docker-compose.yml against the Compose specification schema (offline, with
# check-jsonschema's vendored copy) and checks that every service's command exists in the CLI.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv
if [ ! -x "$venv/bin/check-jsonschema" ]; then
    python3 -m venv "$venv" >/dev/null
    "$venv/bin/pip" install -q check-jsonschema >/dev/null
fi
"$venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml

bin=${IMAGEJOBS_BIN:-$(swift build --show-bin-path)/imagejobs}
# Each service's command: the words after the binary name, up to the first option.
"$venv/bin/python" - "$bin" <<'PY'
import subprocess, sys
from ruamel.yaml import YAML
binary = sys.argv[1]
spec = YAML(typ="safe").load(open("docker-compose.yml"))
checked = 0
for name, service in spec["services"].items():
    command = service.get("command")
    if not command:
        continue
    words = command if isinstance(command, list) else command.split()
    if words and words[0] == "imagejobs":
        words = words[1:]
    path = []
    for w in words:
        if w.startswith("-"):
            break
        path.append(w)
    result = subprocess.run([binary, *path, "--help"], capture_output=True, text=True)
    usage = "USAGE: imagejobs " + " ".join(path)
    if result.returncode != 0 or usage not in result.stdout:
        sys.exit(f"docker-compose.yml: service {name} runs `imagejobs {' '.join(path)}`, which the CLI does not have")
    checked += 1
print(f"docker-compose.yml: valid; {checked} service commands exist in the CLI")
PY
