#!/usr/bin/env bash
# Distributed claims/s on one Redis vs a 3-master Redis Cluster (private, scripts/redis-cluster.sh),
# for one hot template and for ten templates; then the same-run Redis ceiling (redis-benchmark
# running a claim-like Lua). Release builds; MySQL
# 2x4 on the shared MariaDB (fresh databases, dropped after). Not in the test command.
#
#   scripts/bench-redis-topology.sh [DURATION]     (default 10s)
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10s}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release --quiet -p stampede-server -p stampede-bench
bin="$target/release/stampede"; bench="$target/release/stampede-bench"
secret="bench-secret-bench-secret-bench-secret-0123456789"
# Without persistence, like the shared Redis it is compared with (REDIS_CLUSTER_AOF=yes to
# measure AOF always).
eval "$(REDIS_CLUSTER_AOF="${REDIS_CLUSTER_AOF:-no}" ./scripts/redis-cluster.sh start)"
dir=$(mktemp -d)
cleanup() {
  [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true
  ./scripts/redis-cluster.sh stop "$REDIS_CLUSTER_DIR"
  rm -rf "$dir"
}
trap cleanup EXIT
. scripts/lib/private.sh

run() { # TOPOLOGY TEMPLATES
  local topology=$1 templates=$2 tag port redis_cfg
  tag="stampede_bench_$(date +%s%N | tail -c 9)"
  if [ "$topology" = cluster ]; then
    redis_cfg="mode = \"cluster\"
urls = [\"$(echo "$STAMPEDE_TEST_REDIS_CLUSTER" | sed 's/,/", "/g')\"]"
  else
    redis_cfg='url = "redis://127.0.0.1:6379"'
  fi
  mkdir -p "$dir/$tag"
  cat >"$dir/$tag/stampede.toml" <<TOML
[server]
data_dir = "$dir/$tag"
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
$redis_cfg
TOML
  port=$(free_port)
  "$bin" serve --config "$dir/$tag/stampede.toml" --listen "127.0.0.1:$port" >"$dir/$tag/server.log" 2>&1 &
  server=$!
  for _ in $(seq 200); do curl -fs "127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
  echo "== $topology, $templates template(s)"
  "$bench" claim --base "http://127.0.0.1:$port" --jwt-secret "$secret" --server-pid "$server" \
    --users 100000 --templates "$templates" --stock 20000000 --limit 100 -c 64 -d "$duration" \
    --warmup 2s 2>/dev/null | grep -vE '^\{' || true
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  for i in 0 1; do mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`${tag}_$i\`"; done
  # The single-Redis runs leave their keys on the shared Redis (the cluster is thrown away).
  redis-cli --scan --pattern "$tag*" | xargs -r -n 500 redis-cli del >/dev/null
}

for templates in 1 10; do
  run single "$templates"
  run cluster "$templates"
done
# One cluster master runs the same redis-server on the same cores: its ceiling is this one's
# (redis-benchmark's claim-like Lua uses two keys of different slots, which a cluster refuses).
echo "== Redis ceiling (the single Redis, 6379)"
"$bench" redis-ceiling 2>/dev/null | grep -vE '^\{' || true
