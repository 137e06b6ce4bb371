#!/usr/bin/env bash
# The event relay under load with the broker stopped mid-run (not in the test command: it takes
# a few minutes). An embedded release server with `events.nats_url` on a private JetStream
# server; stampede-bench claims until 10 templates x 10,000 stock are sold out (100,000
# claims); 20 s in, NATS is stopped for 30 s and started again on its own data. Passes when
# the outbox backlog returns to 0 by itself and the stream holds exactly one message per
# claim plus one `template.created` per template (JetStream dedups by event id, so the count
# is of distinct events).
#
#   scripts/events-soak.sh [RATE] [OUTAGE_SECS]      (default 2500 claims/s, 30 s)
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-2500}"
outage="${2:-30}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p stampede-server -p stampede-bench
bin="$target/release/stampede"
bench="$target/release/stampede-bench"
dir=$(mktemp -d)
. scripts/lib/private.sh
port=$(free_port); nport=$(free_port); mport=$(free_port)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$dir"; }
trap cleanup EXIT
metric() { # metric NAME [LABELS]: the server's current value
  curl -fs "127.0.0.1:$port/metrics" | awk -v m="$1${2:-}" '$1 == m { print $2 }'
}

start_nats
STAMPEDE_EVENTS__NATS_URL="nats://127.0.0.1:$nport" STAMPEDE_EVENTS__STREAM=SOAK \
STAMPEDE_WORKERS__OUTBOX_OBSERVE_INTERVAL_MS=500 STAMPEDE_LOG__LEVEL=warn \
  "$bin" serve --data-dir "$dir/data" --listen "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
server=$!; pids+=("$server")
for _ in $(seq 100); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done

templates=10
duration=$(( 100000 / rate + 20 ))
echo "== $rate claims/s for ${duration}s (100,000 stock); NATS down from 20 s for ${outage} s"
"$bench" claim --base "http://127.0.0.1:$port" --data-dir "$dir/data" --server-pid "$server" \
  --users 100000 --templates "$templates" --stock 10000 --limit 100 -c 64 -r "$rate" \
  -d "${duration}s" --warmup 0s >"$dir/bench.log" 2>&1 &
load=$!; pids+=("$load")
sleep 20
kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true
down_at=$(date +%s)
sleep "$outage"
echo "backlog with the broker down: $(metric stampede_outbox_backlog_events) events"
start_nats
up_at=$(date +%s)
wait "$load" || { cat "$dir/bench.log"; exit 1; }
grep -E "requests|status|p50|p99|claims/s|req/s" "$dir/bench.log" | head -12 || true

for _ in $(seq 600); do
  [ "$(metric stampede_outbox_backlog_events)" = "0" ] && break
  sleep 0.5
done
drained_at=$(date +%s)
claimed=$(metric stampede_claims_total '{outcome="claimed"}')
backlog=$(metric stampede_outbox_backlog_events)
messages=$(stream_messages SOAK)
echo "claims acknowledged: $claimed; templates: $templates; stream messages: $messages; outbox backlog: $backlog"
echo "broker down $((up_at - down_at)) s; backlog drained $((drained_at - up_at)) s after it came back"
echo "publish errors: $(curl -fs "127.0.0.1:$port/metrics" | grep '^stampede_outbox_publish_errors_total' | tr '\n' ' ')"
[ "$backlog" = "0" ] || { echo "FAIL: the backlog did not drain"; exit 1; }
[ $(( ${claimed%.*} + templates )) = "$messages" ] || { echo "FAIL: $claimed claims, $templates templates but $messages messages"; exit 1; }
echo "PASS: one message per claim and per template"
