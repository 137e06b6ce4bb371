#!/usr/bin/env bash
# The whole test suite, as the README's second command and CI (.ci/run) run it:
# formatting and lints, every crate's unit/integration tests, then the HTTP behavioural
# suite once per storage backend (SQLite, MySQL 1x1, MySQL 2x4) against real services
# (MariaDB, Redis), and on MySQL 2x4 over a private 3-master Redis Cluster
# (scripts/redis-cluster.sh) and a private Sentinel group (scripts/redis-sentinel.sh), then the kill -9 crash tests against the release binary in both
# modes (distributed: on the single Redis and on the cluster), the
# backup-under-load test, the API contract run (scripts/schemathesis.sh), then the fault suite
# (RELIABILITY.md) with its availability bars asserted. Before any of it, scripts/check-deploy.sh checks deploy/ (alert rules with
# promtool, installed from Debian's `prometheus` package when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp); trap 'rm -f "$log"' EXIT
export PATH="$HOME/.cargo/bin:$PATH"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

./scripts/services.sh
# A private 3-master Redis Cluster for the cluster runs below (never the shared Redis). The
# hot-redis crate's cluster tests and the three-node test (crates/server/tests/multinode.rs)
# read its seeds from the environment; the other distributed
# runs unset it to use the single Redis.
eval "$(./scripts/redis-cluster.sh start)"
stop_private() {
  ./scripts/redis-cluster.sh stop "$REDIS_CLUSTER_DIR"
  [ -z "${REDIS_SENTINEL_DIR:-}" ] || ./scripts/redis-sentinel.sh stop "$REDIS_SENTINEL_DIR"
  rm -f "$log"
}
trap stop_private EXIT

# Databases a killed earlier run left behind (each test drops its own when it ends).
mariadb -uroot -h127.0.0.1 -N -e "SELECT schema_name FROM information_schema.schemata WHERE schema_name LIKE 'stampede\_t\_%'" \
  | while read -r db; do mariadb -uroot -h127.0.0.1 -e "DROP DATABASE IF EXISTS \`$db\`"; done

echo "== deploy/: promtool check + test rules, dashboard JSON and PromQL, systemd unit"
./scripts/check-deploy.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --quiet -- -D warnings

echo "== unit and adapter tests (SQLite suite included)"
cargo test --workspace --quiet 2>&1 | tee -a "$log"

echo "== a client generated from the served OpenAPI document runs the merchant and shopper flows"
CLIENT_FLOWS_VENV="${CARGO_TARGET_DIR:-target}/client-venv" \
  ./scripts/client-flows.sh "${CARGO_TARGET_DIR:-target}/debug/stampede"

for backend in mysql-1x1 mysql-2x4; do
  echo "== HTTP behavioural suite on $backend"
  STAMPEDE_TEST_BACKEND=$backend env -u STAMPEDE_TEST_REDIS_CLUSTER \
    cargo test --quiet -p stampede-server --test api 2>&1 | tee -a "$log"
done
echo "== HTTP behavioural suite (races included) on mysql-2x4 over the Redis Cluster"
STAMPEDE_TEST_BACKEND=mysql-2x4 cargo test --quiet -p stampede-server --test api 2>&1 | tee -a "$log"
echo "== HTTP behavioural suite on mysql-2x4 over Redis Sentinel (master, replica, 3 sentinels; claims wait for the replica)"
eval "$(./scripts/redis-sentinel.sh start)"
STAMPEDE_TEST_BACKEND=mysql-2x4 env -u STAMPEDE_TEST_REDIS_CLUSTER \
  cargo test --quiet -p stampede-server --test api 2>&1 | tee -a "$log"
./scripts/redis-sentinel.sh stop "$REDIS_SENTINEL_DIR"
unset REDIS_SENTINEL_DIR STAMPEDE_TEST_REDIS_SENTINEL STAMPEDE_TEST_REDIS_SENTINEL_MASTER
echo "== crash tests: the release binary killed with SIGKILL mid-load (embedded, distributed, distributed on the Redis Cluster)"
cargo test --release --quiet -p stampede-server --test crash 2>&1 | tee -a "$log"
STAMPEDE_TEST_BACKEND=mysql-2x4 env -u STAMPEDE_TEST_REDIS_CLUSTER \
  cargo test --release --quiet -p stampede-server --test crash 2>&1 | tee -a "$log"
STAMPEDE_TEST_BACKEND=mysql-2x4 cargo test --release --quiet -p stampede-server --test crash 2>&1 | tee -a "$log"
echo "== backup under claim load, restored into a new data dir (release binary)"
cargo test --release --quiet -p stampede-server --test backup 2>&1 | tee -a "$log"
echo "== the API contract: Schemathesis (every check, every role, stateful chains) against the release binary"
./scripts/schemathesis.sh 20 300 "${CARGO_TARGET_DIR:-target}/release/stampede"
echo "== fault suite: two release nodes over a private MariaDB and Redis behind fault-injecting proxies"
STAMPEDE_FAULTS_STRICT="${STAMPEDE_FAULTS_STRICT:-1}" \
  cargo test --release --quiet -p stampede-server --test faults -- --test-threads=1 2>&1 | tee -a "$log"

# One closing line over every cargo test run above.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "%d passed, %d failed\n", p, f }' "$log"
