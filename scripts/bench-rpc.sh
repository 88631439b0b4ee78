#!/usr/bin/env bash
# The same operations over REST and over gRPC, same concurrency, one walletd on the embedded
# defaults (SQLite, the embedded event log, the in-process cache): get order (REST GET
# /v1/orders/{id} vs walletd.v1.OrderService/GetOrder) and create claim (REST POST
# /v1/orders/{id}/claim vs walletd.v1.ClaimService/ClaimOrder, every claim on a fresh pending order).
# Prints requests, errors, req/s, p50 and p99 per operation and transport (crates/bench/src/bin/rpc_load.rs).
# Usage: scripts/bench-rpc.sh [seconds per get run, default 10] [requests in flight, default 32] [more rpc_load options, e.g. --claims 1000]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
concurrency="${2:-32}"
shift $(( $# < 2 ? $# : 2 ))
cargo build --release -q -p walletd -p bench --bin walletd --bin rpc_load
root="$PWD"
# The admin the benchmark mints a token for (the server gives the role only to listed addresses).
export WALLETD_ADMIN_ADDRESSES=0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed
# The embedded defaults: no external database, cache or broker even if the environment names one.
unset WALLETD_DATABASE_URL WALLETD_REDIS_URL WALLETD_KAFKA_BROKERS
dir="$(mktemp -d /tmp/walletd-bench-rpc.XXXXXX)"
pid=""
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
  rm -rf "$dir"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
grpc_port=$(free_port)
export WALLETD_HTTP_ADDR="127.0.0.1:$port" WALLETD_GRPC_ADDR="127.0.0.1:$grpc_port" WALLETD_METRICS_ADDR="127.0.0.1:$(free_port)"
# One load generator on one address stands for many clients: no rate limits in this measurement.
export WALLETD_RATE_LIMIT_PER_MINUTE=0 WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE=0
# The data directory (SQLite database, signing key) is $dir/data.
(cd "$dir" && exec "$root/target/release/walletd" serve >"$dir/server.log" 2>&1) &
pid=$!
until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  sleep 0.05
done
admin=$(cd "$dir" && "$root/target/release/walletd" token --role admin --address "$WALLETD_ADMIN_ADDRESSES" --ttl-secs 3600)
echo "REST vs gRPC, walletd on SQLite (embedded defaults), $concurrency in flight, ${seconds}s per get run, $(nproc) cores, load generator on the same machine"
"$root/target/release/rpc_load" --url "http://127.0.0.1:$port" --grpc "http://127.0.0.1:$grpc_port" \
  --admin-token "$admin" --seconds "$seconds" --concurrency "$concurrency" --server-pid "$pid" "$@"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
