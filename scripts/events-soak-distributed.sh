#!/usr/bin/env bash
# The event relay in distributed mode under load with the broker stopped mid-run (not in the
# test command: a few minutes). Three release nodes over MySQL 2x4 (fresh databases) and the
# shared Redis (own key prefix), each relaying to a private JetStream server; one
# stampede-bench per node claims its own templates until 3 x 4 templates x 8,334 stock are
# sold out (100,008 claims); 20 s in, NATS is stopped for 30 s and started again on its own
# data. Passes when the outbox backlog returns to 0 by itself and the stream holds exactly one
# message per claim plus one `template.created` per template.
#
#   scripts/events-soak-distributed.sh [RATE] [OUTAGE_SECS]   (default 1500 claims/s in all, 30 s)
set -euo pipefail
cd "$(dirname "$0")/.."
rate="${1:-1500}"
outage="${2:-30}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p stampede-server -p stampede-bench
bin="$target/release/stampede"; bench="$target/release/stampede-bench"
secret="soak-secret-soak-secret-soak-secret-0123456789"
dir=$(mktemp -d)
tag="stampede_soak_$(date +%s)"
. scripts/lib/private.sh
nport=$(free_port); mport=$(free_port)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for i in 0 1; do mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`${tag}_$i\`" || true; done
  redis-cli --scan --pattern "$tag*" | xargs -r redis-cli del >/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
metric() { # metric PORT NAME: that node's current value
  curl -fs "127.0.0.1:$1/metrics" | awk -v m="$2" '$1 == m { print $2 }'
}

start_nats
ports=(); servers=()
for n in 0 1 2; do
  mkdir -p "$dir/node$n"
  cat >"$dir/node$n/stampede.toml" <<TOML
[server]
data_dir = "$dir/node$n"
[auth]
jwt_secret = "$secret"
[log]
level = "warn"
[storage]
backend = "mysql"
[storage.mysql]
databases = ["mysql://root@127.0.0.1:3306/${tag}_0", "mysql://root@127.0.0.1:3306/${tag}_1"]
tables_per_database = 4
[redis]
prefix = "$tag"
[events]
nats_url = "nats://127.0.0.1:$nport"
stream = "SOAK"
[workers]
outbox_observe_interval_ms = 500
TOML
  port=$(free_port)
  "$bin" serve --config "$dir/node$n/stampede.toml" --listen "127.0.0.1:$port" >"$dir/node$n/server.log" 2>&1 &
  servers+=("$!"); pids+=("$!"); ports+=("$port")
  for _ in $(seq 300); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
done

per_node=$(( rate / 3 ))
duration=$(( 100008 / rate + 20 ))
echo "== 3 nodes, $rate claims/s in all for ${duration}s (100,008 stock); NATS down from 20 s for ${outage} s"
loads=()
for n in 0 1 2; do
  "$bench" claim --base "http://127.0.0.1:${ports[$n]}" --jwt-secret "$secret" \
    --server-pid "${servers[$n]}" --users 100000 --templates 4 --stock 8334 --limit 100 \
    -c 32 -r "$per_node" -d "${duration}s" --warmup 0s >"$dir/bench$n.log" 2>&1 &
  loads+=("$!"); pids+=("$!")
done
sleep 20
kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true
down_at=$(date +%s)
sleep "$outage"
echo "backlog with the broker down: $(metric "${ports[0]}" stampede_outbox_backlog_events) events"
start_nats
up_at=$(date +%s)
for l in "${loads[@]}"; do wait "$l" || { cat "$dir"/bench*.log; exit 1; }; done
for n in 0 1 2; do
  echo "-- node $n"; grep -E "^(requests/s|latency p50|latency p99 |status)" "$dir/bench$n.log" || true
done

for _ in $(seq 600); do
  [ "$(metric "${ports[0]}" stampede_outbox_backlog_events)" = "0" ] && break
  sleep 0.5
done
drained_at=$(date +%s)
claimed=0
for n in 0 1 2; do
  c=$(metric "${ports[$n]}" 'stampede_claims_total{outcome="claimed"}'); claimed=$(( claimed + ${c%.*} ))
done
templates=12
backlog=$(metric "${ports[0]}" stampede_outbox_backlog_events)
messages=$(stream_messages SOAK)
echo "claims acknowledged: $claimed; templates: $templates; stream messages: $messages; outbox backlog: $backlog"
echo "broker down $((up_at - down_at)) s; backlog drained $((drained_at - up_at)) s after it came back"
for n in 0 1 2; do
  echo "node $n publish errors: $(curl -fs "127.0.0.1:${ports[$n]}/metrics" | grep '^stampede_outbox_publish_errors_total' | tr '\n' ' ')"
done
[ "$backlog" = "0" ] || { echo "FAIL: the backlog did not drain"; exit 1; }
[ $(( claimed + templates )) = "$messages" ] || { echo "FAIL: $claimed claims, $templates templates but $messages messages"; exit 1; }
echo "PASS: one message per claim and per template, from three nodes"
