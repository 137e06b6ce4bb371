#!/usr/bin/env bash
# Makes an upgrade fixture: data written by a given `stampede` binary (the previous release),
# which `crates/server/tests/api/upgrade.rs` opens with the current code. Only the API is
# used, so the fixture holds exactly what that release writes.
#
# Usage: scripts/make-upgrade-fixture.sh PATH/TO/OLD/stampede OUT_DIR sqlite|mysql
#   sqlite: OUT_DIR/stampede.db (embedded data dir, WAL checkpointed by a clean stop)
#   mysql:  OUT_DIR/db0.sql, OUT_DIR/db1.sql (mysqldump of 2 databases × 2 tables, from the
#           MariaDB on 127.0.0.1:3306; the claims persisted before the dump)
# Both: OUT_DIR/made-at (epoch seconds) and OUT_DIR/ids (template ids: shop-wide, goods 11+12,
# goods 11). The secret is the test suite's (helpers.rs SECRET), so its tokens are accepted.
#
# Contents: shop 7 has a shop-wide fixed template (stock 100, limit 3) claimed by users 1001
# (twice, keys fx-1001-a/b), 1002 and 1003; a goods-scoped one on goods 11 and 12; shop 8 a
# goods-scoped one on goods 11.
set -euo pipefail
bin=${1:?the stampede binary of the previous release}; out=${2:?output dir}; mode=${3:?sqlite or mysql}
export STAMPEDE_AUTH__JWT_SECRET="test-secret-test-secret-test-secret-0123456789"
rm -rf "$out"; mkdir -p "$out"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
port=18391; base="http://127.0.0.1:$port"
tag="stampede_fx_$$"
case "$mode" in
  sqlite) data="$out"; args=(--data-dir "$out") ;;
  mysql)
    data="$work"
    for i in 0 1; do mysql -h127.0.0.1 -uroot -e "CREATE DATABASE ${tag}_$i"; done
    cat > "$work/stampede.toml" <<EOF
[server]
data_dir = "$work"
[storage]
backend = "mysql"
[storage.mysql]
databases = ["mysql://root@127.0.0.1:3306/${tag}_0", "mysql://root@127.0.0.1:3306/${tag}_1"]
tables_per_database = 2
[redis]
prefix = "$tag"
EOF
    args=(--config "$work/stampede.toml") ;;
  *) echo "mode: sqlite or mysql" >&2; exit 2 ;;
esac
"$bin" serve "${args[@]}" --listen "127.0.0.1:$port" 2>"$work/server.log" &
pid=$!; trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 100); do curl -sf "$base/healthz" >/dev/null && break; sleep 0.1; done
tok() { "$bin" token "${args[@]}" "$@"; }
m7=$(tok --role merchant --sub 1 --shop-id 7); m8=$(tok --role merchant --sub 2 --shop-id 8)
# The test sets its clock to made-at + 1 h, inside the claim windows and the coupons' validity.
made_at=$(date -u +%s); echo "$made_at" > "$out/made-at"
start=$(date -u -d "@$((made_at - 60))" +%Y-%m-%dT%H:%M:%SZ); end=$(date -u -d "@$((made_at + 86400))" +%Y-%m-%dT%H:%M:%SZ)
create() { # token key extra-json
  curl -sf -X POST "$base/api/v1/merchant/templates" -H "Authorization: Bearer $1" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: $2" \
    -d "{\"name\":\"upgrade fixture $2\",\"kind\":\"fixed\",\"amount_off\":300,\"stock_total\":100,
         \"claim_start\":\"$start\",\"claim_end\":\"$end\",\"validity_hours\":720,\"per_user_limit\":3$3}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'
}
tpl=$(create "$m7" fixture-template "")
g1=$(create "$m7" fixture-goods-a ',"scope":"goods","goods_ids":["11","12"]')
g2=$(create "$m8" fixture-goods-b ',"scope":"goods","goods_ids":["11"]')
echo "$tpl $g1 $g2" > "$out/ids"
claim() { # user key
  curl -sf -X POST "$base/api/v1/templates/$tpl/claim" -H "Authorization: Bearer $(tok --role user --sub "$1")" \
    -H "Idempotency-Key: $2" >/dev/null
}
claim 1001 fx-1001-a; claim 1001 fx-1001-b; claim 1002 fx-1002-a; claim 1003 fx-1003-a
if [ "$mode" = mysql ]; then
  # Wait for the persister: 4 coupons and the stock moved in MySQL.
  for _ in $(seq 100); do
    n=0
    for i in 0 1; do for t in 0 1; do
      c=$(mysql -h127.0.0.1 -uroot -N -e "SELECT COUNT(*) FROM ${tag}_$i.user_coupons_$t")
      n=$((n + c))
    done; done
    [ "$n" -ge 4 ] && break; sleep 0.1
  done
  [ "$n" -eq 4 ] || { echo "only $n coupons persisted" >&2; exit 1; }
  sleep 1
fi
# A clean stop checkpoints SQLite's WAL into the database file.
kill -TERM $pid; wait $pid || true
if [ "$mode" = sqlite ]; then
  rm -f "$out"/stampede.db-wal "$out"/stampede.db-shm
else
  for i in 0 1; do
    mysqldump -h127.0.0.1 -uroot --skip-comments --skip-dump-date --no-create-db \
      --skip-lock-tables --skip-extended-insert "${tag}_$i" > "$out/db$i.sql"
    mysql -h127.0.0.1 -uroot -e "DROP DATABASE ${tag}_$i"
  done
  redis-cli --scan --pattern "$tag*" | xargs -r redis-cli del >/dev/null
fi
echo "fixture in $out: templates $tpl (4 coupons: users 1001 ×2, 1002, 1003), $g1 (goods 11, 12), $g2 (shop 8, goods 11)"
