#!/usr/bin/env bash
# The contract fuzzer: schemathesis (from PyPI, in a virtual environment under target/) generates
# requests from /openapi.json of a real walletd, authenticated as an admin, on SQLite and on
# PostgreSQL (a chain configured, so its routes are in the document), and checks that no answer is a 5xx and that every answer's status, content type,
# headers and body are the documented ones. It fails on any finding, and unless at least
# FUZZ_MIN_CASES (5000) cases ran per backend.
# Usage: scripts/fuzz-api.sh [sqlite] [postgres]  (default: both; PostgreSQL needs scripts/test-infra.sh
# started, as scripts/test.sh does, or WALLETD_TEST_POSTGRES_URL set).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
version=4.32.5
venv="$root/target/fuzz-venv"
examples="${FUZZ_EXAMPLES:-300}"
min_cases="${FUZZ_MIN_CASES:-5000}"
backends=("$@")
[ ${#backends[@]} -eq 0 ] && backends=(sqlite postgres)

if ! "$venv/bin/schemathesis" --version 2>/dev/null | grep -q "$version"; then
  echo "fuzz: installing schemathesis $version into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "schemathesis==$version"
fi
cargo build -q -p walletd

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
dir="$(mktemp -d /tmp/walletd-fuzz.XXXXXX)"
pid=""
stop_server() { [ -n "$pid" ] && { kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; }; pid=""; }
trap 'stop_server; [ -n "${FUZZ_KEEP:-}" ] || rm -rf "$dir"' EXIT

# The admin the run signs as; limits off (one client, thousands of requests); a short body deadline.
export WALLETD_ADMIN_ADDRESSES=0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed
export WALLETD_RATE_LIMIT_PER_MINUTE=0 WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE=0 WALLETD_LOG_FORMAT=json

for backend in "${backends[@]}"; do
  work="$dir/$backend"
  mkdir -p "$work"
  case "$backend" in
    sqlite) unset WALLETD_DATABASE_URL ;;
    postgres)
      : "${WALLETD_TEST_POSTGRES_URL:?PostgreSQL: run through scripts/test.sh, or set WALLETD_TEST_POSTGRES_URL}"
      db="walletd_fuzz_$$"
      "${WALLETD_TEST_PG_BIN:+$WALLETD_TEST_PG_BIN/}psql" "$WALLETD_TEST_POSTGRES_URL" -v ON_ERROR_STOP=1 -c "CREATE DATABASE $db" >/dev/null
      export WALLETD_DATABASE_URL="${WALLETD_TEST_POSTGRES_URL%/*}/$db" ;;
    *) echo "fuzz: unknown backend $backend (sqlite or postgres)" >&2; exit 2 ;;
  esac
  # A chain, so its routes are fuzzed too; its node is nowhere (the watcher retries quietly), and no
  # signer key is set (withdrawals stay requested).
  cat >"$work/chains.toml" <<TOML
[[chain]]
name = "local"
chain_id = 31337
rpc_url = "http://127.0.0.1:9"
confirmations = 1
xpub = "xpub661MyMwAqRbcFtXgS5sYJABqqG9YLmC4Q1Rdap9gSE8NqtwybGhePY2gZ29ESFjqJoCu1Rupje8YtGqsefD265TMg7usUDFdp6W1EGMcet8"

[[chain.asset]]
currency = "ETH"
native = true

[[chain.asset]]
currency = "USDC"
contract = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
decimals = 6
TOML
  export WALLETD_CHAINS_FILE="$work/chains.toml"
  port=$(free_port)
  export WALLETD_HTTP_ADDR="127.0.0.1:$port" WALLETD_GRPC_ADDR="127.0.0.1:$(free_port)" WALLETD_METRICS_ADDR="127.0.0.1:$(free_port)"
  (cd "$work" && exec "$root/target/debug/walletd" serve >"$work/server.log" 2>&1) &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null; do
    kill -0 "$pid" 2>/dev/null || { cat "$work/server.log" >&2; exit 1; }
    sleep 0.05
  done
  token=$(cd "$work" && "$root/target/debug/walletd" token --role admin --address "$WALLETD_ADMIN_ADDRESSES" --ttl-secs 7200)
  # The admin's orders are funded, so generated orders get past the wallet.
  admin_id=$(curl -sf "http://127.0.0.1:$port/v1/me" -H "authorization: Bearer $token" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
  for funds in USDC:100000000 ETH:1000000 BTC:1000000 USDT:100000000 SOL:100000000; do
    curl -sf "http://127.0.0.1:$port/v1/admin/deposits" -H "authorization: Bearer $token" -H 'content-type: application/json' \
      -d "{\"user_id\":\"$admin_id\",\"currency\":\"${funds%%:*}\",\"amount\":\"${funds#*:}\",\"reference\":\"fuzz-${funds%%:*}\"}" >/dev/null
  done
  echo "fuzz: $backend: schemathesis $version, $examples examples per operation" >&2
  set +e
  # (From the server's directory: schemathesis keeps a cache in the current one.)
  (cd "$work" && "$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
    --header "Authorization: Bearer $token" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
    --max-examples "$examples" --seed 20261126 --workers 2 --no-color \
    >"$work/schemathesis.txt" 2>&1)
  status=$?
  set -e
  cases=$(grep -oE '[0-9]+ generated' "$work/schemathesis.txt" | tail -1 | grep -oE '[0-9]+' || echo 0)
  fivexx=$(grep -cE '^\[5[0-9][0-9]\]' "$work/schemathesis.txt" || true)
  if [ "$status" -ne 0 ]; then
    cat "$work/schemathesis.txt" >&2
    grep '"level":"ERROR"' "$work/server.log" | tail -20 >&2 || true
    echo "fuzz: $backend: FAILED after $cases cases" >&2
    exit 1
  fi
  if [ "$cases" -lt "$min_cases" ]; then
    tail -20 "$work/schemathesis.txt" >&2
    echo "fuzz: $backend: only $cases cases ran, fewer than $min_cases" >&2
    exit 1
  fi
  echo "fuzz: $backend: $cases cases, 0 failures ($fivexx 5xx)" >&2
  stop_server
done
