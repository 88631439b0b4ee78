#!/usr/bin/env bash
# The performance benchmark: every figure docs/performance.md tracks, each beside its baseline on
# the same machine in the same run (pgbench replaying walletd's own claim statements, a bare axum
# handler under the same load tool), then a table of figures and ratios written to a file.
# Usage: scripts/bench.sh [output file, default docs/bench-results.md]
# Environment: BENCH_SECONDS (per load run, default 10), BENCH_ORDERS (claim runs, default 2000),
# BENCH_PROFILE=1 (also record CPU profiles of walletd with perf, under target/bench/).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-docs/bench-results.md}"
secs="${BENCH_SECONDS:-10}"
orders="${BENCH_ORDERS:-2000}"
cargo build --release -q -p walletd -p bench
root="$PWD"
bin="$root/target/release"
mkdir -p target/bench
# The admin the benchmark mints tokens for (the server gives the role only to listed addresses).
export WALLETD_ADMIN_ADDRESSES=0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed
# Statement statistics: where the database's time goes, and the statements pgbench replays.
export TEST_INFRA_PG_OPTS="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top"
source scripts/test-infra.sh
work="$(mktemp -d /tmp/walletd-bench-all.XXXXXX)"
pid=""
stop_server() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }; pid=""; }
cleanup() { stop_server; stop_test_infra; rm -rf "$work"; }
trap cleanup EXIT
start_test_infra
command -v wrk >/dev/null 2>&1 || apt_install wrk
[ "${BENCH_PROFILE:-0}" = 1 ] && { command -v perf >/dev/null 2>&1 || apt_install linux-perf; }
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
pg_admin="$WALLETD_TEST_POSTGRES_URL"
# In the template, so that every database created below has it.
psql -qtA "${pg_admin%/*}/template1" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" >/dev/null

# A fresh database for each PostgreSQL run, so no run reads another's rows.
new_db() { psql -qtA "$pg_admin" -c "CREATE DATABASE $1" >/dev/null; echo "${pg_admin%/*}/$1"; }

# start_walletd NAME [VAR=value ...]: walletd in its own directory with that environment; sets
# pid, port, base and admin (an admin token).
start_walletd() {
  local name="$1"; shift
  mkdir -p "$work/$name"
  port="$(free_port)"
  local env=(WALLETD_HTTP_ADDR="127.0.0.1:$port" WALLETD_GRPC_ADDR="127.0.0.1:$(free_port)" WALLETD_METRICS_ADDR="127.0.0.1:$(free_port)"
    WALLETD_RATE_LIMIT_PER_MINUTE=0 WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE=0 WALLETD_HTTP_MAX_CONNECTIONS=20000
    WALLETD_LOG_FORMAT=json "$@")
  (cd "$work/$name" && exec env "${env[@]}" "$bin/walletd" serve >"$work/$name/server.log" 2>&1) &
  pid=$!
  base="http://127.0.0.1:$port"
  until curl -sf "$base/health/ready" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/$name/server.log" >&2; exit 1; }
    sleep 0.05
  done
  admin=$(cd "$work/$name" && env "${env[@]}" "$bin/walletd" token --role admin --address "$WALLETD_ADMIN_ADDRESSES" --ttl-secs 3600)
  if [ "${BENCH_PROFILE:-0}" = 1 ]; then
    perf record -F 499 -g -p "$pid" -o "$root/target/bench/$name-$port.perf.data" >/dev/null 2>&1 &
  fi
}

# claims NAME [walletd-bench options]: the claim benchmark against the running walletd.
claims() {
  local name="$1"; shift
  echo "== $name" >&2
  "$bin/walletd-bench" --url "$base" --admin-token "$admin" --server-pid "$pid" --orders "$orders" \
    --json "$work/$name.json" "$@" | tee "$work/$name.txt" >&2
}

# 1. Claims on PostgreSQL, 64 in flight, 3 shoppers racing for each order.
db=$(new_db bench_claims)
start_walletd claims-pg WALLETD_DATABASE_URL="$db"
claims claims-pg --concurrency 64 --on-claims-start "psql -qtA '$db' -c 'SELECT pg_stat_statements_reset()' >/dev/null"
psql -qtA "$db" -F $'\t' -c "SELECT calls, round(total_exec_time::numeric, 1), round(mean_exec_time::numeric, 3), regexp_replace(query, '\s+', ' ', 'g')
  FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
  ORDER BY total_exec_time DESC LIMIT 25" >"$work/statements.tsv"
stop_server

# 2. pgbench replaying the claim path's statements (scripts/bench/claim.sql) on that database, 64 clients.
psql -qtA "$db" -c "CREATE TABLE bench_orders AS SELECT row_number() OVER (ORDER BY id) AS n, id FROM orders" \
  -c "CREATE TABLE bench_shoppers AS SELECT row_number() OVER (ORDER BY user_id) AS n, user_id FROM (SELECT DISTINCT user_id FROM supplies) s" \
  -c "ALTER TABLE bench_orders ADD PRIMARY KEY (n)" -c "ALTER TABLE bench_shoppers ADD PRIMARY KEY (n)" >/dev/null
