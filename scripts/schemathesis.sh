#!/usr/bin/env bash
# The API contract check: Schemathesis (every check) against a fresh embedded server.
#
#   1. Once per role (user, service, merchant, admin), so each role's operations get past
#      401/403: the examples phase (the document's request examples), the coverage phase
#      (boundary and invalid values of every keyword) and the fuzzing phase.
#   2. The stateful phase with each operation given the token of the role it is for, following
#      every link of the document (templates, claims, orders, uploads, accounts and logins).
#   3. The stateful phase on the order chain's operations alone: a merchant's template is
#      claimed by a shopper, locked, redeemed and refunded. It must reach a refund (an answered
#      200 in the server's access log); a run that ends before is repeated, at most 3 times.
#
# scripts/schemathesis_hooks.py teaches the generator the rules no schema keyword states (see
# its docstring); scripts/schemathesis.toml holds the settings. Any failure fails the script.
# The test command runs a short pass; a longer one is this script with bigger numbers:
#
#   scripts/schemathesis.sh [MAX_EXAMPLES [STATEFUL_EXAMPLES [BINARY]]]   (default 30 400)
set -euo pipefail
cd "$(dirname "$0")/.."
examples="${1:-30}"
stateful_examples="${2:-400}"
bin="${3:-}"
version=4.32.5
venv=$(realpath -m "${SCHEMATHESIS_VENV:-${CARGO_TARGET_DIR:-target}/schemathesis-venv}")
if [ "$("$venv/bin/schemathesis" --version 2>/dev/null | awk '{print $NF}')" != "$version" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet "schemathesis==$version"
fi
if [ -z "$bin" ]; then
  cargo build --release --quiet -p stampede-server
  bin="${CARGO_TARGET_DIR:-target}/release/stampede"
fi
bin=$(realpath "$bin")
conf="$PWD/scripts/schemathesis.toml"
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$bin" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true; rm -rf "$dir"' EXIT
for _ in $(seq 50); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.2; done

export SCHEMATHESIS_HOOKS=schemathesis_hooks PYTHONPATH="$PWD/scripts"
run() { # run LOG ARGS...: one Schemathesis run; prints its failures and tally
  local log=$1; shift
  local status=0
  # From the scratch dir: Schemathesis and Hypothesis keep their caches in the working dir.
  (cd "$dir" && "$venv/bin/schemathesis" --config-file "$conf" \
    run "http://127.0.0.1:$port/openapi.json" --checks all --workers 1 "$@") >"$log" 2>&1 || status=$?
  if [ $status -ne 0 ]; then
    sed -n '/^=* FAILURES =*$/,/^=* SUMMARY =*$/p' "$log" | grep -E '^_+ |^- |^\[[0-9]+\]|^ +`\{|^ +curl|^ +Invalid component' | cut -c1-400
    grep -E '^(Error|❌)' "$log" | head -5 || true
  fi
  grep -E 'generated|No issues found|unique failure' "$log" | tail -2
  return $status
}

failed=0
declare -A tokens
for role in "user --sub 42" "service --sub svc" "merchant --sub 7 --shop-id 7" "admin --sub 1"; do
  name=${role%% *}
  # shellcheck disable=SC2086 # the role's flags split on purpose
  tokens[$name]=$("$bin" token --data-dir "$dir/data" --role $role --ttl 2h)
done

for name in user service merchant admin; do
  echo "== Schemathesis as $name: examples, coverage, fuzzing"
  STAMPEDE_ROLE=$name run "$dir/$name.log" -H "Authorization: Bearer ${tokens[$name]}" \
    --max-examples "$examples" --phases examples,coverage,fuzzing || failed=1
done

export STAMPEDE_ROLE=per-operation STAMPEDE_TOKEN_USER="${tokens[user]}" \
  STAMPEDE_TOKEN_SERVICE="${tokens[service]}" STAMPEDE_TOKEN_MERCHANT="${tokens[merchant]}" \
  STAMPEDE_TOKEN_ADMIN="${tokens[admin]}"
refunds() {
  grep -c '"route":"/api/v1/orders/{order_id}/coupons/refund","status":200' "$dir/server.log" || true
}
echo "== Schemathesis stateful: every link"
run "$dir/stateful.log" --max-examples "$stateful_examples" --phases stateful || failed=1
chain='^(create_template|claim|my_coupon|lock|redeem|release|refund|get_order_coupons)$'
for attempt in 1 2 3; do
  echo "== Schemathesis stateful: template -> claim -> lock -> redeem -> refund (run $attempt)"
  run "$dir/chain-$attempt.log" --max-examples 100 --phases stateful \
    --include-operation-id-regex "$chain" || failed=1
  if [ "$(refunds)" -gt 0 ]; then break; fi
  if [ "$attempt" = 3 ]; then
    echo "the stateful runs never chained a claim through to a refund"
    failed=1
  fi
done
echo "stateful chains reached $(refunds) refund(s)"
exit $failed
