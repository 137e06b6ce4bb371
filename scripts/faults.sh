#!/usr/bin/env bash
# The fault suite (crates/server/tests/faults.rs) against the release binary: two nodes over a
# private MariaDB and a private Redis (AOF) behind fault-injecting proxies. Prints each
# scenario's FAULT-RESULT line and then the Markdown table that RELIABILITY.md carries.
# STAMPEDE_FAULTS_STRICT=1 also asserts the availability bars (else measured only).
# Extra arguments go to the test binary (e.g. a scenario name as a filter).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
out=$(mktemp); trap 'rm -f "$out"' EXIT
commit="$(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes')"

command -v redis-server >/dev/null && command -v mariadbd >/dev/null || ./scripts/services.sh

cargo build --release --quiet -p stampede-server
status=0
cargo test --release --quiet -p stampede-server --test faults -- --test-threads=1 --nocapture "$@" \
  2>&1 | tee "$out" || status=$?

echo
echo "Fault suite, $(date -u +%Y-%m-%d) UTC, commit $commit, strict=${STAMPEDE_FAULTS_STRICT:-0}"
echo
echo "| scenario | injected | answers by code (whole run) | during the fault | p99 during fault / whole run | recovery: first 201 / log drained | invariants | bars missed |"
echo "|---|---|---|---|---|---|---|---|"
grep -o 'FAULT-ROW .*' "$out" | sed 's/^FAULT-ROW //' || true
exit "$status"
