#!/usr/bin/env bash
# GET /v1/orders/{id}: walletd with Redis cache hits, walletd with the cache disabled (PostgreSQL
# on every read), walletd whose Redis is down (breaker open), and a bare axum handler, all driven by the same load tool with the same settings.
# Usage: scripts/bench-get.sh [seconds per run, default 10] [concurrent clients, default 32]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
clients="${2:-32}"
cargo build --release -q -p walletd -p bench
root="$PWD"
# The admin the benchmark mints a token for (the server gives the role only to listed addresses).
export WALLETD_ADMIN_ADDRESSES=0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed
source scripts/test-infra.sh
dir="$(mktemp -d /tmp/walletd-bench-get.XXXXXX)"
pid=""
stop_server() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }; pid=""; }
cleanup() { stop_server; stop_test_infra; rm -rf "$dir"; }
trap cleanup EXIT
start_test_infra
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
export WALLETD_DATABASE_URL="$WALLETD_TEST_POSTGRES_URL" WALLETD_REDIS_URL="$WALLETD_TEST_REDIS_URL/0"
export WALLETD_HTTP_ADDR="127.0.0.1:$port" WALLETD_GRPC_ADDR="127.0.0.1:$(free_port)" WALLETD_METRICS_ADDR="127.0.0.1:$(free_port)"
# One client token hammering one URL: no rate limit in this measurement.
export WALLETD_RATE_LIMIT_PER_MINUTE=0
start_walletd() {
  (cd "$dir" && WALLETD_CACHE_ENABLED="$1" exec "$root/target/release/walletd" serve >>"$dir/server.log" 2>&1) &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    sleep 0.05
  done
}
load() { "$root/target/release/get_load" --url "$1" --label "$2" --seconds "$seconds" --concurrency "$clients" ${3:+--token "$3"}; }

start_walletd true
token=$(cd "$dir" && "$root/target/release/walletd" token --role admin --address "$WALLETD_ADMIN_ADDRESSES" --ttl-secs 3600)
# Orders are funded: a deposit for the admin (who places the order) first.
me=$(curl -sf "http://127.0.0.1:$port/v1/me" -H "authorization: Bearer $token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -sf "http://127.0.0.1:$port/v1/admin/deposits" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d "{\"user_id\":\"$me\",\"currency\":\"USDC\",\"amount\":\"100\",\"reference\":\"bench-get-$$\"}" >/dev/null
order=$(curl -sf "http://127.0.0.1:$port/v1/orders" -H "authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"currency":"USDC","items":[{"product_id":"sku-1","product_name":"Mug","price":"12.5","quantity":2}]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "GET /v1/orders/$order, $clients clients, ${seconds}s per run, $(nproc) cores, PostgreSQL and Redis on this machine"
out=$(mktemp)
load "http://127.0.0.1:$port/v1/orders/$order" "cache (redis)" "$token" | tee -a "$out"
stop_server
start_walletd false
load "http://127.0.0.1:$port/v1/orders/$order" "no cache" "$token" | tee -a "$out"
stop_server
# Redis down: nothing listens on this port, so calls fail fast, the breaker opens, reads go to PostgreSQL.
WALLETD_REDIS_URL="redis://127.0.0.1:$(free_port)/0" start_walletd true
load "http://127.0.0.1:$port/v1/orders/$order" "redis down" "$token" | tee -a "$out"
stop_server
bare=$(free_port)
"$root/target/release/bare_axum" "127.0.0.1:$bare" & pid=$!
until curl -sf "http://127.0.0.1:$bare/v1/orders/x" >/dev/null; do sleep 0.05; done
load "http://127.0.0.1:$bare/v1/orders/$order" "bare axum" | tee -a "$out"
awk '{ for (i = 1; i <= NF; i++) if ($i == "req/s") { rps[NR] = $(i-1) } }
     END { printf "ratios: cache/no-cache %.2f, cache/bare %.2f, no-cache/bare %.2f, redis-down/cache %.2f\n", rps[1]/rps[2], rps[1]/rps[4], rps[2]/rps[4], rps[3]/rps[1] }' "$out"
rm -f "$out"
