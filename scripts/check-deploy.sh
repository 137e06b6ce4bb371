#!/usr/bin/env bash
# Static checks of the deployment kit under deploy/ (nothing here builds or runs a container):
#   - Prometheus: `promtool check rules` and `promtool test rules` of the alerts,
#     `promtool check config` of prometheus.yml (promtool comes from Debian's `prometheus`
#     package, installed when missing; its daemon is not left running);
#   - every alert's runbook annotation names an existing section of deploy/RUNBOOK.md;
#   - Grafana: every JSON file parses, every PromQL query of the dashboard parses (via a
#     throw-away rule file checked by promtool), the provisioning YAML parses;
#   - systemd: `systemd-analyze verify` of the unit, when systemd-analyze exists (the only
#     complaint tolerated is that /usr/local/bin/stampede is not installed here);
#   - Docker: `docker compose config -q` when a compose v2 CLI exists, and hadolint of the
#     Dockerfile when hadolint exists (each skipped with a note otherwise).
set -euo pipefail

cd "$(dirname "$0")/.."

log() { echo "check-deploy: $*" >&2; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

ensure_promtool() {
  command -v promtool >/dev/null 2>&1 && return
  log "promtool missing: installing Debian's prometheus package"
  local before
  before="$(pgrep -x prometheus || true)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # Only promtool is wanted. With systemd running, the package starts and enables its daemon:
  # stop and disable it. Without systemd (containers) it is normally not started; if it was,
  # end exactly the processes that appeared with the install.
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
  local pid
  for pid in $(pgrep -x prometheus || true); do
    if ! grep -qx "$pid" <<<"$before"; then
      log "stopping the prometheus daemon the package started (pid $pid)"
      as_root kill "$pid" || true
    fi
  done
  command -v promtool >/dev/null 2>&1 || { log "promtool still missing after the install"; exit 1; }
}

section() { echo; echo "== $*"; }

ensure_promtool
promtool --version 2>&1 | head -n 1

section "promtool check rules deploy/prometheus/alerts.yml"
promtool check rules deploy/prometheus/alerts.yml

section "promtool test rules deploy/prometheus/alerts.test.yml"
promtool test rules deploy/prometheus/alerts.test.yml

section "promtool check config deploy/prometheus/prometheus.yml"
# The full check (it also loads the rule files). It does not resolve the scrape targets'
# host names, so it needs no running Stampede.
promtool check config deploy/prometheus/prometheus.yml

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

section "runbook sections of every alert"
python3 - <<'PY'
import re, sys

# The runbook is Markdown: a section "## StampedeFooBar" has the anchor "#stampedefoobar".
text = open("deploy/RUNBOOK.md", encoding="utf-8").read()
anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#{1,6} (.+)$", text, flags=re.M)}
rules = open("deploy/prometheus/alerts.yml", encoding="utf-8").read()
alerts = re.findall(r"^\s*- alert: (\S+)", rules, flags=re.M)
runbooks = re.findall(r"^\s*runbook: \"deploy/RUNBOOK\.md#([^\"]+)\"", rules, flags=re.M)
problems = []
if len(alerts) != len(runbooks):
    problems.append(f"{len(alerts)} alerts but {len(runbooks)} runbook annotations")
for alert, anchor in zip(alerts, runbooks):
    if anchor != alert.lower():
        problems.append(f"{alert}: runbook anchor #{anchor}, expected #{alert.lower()}")
    if anchor not in anchors:
        problems.append(f"{alert}: deploy/RUNBOOK.md has no section #{anchor}")
for p in problems:
    print("  " + p)
if problems:
    sys.exit(1)
print(f"  SUCCESS: {len(alerts)} alerts, each with a runbook section")
PY

section "Grafana JSON files"
while IFS= read -r -d '' f; do
  python3 -m json.tool "$f" >/dev/null
  echo "  valid JSON: $f"
done < <(find deploy/grafana -name '*.json' -print0 | sort -z)

section "PromQL of the dashboard (promtool check rules on a throw-away rule file)"
python3 - "$tmp/dashboard-rules.yml" <<'PY'
import json, sys

dash = json.load(open("deploy/grafana/dashboards/stampede.json", encoding="utf-8"))
exprs = []

def walk(panels):
    for p in panels:
        for t in p.get("targets", []):
            exprs.append((p.get("title", "?"), t["expr"]))
        walk(p.get("panels", []))

walk(dash["panels"])
with open(sys.argv[1], "w", encoding="utf-8") as out:
    out.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        # Grafana's variables, as Grafana would fill them in.
        e = e.replace("$__rate_interval", "1m").replace("$instance", ".*")
        out.write(f"      - alert: DashboardQuery{i}\n        expr: {json.dumps(e)}\n")
print(f"  {len(exprs)} queries")
PY
promtool check rules "$tmp/dashboard-rules.yml"

section "Grafana provisioning YAML"
if python3 -c 'import yaml' 2>/dev/null; then
  for f in deploy/grafana/provisioning/*/*.yml; do
    python3 -c 'import sys, yaml; yaml.safe_load(open(sys.argv[1]))' "$f"
    echo "  valid YAML: $f"
  done
else
  echo "  skipped: python3 has no yaml module"
fi

section "systemd-analyze verify deploy/systemd/stampede.service"
if command -v systemd-analyze >/dev/null 2>&1; then
  rc=0
  out="$(systemd-analyze verify deploy/systemd/stampede.service 2>&1)" || rc=$?
  # The binary is not installed on a development machine; any other output is a problem.
  rest="$(grep -v 'Command /usr/local/bin/stampede is not executable: No such file or directory' <<<"$out" || true)"
  if [ -n "$rest" ]; then
    echo "$out"
    exit 1
  fi
  if [ "$rc" = 0 ]; then
    echo "  SUCCESS"
  else
    echo "  SUCCESS (only complaint: /usr/local/bin/stampede is not installed here)"
  fi
else
  echo "  skipped: systemd-analyze not found"
fi

section "docker compose -f deploy/compose.yaml config -q"
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version 2>/dev/null | grep -q 'v2\.'; then
  compose=(docker-compose)
fi
if [ "${#compose[@]}" -gt 0 ]; then
  # The secrets the file requires, with placeholder values (nothing is started).
  STAMPEDE_JWT_SECRET="check-deploy-placeholder-secret-of-32-bytes" \
  MARIADB_PASSWORD="placeholder" \
  GRAFANA_ADMIN_PASSWORD="placeholder" \
    "${compose[@]}" -f deploy/compose.yaml config -q
  echo "  SUCCESS ($("${compose[@]}" version 2>&1 | head -n 1))"
else
  echo "  skipped: no Docker Compose v2 CLI here (docker compose version failed)"
fi

section "Dockerfile"
python3 - <<'PY'
import json, re, sys

# Exec-form (JSON array) instructions must be valid JSON, or Docker silently runs them
# through /bin/sh as a string.
src = open("deploy/Dockerfile", encoding="utf-8").read().replace("\\\n", " ")
bad = []
for line in src.splitlines():
    m = re.match(r"\s*(?:CMD|ENTRYPOINT|HEALTHCHECK\b.*?\bCMD|VOLUME)\s+(\[.*\])\s*$", line)
    if m:
        try:
            json.loads(m.group(1))
        except ValueError as e:
            bad.append(f"{line.strip()[:60]}...: {e}")
for b in bad:
    print("  " + b)
if bad:
    sys.exit(1)
print("  exec-form instructions are valid JSON")
PY
if command -v hadolint >/dev/null 2>&1; then
  hadolint deploy/Dockerfile
  echo "  hadolint: SUCCESS"
else
  echo "  hadolint: skipped (not installed)"
fi

echo
echo "check-deploy: all checks passed"
