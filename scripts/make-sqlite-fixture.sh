#!/usr/bin/env bash
# Makes the embedded-mode upgrade fixture: a data dir written by a given `stampede` binary
# (the previous release), which `crates/server/tests/api/upgrade.rs` opens with the current
# code. Only the API is used, so the fixture holds exactly what that release writes.
# Usage: scripts/make-sqlite-fixture.sh PATH/TO/OLD/stampede OUT_DIR
# The secret is the test suite's (helpers.rs SECRET), so the tests' tokens are accepted.
set -euo pipefail
bin=${1:?the stampede binary of the previous release}; out=${2:?output data dir}
export STAMPEDE_AUTH__JWT_SECRET="test-secret-test-secret-test-secret-0123456789"
rm -rf "$out"; mkdir -p "$out"
port=18391; base="http://127.0.0.1:$port"
"$bin" serve --data-dir "$out" --listen "127.0.0.1:$port" 2>"$out.log" &
pid=$!; trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
tok() { "$bin" token --data-dir "$out" "$@"; }
merchant=$(tok --role merchant --sub 1 --shop-id 7)
# The test sets its clock to made-at + 1 h, inside the claim window and the coupons' validity.
made_at=$(date -u +%s); echo "$made_at" > "$out/made-at"
start=$(date -u -d "@$((made_at - 60))" +%Y-%m-%dT%H:%M:%SZ); end=$(date -u -d "@$((made_at + 86400))" +%Y-%m-%dT%H:%M:%SZ)
tpl=$(curl -sf -X POST "$base/api/v1/merchant/templates" -H "Authorization: Bearer $merchant" \
  -H 'Content-Type: application/json' -H 'Idempotency-Key: fixture-template' \
  -d "{\"name\":\"upgrade fixture\",\"kind\":\"fixed\",\"amount_off\":300,\"stock_total\":100,
       \"claim_start\":\"$start\",\"claim_end\":\"$end\",\"validity_hours\":720,\"per_user_limit\":3}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
claim() { # user key
  curl -sf -X POST "$base/api/v1/templates/$tpl/claim" -H "Authorization: Bearer $(tok --role user --sub "$1")" \
    -H "Idempotency-Key: $2" >/dev/null
}
claim 1001 fx-1001-a; claim 1001 fx-1001-b; claim 1002 fx-1002-a; claim 1003 fx-1003-a
# A clean stop checkpoints the WAL into the database file.
kill -TERM $pid; wait $pid || true; trap - EXIT
rm -f "$out"/stampede.db-wal "$out"/stampede.db-shm "$out".log
echo "fixture in $out: template $tpl, 4 coupons (users 1001 ×2, 1002, 1003)"
