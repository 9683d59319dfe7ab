#!/usr/bin/env bash
# Checks what deploy/ ships: the Prometheus rules (syntax, and their unit
# tests: each alert fires on its situation and stays silent below its floor)
# and the Grafana dashboard's queries (each parsed by promtool as a
# recording rule). Installs Debian's prometheus package (for promtool) when
# it is missing.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v promtool >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
fi

promtool check rules prometheus/koostatus-rules.yml
promtool test rules prometheus/koostatus-rules.test.yml

queries="$(mktemp --suffix=.yml)"
trap 'rm -f "$queries"' EXIT
python3 - grafana/koostatus.json > "$queries" <<'PY'
import json, sys
panels = json.load(open(sys.argv[1]))["panels"]
print("groups:\n  - name: dashboard\n    rules:")
for i, p in enumerate(panels):
    for t in p["targets"]:
        print(f"      - record: dashboard:panel{i + 1}:{t['refId']}")
        print(f"        expr: {json.dumps(t['expr'])}")
PY
echo "dashboard queries:"
promtool check rules "$queries"
