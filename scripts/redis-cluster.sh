#!/usr/bin/env bash
# A private Redis Cluster for the tests: three masters (no replicas) on spare ports, data in
# a temp dir, never the shared Redis on 6379.
#
#   eval "$(scripts/redis-cluster.sh start)"   # exports STAMPEDE_TEST_REDIS_CLUSTER (seed URLs,
#                                              # comma-separated) and REDIS_CLUSTER_DIR
#   scripts/redis-cluster.sh stop "$REDIS_CLUSTER_DIR"
#
# Durability: AOF with appendfsync always (the recommended production setting), unless
# REDIS_CLUSTER_AOF=no (benchmarks comparing with a Redis that runs without persistence).
set -euo pipefail
cmd="${1:-}"
redis_server=$(command -v redis-server || echo /usr/bin/redis-server)
redis_cli=$(command -v redis-cli || echo /usr/bin/redis-cli)

. "$(dirname "$0")/lib/private.sh"

case "$cmd" in
  start)
    dir=$(mktemp -d /tmp/stampede-redis-cluster.XXXXXX)
    ports=()
    for i in 1 2 3; do
      # A cluster node also listens on port + 10000 (the cluster bus): both must be free.
      while :; do
        p=$(free_port)
        if [ "$p" -lt 55000 ] && ! (exec 3<>"/dev/tcp/127.0.0.1/$((p + 10000))") 2>/dev/null; then break; fi
      done
      mkdir -p "$dir/$p"
      "$redis_server" --port "$p" --bind 127.0.0.1 --dir "$dir/$p" --cluster-enabled yes \
        --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
        --appendonly "${REDIS_CLUSTER_AOF:-yes}" --appendfsync always --save '' \
        --daemonize yes --pidfile "$dir/$p/redis.pid" \
        --logfile "$dir/$p/redis.log" >&2
      ports+=("$p")
    done
    for p in "${ports[@]}"; do
      for _ in $(seq 100); do "$redis_cli" -p "$p" ping >/dev/null 2>&1 && break; sleep 0.05; done
    done
    "$redis_cli" --cluster create $(printf '127.0.0.1:%s ' "${ports[@]}") --cluster-replicas 0 \
      --cluster-yes >"$dir/create.log" 2>&1 || { cat "$dir/create.log" >&2; exit 1; }
    for _ in $(seq 200); do
      ok=1
      for p in "${ports[@]}"; do
        "$redis_cli" -p "$p" cluster info 2>/dev/null | grep -q '^cluster_state:ok' || ok=0
      done
      [ "$ok" = 1 ] && break
      sleep 0.05
    done
    [ "$ok" = 1 ] || { echo "the Redis Cluster did not reach cluster_state:ok" >&2; exit 1; }
    urls=$(printf 'redis://127.0.0.1:%s,' "${ports[@]}")
    echo "export STAMPEDE_TEST_REDIS_CLUSTER=${urls%,}"
    echo "export REDIS_CLUSTER_DIR=$dir"
    ;;
  stop)
    dir="${2:?usage: redis-cluster.sh stop DIR}"
    stop_redis_dir "$dir"
    ;;
  *)
    echo "usage: redis-cluster.sh start | stop DIR" >&2
    exit 2
    ;;
esac
