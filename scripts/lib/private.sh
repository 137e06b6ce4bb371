# Sourced (not run) by the scripts that start private servers on spare ports: the Redis
# Cluster and Sentinel groups of the tests, the events soaks, the Redis topology bench.

# A free TCP port on loopback.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# stop_redis_dir DIR: stops every server whose pid file is DIR/*/redis.pid, then removes DIR.
stop_redis_dir() {
  local pidfile
  for pidfile in "$1"/*/redis.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 0.2
  rm -rf "$1"
}

# start_nats: a private `nats-server -js` on $nport (monitoring on $mport), its store in
# $dir/nats; sets $nats_pid and adds it to the caller's `pids` array.
start_nats() {
  local bin; bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  "$bin" -js -a 127.0.0.1 -p "$nport" -m "$mport" -sd "$dir/nats" >>"$dir/nats.log" 2>&1 &
  nats_pid=$!; pids+=("$nats_pid")
  for _ in $(seq 100); do curl -fs "127.0.0.1:$mport/healthz" >/dev/null && return; sleep 0.1; done
  echo "nats-server did not start"; exit 1
}

# stream_messages STREAM: the messages in that stream of the private NATS ($mport).
stream_messages() {
  curl -fs "127.0.0.1:$mport/jsz?streams=true" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(sum(s["state"]["messages"] for a in d.get("account_details", []) for s in a.get("stream_detail", []) if s["name"] == sys.argv[1]))' "$1"
}
