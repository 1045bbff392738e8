#!/usr/bin/env bash
# Validates docker-compose.yml against the Compose specification schema (check-jsonschema's
# vendored copy of the schema, so the check itself asks no network), checks that every service's
# command exists in the CLI, and that no ImageJobs service logs in as the database superuser.
# The first run installs check-jsonschema from PyPI into .venv (scripts/python-env.sh); later
# runs are offline.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(dirname "$(dirname "$(scripts/python-env.sh)")")
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
    if not words or words[0] != "imagejobs":
        continue  # another image's program (the role grant runs psql)
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

# docs/security.md: each program under its own role, never the superuser.
from urllib.parse import urlparse
superuser = spec["services"]["postgres"]["environment"]["POSTGRES_USER"]
users = {}
for name, service in spec["services"].items():
    url = (service.get("environment") or {}).get("DATABASE_URL")
    command = service.get("command") or []
    if url and command and command[0] == "imagejobs":
        users[name] = urlparse(url).username
        if users[name] == superuser:
            sys.exit(f"docker-compose.yml: service {name} logs in as the superuser {superuser}; give it a role of its own (docs/security.md)")
if users.get("migrate") == users.get("worker"):
    sys.exit("docker-compose.yml: the workers log in as the owner that migrates; give them a login role granted imagejobs_worker")
print(f"docker-compose.yml: valid; {checked} service commands exist in the CLI; roles: "
      + ", ".join(f"{n} as {u}" for n, u in sorted(users.items())))
PY