bench_vars=(-D "orders=$(psql -qtA "$db" -c "SELECT count(*) FROM bench_orders")" -D "shoppers=$(psql -qtA "$db" -c "SELECT count(*) FROM bench_shoppers")")
pgbench_claims() {
  echo "== pgbench claim path, $1" >&2
  pgbench -n -M prepared -c 64 -j 2 -T "$secs" "${bench_vars[@]}" -f scripts/bench/claim.sql "$db" 2>&1 | tee "$work/pgbench-$1.txt" >&2
}
pgbench_claims statements

# 3. Processing lag at half the sustained rate (claims won and processed per second), one shopper
# per order, on the embedded log (walletd's own consumers reading the outbox) and over Kafka.
half=$(python3 -c "import json; print(round(json.load(open('$work/claims-pg.json'))['settled_per_s'] / 2))")
db=$(new_db bench_lag_log)
start_walletd lag-log WALLETD_DATABASE_URL="$db"
claims lag-log --concurrency 256 --attempts-per-order 1 --rate "$half"
stop_server
db=$(new_db bench_lag_kafka)
start_walletd lag-kafka WALLETD_DATABASE_URL="$db" WALLETD_KAFKA_BROKERS="$WALLETD_TEST_KAFKA_BROKERS"
claims lag-kafka --concurrency 256 --attempts-per-order 1 --rate "$half"
stop_server
# The same with a 10 ms fetch wait: tansu holds every fetch for the whole wait (docs/performance.md).
db=$(new_db bench_lag_kafka_10)
start_walletd lag-kafka-10 WALLETD_DATABASE_URL="$db" WALLETD_KAFKA_BROKERS="$WALLETD_TEST_KAFKA_BROKERS" WALLETD_KAFKA_FETCH_WAIT_MS=10
claims lag-kafka-10 --concurrency 256 --attempts-per-order 1 --rate "$half"
stop_server

# 4. Claims on SQLite (the embedded defaults), 32 in flight as in the first measurement, and 64.
start_walletd claims-sqlite WALLETD_DATABASE_URL="sqlite://$work/claims.db"
claims claims-sqlite --concurrency 32
stop_server
start_walletd claims-sqlite-64 WALLETD_DATABASE_URL="sqlite://$work/claims64.db"
claims claims-sqlite-64 --concurrency 64
stop_server

# 5. A cached, authenticated GET on the embedded defaults against bare axum: wrk at 64 connections;
# then 10,000 connections held open: the most walletd serves over them (paced past what it can), and
# p99 and memory at half that, walletd and bare axum at the same rate.
wrk_run() { # NAME URL [token]
  echo "== $1" >&2
  wrk -t2 -c64 -d"${secs}s" --latency ${3:+-H "Authorization: Bearer $3"} "$2" | tee "$work/$1.txt" >&2
}
start_walletd get-walletd WALLETD_DATABASE_URL="sqlite://$work/get.db"
me=$(curl -sf "$base/v1/me" -H "authorization: Bearer $admin" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
curl -sf "$base/v1/admin/deposits" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
  -d "{\"user_id\":\"$me\",\"currency\":\"USDC\",\"amount\":\"100\",\"reference\":\"bench-get\"}" >/dev/null
order=$(curl -sf "$base/v1/orders" -H "authorization: Bearer $admin" -H 'content-type: application/json' \
  -d '{"currency":"USDC","items":[{"product_id":"sku-1","product_name":"Mug","price":"12.5","quantity":2}]}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
wrk_run get-walletd "$base/v1/orders/$order" "$admin"
get_max=$(awk '/^Requests\/sec/ { printf "%d", $2 }' "$work/get-walletd.txt")
stop_server
conns() { # NAME RATE [token]: 10,000 connections against the server on $port
  echo "== $1" >&2
  "$bin/conn_load" --addr "127.0.0.1:$port" --path "/v1/orders/$order" ${3:+--token "$3"} --connections 10000 \
    --rate "$2" --seconds "$secs" --server-pid "$pid" --label "$1" | tee "$work/$1.txt" >&2
}
# The same server again (same directory, so the same signing key), its memory measured from start.
start_walletd get-walletd WALLETD_DATABASE_URL="sqlite://$work/get.db"
conns conns-walletd-max "$get_max" "$admin"
conns_half=$(awk '/req\/s/ { printf "%d", $2 / 2 }' "$work/conns-walletd-max.txt")
stop_server
start_walletd get-walletd WALLETD_DATABASE_URL="sqlite://$work/get.db"
conns conns-walletd "$conns_half" "$admin"
stop_server
bare_port=$(free_port)
"$bin/bare_axum" "127.0.0.1:$bare_port" & pid=$!
until curl -sf "http://127.0.0.1:$bare_port/v1/orders/x" >/dev/null; do sleep 0.05; done
wrk_run get-bare "http://127.0.0.1:$bare_port/v1/orders/$order"
stop_server
"$bin/bare_axum" "127.0.0.1:$bare_port" & pid=$!
until curl -sf "http://127.0.0.1:$bare_port/v1/orders/x" >/dev/null; do sleep 0.05; done
port="$bare_port" conns conns-bare "$conns_half"
stop_server

# 6. Start to ready on the embedded defaults.
echo "== start-up" >&2
scripts/startup-time.sh 5 | tee "$work/startup.txt" >&2

python3 scripts/bench/table.py "$work" >"$out"
cat "$out"
echo "written to $out" >&2
