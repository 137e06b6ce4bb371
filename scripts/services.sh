#!/usr/bin/env bash
# Makes sure the services the distributed-mode tests talk to are up on loopback:
# MariaDB 127.0.0.1:3306 (root, empty password), Redis 127.0.0.1:6379, NATS JetStream
# 127.0.0.1:4222. Anything not reachable is installed from Debian's packages (when missing)
# and started; the redis-server, redis-cli and nats-server binaries are installed for the
# private instances tests start. Safe to run again: reachable services are left alone.
set -euo pipefail

log() { echo "services: $*" >&2; }

reachable() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # port seconds
  for _ in $(seq 1 "$(( $2 * 10 ))"); do reachable "$1" && return 0; sleep 0.1; done
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  log "installing $*"
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

mariadb_ok() { mariadb -uroot -h127.0.0.1 -P3306 -e 'SELECT 1' >/dev/null 2>&1; }

ensure_mariadb() {
  if reachable 3306 && mariadb_ok; then return; fi
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || install mariadb-server mariadb-client
  if ! reachable 3306; then
    log "starting MariaDB"
    as_root mkdir -p /run/mysqld && as_root chown mysql:mysql /run/mysqld 2>/dev/null || true
    as_root start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql --bind-address=127.0.0.1
    wait_for 3306 60 || { log "MariaDB did not come up"; exit 1; }
  fi
  if ! mariadb_ok; then
    # A fresh Debian install authenticates root by unix socket only; the tests connect over
    # TCP as root with an empty password, as on the CI machines.
    log "allowing root over TCP with an empty password"
    as_root mariadb -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD(''); FLUSH PRIVILEGES;"
  fi
  mariadb_ok || { log "cannot log in to MariaDB as root over TCP"; exit 1; }
}

ensure_redis() {
  reachable 6379 && return
  command -v redis-server >/dev/null 2>&1 || install redis-server
  log "starting Redis"
  as_root mkdir -p /var/lib/redis /var/log/redis
  as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  wait_for 6379 30 || { log "Redis did not come up"; exit 1; }
}

ensure_nats() {
  reachable 4222 && return
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || install nats-server
  log "starting NATS with JetStream"
  as_root mkdir -p /var/lib/nats-server
  local bin; bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log
  wait_for 4222 30 || { log "NATS did not come up"; exit 1; }
}

# The binaries private instances need (the Redis Cluster, the fault and failover tests start
# their own servers on spare ports), even when the shared services run elsewhere.
ensure_binaries() {
  { command -v redis-server && command -v redis-cli; } >/dev/null 2>&1 || install redis-server redis-tools
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || install nats-server
}

ensure_mariadb
ensure_redis
ensure_nats
ensure_binaries
log "MariaDB, Redis and NATS are reachable"
