#!/usr/bin/env bash
# A client generated from the served OpenAPI document runs the merchant and shopper flows:
# starts `stampede serve` (embedded, a fresh data dir), generates a Python client from its
# /openapi.json with openapi-python-client (any warning fails), and runs
# scripts/client_flows.py with it. Part of the test command.
#   usage: scripts/client-flows.sh [path/to/stampede]   (default target/debug/stampede)
# The generator is installed from PyPI into a venv ($CLIENT_FLOWS_VENV, default
# target/client-venv) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/debug/stampede}
venv=${CLIENT_FLOWS_VENV:-target/client-venv}
if [ ! -x "$venv/bin/openapi-python-client" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "openapi-python-client==0.29.1"
fi
work=$(mktemp -d)
pid=
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$bin" serve --data-dir "$work/data" --listen 127.0.0.1:0 > "$work/out" 2> "$work/err" &
pid=$!
for _ in $(seq 1 100); do grep -q "http://" "$work/out" 2>/dev/null && break; sleep 0.1; done
base=$(grep -o 'http://[0-9.:]*' "$work/out" | head -1)
[ -n "$base" ] || { echo "client-flows: the server did not start" >&2; cat "$work/err" >&2; exit 1; }
python3 -c "import urllib.request,sys; sys.stdout.write(urllib.request.urlopen('$base/openapi.json').read().decode())" > "$work/openapi.json"
printf 'post_hooks: []\npackage_name_override: stampede_client\n' > "$work/generator.yml"
"$venv/bin/openapi-python-client" generate --path "$work/openapi.json" --meta none \
  --config "$work/generator.yml" --output-path "$work/stampede_client" --fail-on-warning > "$work/generate.log" 2>&1 \
  || { echo "client-flows: the generator refused the document" >&2; cat "$work/generate.log" >&2; exit 1; }
token() { "$bin" token --data-dir "$work/data" "$@"; }
BASE=$base ADMIN=$(token --role admin --sub 1) USER=$(token --role user --sub 4242) \
  PYTHONPATH="$work" "$venv/bin/python" scripts/client_flows.py
