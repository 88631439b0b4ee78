#!/usr/bin/env bash
# Transfers per second on PostgreSQL: walletd (64 clients over many accounts, then all into one hot
# account) beside pgbench running the statements a transfer runs, on the same database in the same
# run; prints both and the ratio. Needs pgbench (postgresql-client, installed with the test infra).
# Usage: scripts/bench-transfers.sh [seconds per run, default 10] [clients, default 64] [users, default 256]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-10}"
clients="${2:-64}"
users="${3:-256}"
cargo build --release -q -p walletd -p bench
root="$PWD"
# The admin the benchmark mints a token for (the server gives the role only to listed addresses).
export WALLETD_ADMIN_ADDRESSES=0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed
source scripts/test-infra.sh
dir="$(mktemp -d /tmp/walletd-bench-transfers.XXXXXX)"
pid=""
cleanup() {
  [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }
  stop_test_infra
  rm -rf "$dir"
}
trap cleanup EXIT
start_test_infra
url="$WALLETD_TEST_POSTGRES_URL"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
export WALLETD_DATABASE_URL="$url" WALLETD_HTTP_ADDR="127.0.0.1:$port" WALLETD_GRPC_ADDR="127.0.0.1:$(free_port)" WALLETD_METRICS_ADDR="127.0.0.1:$(free_port)"
# The load generator is one address standing for many clients: no rate limits in this measurement.
export WALLETD_RATE_LIMIT_PER_MINUTE=0 WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE=0
# As many connections as clients, on both sides.
export WALLETD_DATABASE_POOL_SIZE="$clients"
(cd "$dir" && exec "$root/target/release/walletd" serve >"$dir/server.log" 2>&1) &
pid=$!
until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do
  kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; exit 1; }
  sleep 0.05
done
admin=$(cd "$dir" && "$root/target/release/walletd" token --role admin --address "$WALLETD_ADMIN_ADDRESSES" --ttl-secs 3600)
echo "transfers, $clients clients, ${seconds}s per run, $users accounts, $(nproc) cores, PostgreSQL $(psql -qtA "$url" -c 'SHOW server_version') on this machine"
out="$dir/results"
for mode in spread hot; do
  "$root/target/release/transfer_load" --url "http://127.0.0.1:$port" --admin-token "$admin" \
    --mode "$mode" --clients "$clients" --users "$users" --seconds "$seconds" --server-pid "$pid" | tee -a "$out"
done
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""

# pgbench: the statements of one transfer (crates/wallet/src/store/postgres.rs `apply`, the receiver
# check before it, and the outbox write in crates/events/src/outbox.rs), over accounts of its own,
# prepared statements as walletd runs them (deadpool's statement cache). Owners are fixed-width so
# that text order (the lock order) is numeric order.
psql -qtA "$url" -c "INSERT INTO wallet_accounts (owner, currency, balance, updated_at)
  SELECT 'pgb-' || (1000000 + g), 'USDC', 1000000000, now() FROM generate_series(0, $users - 1) g ON CONFLICT DO NOTHING" >/dev/null
script() { # $1: the receiver expression
  cat <<SQL
\set from random(1, $users - 1)
\set other random(0, $users - 2)
\set to $1
\set lo least(:from, :to)
\set hi greatest(:from, :to)
SELECT id, address, created_at FROM users WHERE id = gen_random_uuid();
BEGIN;
INSERT INTO wallet_accounts (owner, currency, updated_at) VALUES ('pgb-' || (1000000 + :lo), 'USDC', now()) ON CONFLICT DO NOTHING;
SELECT owner, currency, balance, held, version, updated_at FROM wallet_accounts WHERE owner = 'pgb-' || (1000000 + :lo) AND currency = 'USDC' FOR UPDATE;
INSERT INTO wallet_accounts (owner, currency, updated_at) VALUES ('pgb-' || (1000000 + :hi), 'USDC', now()) ON CONFLICT DO NOTHING;
SELECT owner, currency, balance, held, version, updated_at FROM wallet_accounts WHERE owner = 'pgb-' || (1000000 + :hi) AND currency = 'USDC' FOR UPDATE;
INSERT INTO wallet_transactions (id, kind, reference, created_at) VALUES (gen_random_uuid(), 'transfer', NULL, now()) RETURNING id AS txid \gset
INSERT INTO wallet_entries (id, transaction_id, owner, currency, amount, kind, reference, created_at) VALUES (gen_random_uuid(), :txid, 'pgb-' || (1000000 + :from), 'USDC', -0.01, 'transfer', NULL, now());
INSERT INTO wallet_entries (id, transaction_id, owner, currency, amount, kind, reference, created_at) VALUES (gen_random_uuid(), :txid, 'pgb-' || (1000000 + :to), 'USDC', 0.01, 'transfer', NULL, now());
UPDATE wallet_accounts SET balance = balance - 0.01, held = held, version = version + 1, updated_at = now() WHERE owner = 'pgb-' || (1000000 + :from) AND currency = 'USDC';
UPDATE wallet_accounts SET balance = balance + 0.01, held = held, version = version + 1, updated_at = now() WHERE owner = 'pgb-' || (1000000 + :to) AND currency = 'USDC';
INSERT INTO wallet_transfers (id, from_user_id, to_user_id, currency, amount, transaction_id, created_at) VALUES (gen_random_uuid(), gen_random_uuid(), gen_random_uuid(), 'USDC', 0.01, :txid, now());
INSERT INTO outbox (id, event_type, version, topic, aggregate_id, occurred_at, region, correlation_id, actor_id, data) VALUES (gen_random_uuid(), 'wallet.transferred', 1, 'wallet-events', gen_random_uuid(), now(), 'bench', NULL, NULL, '{"bench": true}');
COMMIT;
SQL
}
# spread: a random sender (1..users-1) to any other account; hot: every sender pays account 0.
script '(:from + 1 + :other) % '"$users" >"$dir/spread.sql"
script '0' >"$dir/hot.sql"
for mode in spread hot; do
  tps=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$dir/$mode.sql" "$url" 2>"$dir/pgbench.err" \
    | awk '/^tps = / { printf "%.0f", $3 }')
  [ -n "$tps" ] || { cat "$dir/pgbench.err" >&2; exit 1; }
  printf 'pgbench %-7s %7s transfers/s\n' "$mode" "$tps" | tee -a "$out"
done
awk '
  $1 == "walletd" { w[$2] = $3 }
  $1 == "pgbench" { p[$2] = $3 }
  END { for (m in w) printf "ratio %-7s walletd / pgbench = %.2f\n", m, (p[m] > 0 ? w[m] / p[m] : 0) }
' "$out" | sort
