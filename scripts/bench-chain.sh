#!/usr/bin/env bash
# The deposit watcher's ingestion on PostgreSQL (crates/bench/src/bin/chain_ingest.rs): anvil with
# ERC-20 transfers to deposit addresses pre-mined, then walletd started on it from block 0; prints
# blocks/s, deposits/s, the time to credit them all and walletd's peak memory.
# Usage: scripts/bench-chain.sh [transfers, default 10000] [per block, default 10] [block range, default 500]
set -euo pipefail
cd "$(dirname "$0")/.."
transfers="${1:-10000}"
per_block="${2:-10}"
range="${3:-500}"
cargo build --release -q -p walletd -p bench
root="$PWD"
source scripts/test-infra.sh
dir="$(mktemp -d /tmp/walletd-bench-chain.XXXXXX)"
anvil_pid=""
cleanup() {
  [ -n "$anvil_pid" ] && { kill "$anvil_pid" 2>/dev/null; wait "$anvil_pid" 2>/dev/null || true; }
  stop_test_infra
  rm -rf "$dir"
}
trap cleanup EXIT
start_test_infra
port="$(free_port)"
"$WALLETD_TEST_ANVIL_BIN" --host 127.0.0.1 --port "$port" --chain-id 31337 --accounts 1 --silent &
anvil_pid=$!
# Until anvil answers, for at most 30 s.
for _ in $(seq 1 300); do
  curl -sf -H 'content-type: application/json' -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "http://127.0.0.1:$port" >/dev/null && break
  kill -0 "$anvil_pid" 2>/dev/null || { echo "anvil did not start" >&2; exit 1; }
  sleep 0.1
done
curl -sf -H 'content-type: application/json' -d '{"jsonrpc":"2.0","id":1,"method":"eth_chainId","params":[]}' "http://127.0.0.1:$port" >/dev/null \
  || { echo "anvil did not answer within 30 s" >&2; exit 1; }
echo "deposit watcher ingestion, $(nproc) cores, PostgreSQL $(psql -qtA "$WALLETD_TEST_POSTGRES_URL" -c 'SHOW server_version'), $("$WALLETD_TEST_ANVIL_BIN" --version | head -1)"
"$root/target/release/chain_ingest" --walletd "$root/target/release/walletd" --anvil "http://127.0.0.1:$port" \
  --token-bin "$WALLETD_TEST_TOKEN_BIN" --database-url "$WALLETD_TEST_POSTGRES_URL" --dir "$dir" \
  --transfers "$transfers" --per-block "$per_block" --block-range "$range"
