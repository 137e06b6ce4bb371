#!/usr/bin/env bash
# Claims from an outside load tool (wrk, Debian's package) against a running embedded
# server, to check stampede-bench's claim figures: signs USERS real user tokens (default
# 100,000, so the per-user rate rule of 10/s is never what limits), creates
# TEMPLATES templates with plenty of stock and a per-user limit of 100, then runs wrk.
# Usage: scripts/wrk-claims.sh BASE_URL DATA_DIR [connections] [duration]
set -euo pipefail
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
base=${1:?base URL, e.g. http://127.0.0.1:18200}; dir=${2:?the data dir of the server}
conns=${3:-128}; dur=${4:-10s}; users=${USERS:-100000}; ntpl=${TEMPLATES_N:-10}
bin=$(dirname "$0")/../target/release/stampede
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
merchant=$("$bin" token --role merchant --sub 1 --shop-id 7 --data-dir "$dir")
start=$(date -u -d '-1 minute' +%Y-%m-%dT%H:%M:%SZ); end=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
ids=()
for i in $(seq 1 "$ntpl"); do
  ids+=("$(curl -sf -X POST "$base/api/v1/merchant/templates" -H "Authorization: Bearer $merchant" \
    -H 'Content-Type: application/json' -H "Idempotency-Key: wrk-$$-$i" \
    -d "{\"name\":\"wrk $i\",\"kind\":\"fixed\",\"amount_off\":100,\"stock_total\":20000000,
         \"claim_start\":\"$start\",\"claim_end\":\"$end\",\"validity_hours\":24,\"per_user_limit\":100}" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')")
done
# HS256 tokens signed with the server's generated secret (what `stampede token` makes, in bulk).
python3 - "$dir/jwt-secret" "$users" > "$work/tokens" <<'PY'
import base64, hashlib, hmac, json, os, sys, time
secret = open(sys.argv[1]).read().strip().encode()
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=").decode()
head = b64(json.dumps({"typ": "JWT", "alg": "HS256"}, separators=(",", ":")).encode())
now = int(time.time())
for u in range(1, int(sys.argv[2]) + 1):
    claims = {"sub": str(1000000 + u), "role": "user", "exp": now + 3600, "iat": now,
              "jti": b64(os.urandom(12))}
    body = head + "." + b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())
    print(body + "." + sig)
PY
TEMPLATES=$(IFS=,; echo "${ids[*]}") TOKENS_FILE="$work/tokens" \
  wrk -t1 -c"$conns" -d"$dur" -s "${WRK_SCRIPT:-$(dirname "$0")/wrk/claims.lua}" "$base"
