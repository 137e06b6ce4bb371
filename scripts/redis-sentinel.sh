#!/usr/bin/env bash
# A private Redis group under Sentinel for the tests: a master and one replica (AOF with
# appendfsync always on both) and three sentinels (quorum 2) on spare ports, data in a temp
# dir, never the shared Redis on 6379.
#
#   eval "$(scripts/redis-sentinel.sh start)"  # exports STAMPEDE_TEST_REDIS_SENTINEL (sentinel
#                                              # URLs, comma-separated),
#                                              # STAMPEDE_TEST_REDIS_SENTINEL_MASTER (its name),
#                                              # REDIS_SENTINEL_DIR and REDIS_SENTINEL_MASTER_PORT
#   scripts/redis-sentinel.sh revive "$REDIS_SENTINEL_DIR" PORT   # restarts a killed data node
#                                              # on its own data; Sentinel makes it a replica
#   scripts/redis-sentinel.sh stop "$REDIS_SENTINEL_DIR"
set -euo pipefail
cmd="${1:-}"
redis_server=$(command -v redis-server || echo /usr/bin/redis-server)
redis_cli=$(command -v redis-cli || echo /usr/bin/redis-cli)
name=stampede

. "$(dirname "$0")/lib/private.sh"
up() { for _ in $(seq 100); do "$redis_cli" -p "$1" ping >/dev/null 2>&1 && return 0; sleep 0.05; done; return 1; }

data_node() { # PORT DIR [args…]: one data node, AOF always, daemonized
  local p=$1 d=$2; shift 2
  "$redis_server" --port "$p" --bind 127.0.0.1 --dir "$d/$p" --appendonly yes \
    --appendfsync always --save '' --daemonize yes --pidfile "$d/$p/redis.pid" \
    --logfile "$d/$p/redis.log" "$@" >&2
  up "$p" || { echo "redis-server on $p did not start" >&2; exit 1; }
}

case "$cmd" in
  revive)
    dir="${2:?usage: redis-sentinel.sh revive DIR PORT}"; port="${3:?port}"
    data_node "$port" "$dir"
    ;;
  start)
    dir=$(mktemp -d /tmp/stampede-redis-sentinel.XXXXXX)
    master=$(free_port); replica=$(free_port)
    mkdir -p "$dir/$master" "$dir/$replica"
    data_node "$master" "$dir"
    data_node "$replica" "$dir" --replicaof 127.0.0.1 "$master"
    sentinels=()
    for _ in 1 2 3; do
      s=$(free_port)
      mkdir -p "$dir/s$s"
      cat >"$dir/s$s/sentinel.conf" <<CONF
port $s
bind 127.0.0.1
dir $dir/s$s
sentinel monitor $name 127.0.0.1 $master 2
sentinel down-after-milliseconds $name 1000
sentinel failover-timeout $name 5000
sentinel parallel-syncs $name 1
CONF
      "$redis_server" "$dir/s$s/sentinel.conf" --sentinel --daemonize yes \
        --pidfile "$dir/s$s/redis.pid" --logfile "$dir/s$s/sentinel.log" >&2
      up "$s" || { echo "sentinel on $s did not start" >&2; exit 1; }
      sentinels+=("$s")
    done
    # Ready when the replica is in sync and every sentinel sees the master and the others.
    for _ in $(seq 200); do
      ok=1
      "$redis_cli" -p "$replica" info replication | grep -q 'master_link_status:up' || ok=0
      for s in "${sentinels[@]}"; do
        n=$("$redis_cli" -p "$s" sentinel master "$name" 2>/dev/null | awk 'p { print; exit } /^num-other-sentinels$/ { p = 1 }')
        [ "${n:-0}" -ge 2 ] || ok=0
      done
      [ "$ok" = 1 ] && break
      sleep 0.1
    done
    [ "$ok" = 1 ] || { echo "the Sentinel group did not settle" >&2; exit 1; }
    urls=$(printf 'redis://127.0.0.1:%s,' "${sentinels[@]}")
    echo "export STAMPEDE_TEST_REDIS_SENTINEL=${urls%,}"
    echo "export STAMPEDE_TEST_REDIS_SENTINEL_MASTER=$name"
    echo "export REDIS_SENTINEL_DIR=$dir"
    echo "export REDIS_SENTINEL_MASTER_PORT=$master"
    echo "export REDIS_SENTINEL_REPLICA_PORT=$replica"
    ;;
  stop)
    dir="${2:?usage: redis-sentinel.sh stop DIR}"
    stop_redis_dir "$dir"
    ;;
  *)
    echo "usage: redis-sentinel.sh start | stop DIR" >&2
    exit 2
    ;;
esac
