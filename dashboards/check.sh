#!/usr/bin/env bash
# Offline checks of the shipped dashboards (no Grafana server can run here):
#  - each dashboard type-checks against Grafana's own schema: the npm package @grafana/schema,
#    with the JSON as a typed TypeScript object under `tsc --strict` (unknown fields and wrong
#    types fail);
#  - each PromQL expression parses (PyPI promql-parser, the Prometheus parser's Rust port).
# Tools are installed into target/dashboard-check on first use. Ends with "N passed, N failed".
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
work="$root/target/dashboard-check"
mkdir -p "$work"
cd "$work"
if [ ! -d node_modules/@grafana/schema ] || [ ! -d node_modules/typescript ]; then
  [ -f package.json ] || echo '{"private": true}' > package.json
  npm install --silent --no-audit --no-fund @grafana/schema@13.2.3 typescript@5.9.3 >/dev/null
fi
if [ ! -x venv/bin/python ] || ! venv/bin/python -c 'import promql_parser' 2>/dev/null; then
  python3 -m venv venv
  venv/bin/pip install --quiet promql-parser==0.12.0
fi

passed=0
failed=0
for board in "$root"/dashboards/grafana/*.json; do
  name="$(basename "$board" .json)"
  rm -f ./*.ts
  { echo "import type { Dashboard } from '@grafana/schema';"; echo "export const board: Dashboard ="; cat "$board"; echo ";"; } > "$name.ts"
  echo '{"compilerOptions": {"strict": true, "noEmit": true, "target": "es2022", "module": "esnext", "moduleResolution": "bundler", "skipLibCheck": true}, "include": ["*.ts"]}' > tsconfig.json
  if node_modules/.bin/tsc -p tsconfig.json; then
    echo "ok: $name matches @grafana/schema's Dashboard"; passed=$((passed + 1))
  else
    echo "FAILED: $name does not match @grafana/schema's Dashboard"; failed=$((failed + 1))
  fi
done

read -r p f < <(venv/bin/python - "$root"/dashboards/grafana/*.json <<'PY'
import json, sys
import promql_parser
passed = failed = 0
for path in sys.argv[1:]:
    board = json.load(open(path))
    for panel in board["panels"]:
        for target in panel["targets"]:
            # Grafana's variables, as Grafana would substitute them.
            expr = target["expr"].replace("$__rate_interval", "1m").replace("$executor_id", ".*")
            try:
                promql_parser.parse(expr)
                print(f"ok: parses: {panel['title']}: {target['refId']}", file=sys.stderr)
                passed += 1
            except Exception as e:
                print(f"FAILED: {panel['title']}: {expr}: {e}", file=sys.stderr)
                failed += 1
print(passed, failed)
PY
)
passed=$((passed + p)); failed=$((failed + f))
echo "dashboards: $passed passed, $failed failed"
[ "$failed" = 0 ]
