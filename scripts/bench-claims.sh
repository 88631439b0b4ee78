#!/usr/bin/env bash
# The claim benchmark against a real server: builds release binaries, starts walletd on SQLite or
# on a throwaway PostgreSQL (scripts/test-infra.sh), mints an admin token, runs walletd-bench.
# Usage: scripts/bench-claims.sh [sqlite|postgres|postgres-kafka] [walletd-bench options, e.g. --orders 2000]
# postgres-kafka: events go through the outbox relay and Kafka consumer groups (tansu from the test infra).
set -euo pipefail
cd "$(dirname "$0")/.."
backend="${1:-sqlite}"
[ $# -gt 0 ] && shift
cargo build --release -q -p walletd -p bench
root="$PWD"
# The admin the benchmark mints a token for (the server gives the role only to listed addresses).
export WALLETD_ADMIN_ADDRESSES=0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed
dir="$(mktemp -d /tmp/walletd-bench.XXXXXX)"
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  case "$backend" in postgres*) stop_test_infra ;; esac
  rm -rf "$dir"
}
trap cleanup EXIT
case "$backend" in
  sqlite) url="sqlite://$dir/walletd.db" ;;
  postgres) source scripts/test-infra.sh; start_test_infra; url="$WALLETD_TEST_POSTGRES_URL" ;;
  postgres-kafka)
    source scripts/test-infra.sh; start_test_infra; url="$WALLETD_TEST_POSTGRES_URL"
    export WALLETD_KAFKA_BROKERS="$WALLETD_TEST_KAFKA_BROKERS"
    ;;
  *) echo "usage: $0 [sqlite|postgres|postgres-kafka] [bench options]" >&2; exit 2 ;;
esac
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
gport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export WALLETD_DATABASE_URL="$url" WALLETD_HTTP_ADDR="127.0.0.1:$port" WALLETD_GRPC_ADDR="127.0.0.1:$gport" WALLETD_METRICS_ADDR="127.0.0.1:$mport"
# One load generator on one address stands for many clients: no rate limits here.
export WALLETD_RATE_LIMIT_PER_MINUTE=0 WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE=0
(cd "$dir" && exec "$root/target/release/walletd" serve >"$dir/server.log" 2>&1) &
pid=$!
until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  sleep 0.05
done
admin=$(cd "$dir" && "$root/target/release/walletd" token --role admin --address "$WALLETD_ADMIN_ADDRESSES" --ttl-secs 3600)
echo "backend: $backend ($(nproc) cores)"
start_s=$(date +%s%N)
"$root/target/release/walletd-bench" --url "http://127.0.0.1:$port" --admin-token "$admin" --server-pid "$pid" "$@"
echo "bench wall time: $(( ($(date +%s%N) - start_s) / 1000000 )) ms"
if [ "$backend" = postgres-kafka ]; then
  curl -s "http://127.0.0.1:$mport/metrics" | awk '/^outbox_published_total/ { print "relay: " $2 " events published to Kafka during the run" }'
  # The relay at its ceiling: mark the whole outbox unpublished and time the drain (consumers see
  # every event again; their inboxes turn them away).
  psql -qtA "$url" -c "UPDATE outbox SET published_at = NULL" >/dev/null
  backlog=$(psql -qtA "$url" -c "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")
  drain_start=$(date +%s%N)
  until [ "$(psql -qtA "$url" -c "SELECT COUNT(*) FROM outbox WHERE published_at IS NULL")" = 0 ]; do sleep 0.05; done
  drain_ms=$(( ($(date +%s%N) - drain_start) / 1000000 ))
  echo "relay drain: $backlog events in $drain_ms ms = $(( backlog * 1000 / (drain_ms > 0 ? drain_ms : 1) )) events/s"
fi
