#!/usr/bin/env bash
# Starts throwaway PostgreSQL and Redis servers on free loopback ports under a temporary directory,
# installing the Debian packages when they are missing. Meant to be sourced by scripts/test.sh:
# it exports WALLETD_TEST_* variables and defines stop_test_infra. TEST_INFRA_PG_OPTS adds server
# options (scripts/bench.sh loads pg_stat_statements with it).
set -euo pipefail

log() { echo "test-infra: $*" >&2; }

apt_install() {
  if [ "$(id -u)" -ne 0 ]; then
    log "need root to apt-get install $*; install them and re-run"; return 1
  fi
  log "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

pg_bindir() {
  local d
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && { echo "$d"; return 0; }
  done
  command -v initdb >/dev/null 2>&1 && dirname "$(command -v initdb)" && return 0
  return 1
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# Runs a command as the postgres system user when we are root (PostgreSQL refuses to run as root).
as_pg() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start_test_infra() {
  PG_BIN="$(pg_bindir || true)"
  if [ -z "$PG_BIN" ]; then apt_install postgresql; PG_BIN="$(pg_bindir)"; fi
  command -v redis-server >/dev/null 2>&1 || apt_install redis-server
  # Prometheus (which brings promtool): tests/prometheus.rs scrapes a walletd with it.
  command -v prometheus >/dev/null 2>&1 || apt_install prometheus
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
  fi

  TEST_INFRA_DIR="$(mktemp -d /tmp/walletd-test-infra.XXXXXX)"
  chmod 755 "$TEST_INFRA_DIR"
  [ "$(id -u)" -eq 0 ] && chown postgres "$TEST_INFRA_DIR"

  local pg_port redis_port
  pg_port="$(free_port)"
  redis_port="$(free_port)"

  log "PostgreSQL ($PG_BIN) on 127.0.0.1:$pg_port, data in $TEST_INFRA_DIR/pg"
  as_pg "$PG_BIN/initdb" -D "$TEST_INFRA_DIR/pg" -U postgres -A trust --no-sync -E UTF8 >"$TEST_INFRA_DIR/initdb.log" 2>&1 \
    || { cat "$TEST_INFRA_DIR/initdb.log" >&2; return 1; }
  as_pg "$PG_BIN/pg_ctl" -D "$TEST_INFRA_DIR/pg" -l "$TEST_INFRA_DIR/pg.log" -w -t 60 \
    -o "-p $pg_port -k $TEST_INFRA_DIR -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 ${TEST_INFRA_PG_OPTS:-}" \
    start >/dev/null || { cat "$TEST_INFRA_DIR/pg.log" >&2; return 1; }

  log "Redis on 127.0.0.1:$redis_port"
  redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$TEST_INFRA_DIR" --pidfile "$TEST_INFRA_DIR/redis.pid" --logfile "$TEST_INFRA_DIR/redis.log"
  local i
  for i in $(seq 1 50); do
    redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
  redis-cli -p "$redis_port" ping >/dev/null

  # The Kafka-protocol broker (DESIGN.md, "Real components"): building it takes minutes, so an
  # installed one is reused.
  if ! command -v tansu >/dev/null 2>&1 && [ ! -x "$HOME/.cargo/bin/tansu" ]; then
    log "installing the tansu broker with cargo (takes several minutes, once)"
    cargo install tansu --locked --features dynostore,libsql >&2
  fi
  local tansu_bin kafka_port i
  tansu_bin="$(command -v tansu || echo "$HOME/.cargo/bin/tansu")"
  kafka_port="$(free_port)"
  log "Kafka-protocol broker (tansu) on 127.0.0.1:$kafka_port"
  (cd "$TEST_INFRA_DIR" && exec "$tansu_bin" broker --listener-url "tcp://127.0.0.1:$kafka_port" \
    --advertised-listener-url "tcp://127.0.0.1:$kafka_port" --storage-engine memory://tansu/ \
    >"$TEST_INFRA_DIR/tansu.log" 2>&1) &
  echo $! >"$TEST_INFRA_DIR/tansu.pid"
  for i in $(seq 1 100); do
    (echo >"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null && break
    sleep 0.1
  done
  (echo >"/dev/tcp/127.0.0.1/$kafka_port") 2>/dev/null || { cat "$TEST_INFRA_DIR/tansu.log" >&2; return 1; }
  export WALLETD_TEST_KAFKA_BROKERS="127.0.0.1:$kafka_port"
  export WALLETD_TEST_TANSU_BIN="$tansu_bin"

  # A real EVM node and the Solidity compiler (DESIGN.md, "Real components"), from npm, installed once
  # into a cache outside the repository. Tests start their own anvil (they mine, reorg and stop it).
  local tools="${WALLETD_NODE_TOOLS:-$HOME/.cache/walletd-node-tools}" anvil_bin
  anvil_bin="$(find "$tools/node_modules/@foundry-rs" -path '*/bin/anvil' -type f 2>/dev/null | head -1 || true)"
  if [ -z "$anvil_bin" ] || [ ! -f "$tools/node_modules/solc/solc.js" ]; then
    command -v npm >/dev/null 2>&1 || apt_install nodejs npm
    log "installing anvil and solc with npm into $tools"
    mkdir -p "$tools"
    (cd "$tools" && npm install --no-audit --no-fund --loglevel=error @foundry-rs/anvil@1.7.1 solc@0.8.37 >&2)
    anvil_bin="$(find "$tools/node_modules/@foundry-rs" -path '*/bin/anvil' -type f | head -1)"
  fi
  [ -x "$anvil_bin" ] || { log "no anvil binary under $tools"; return 1; }
  log "anvil: $("$anvil_bin" --version | head -1)"
  # The test ERC-20, compiled from its source in the repository.
  local repo contracts
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  contracts="$TEST_INFRA_DIR/contracts"
  mkdir -p "$contracts"
  (cd "$repo" && node "$tools/node_modules/solc/solc.js" --bin --optimize -o "$contracts" tests/contracts/TestToken.sol >&2)
  export WALLETD_TEST_ANVIL_BIN="$anvil_bin"
  WALLETD_TEST_TOKEN_BIN="$(ls "$contracts"/*TestToken.bin)"
  export WALLETD_TEST_TOKEN_BIN

  # Headless Chromium (Debian's) and, once, a venv outside the repository with Playwright (its driver
  # only: it drives /usr/bin/chromium) and the secp256k1 and keccak packages the injected wallet signs
  # with, for the browser tests (crates/walletd/tests/browser.rs).
  [ -x /usr/bin/chromium ] || apt_install chromium chromium-driver
  local venv="${WALLETD_BROWSER_VENV:-$HOME/.cache/walletd-browser-venv}"
  local browser_pkgs="playwright==1.65.3 greenlet==3.5.6 coincurve==21.0.0 pycryptodome==4.5.0"
  if [ "$(cat "$venv/.walletd-packages" 2>/dev/null)" != "$browser_pkgs" ]; then
    log "installing $browser_pkgs into $venv"
    python3 -m venv "$venv" >&2 || { apt_install python3-venv && python3 -m venv "$venv" >&2; }
    # shellcheck disable=SC2086 # one word per package
    "$venv/bin/pip" install --quiet --disable-pip-version-check $browser_pkgs >&2
    echo "$browser_pkgs" >"$venv/.walletd-packages"
  fi
  log "browser: $(/usr/bin/chromium --version 2>/dev/null | head -1), $browser_pkgs"
  export WALLETD_TEST_BROWSER_PYTHON="$venv/bin/python" WALLETD_TEST_CHROMIUM=/usr/bin/chromium

  export WALLETD_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:$pg_port/postgres"
  export WALLETD_TEST_PG_BIN="$PG_BIN"
  export WALLETD_TEST_REDIS_URL="redis://127.0.0.1:$redis_port"
  export TEST_INFRA_DIR
}

stop_test_infra() {
  [ -n "${TEST_INFRA_DIR:-}" ] || return 0
  if [ -f "$TEST_INFRA_DIR/tansu.pid" ]; then kill "$(cat "$TEST_INFRA_DIR/tansu.pid")" 2>/dev/null || true; fi
  if [ -f "$TEST_INFRA_DIR/redis.pid" ]; then kill "$(cat "$TEST_INFRA_DIR/redis.pid")" 2>/dev/null || true; fi
  if [ -d "$TEST_INFRA_DIR/pg" ]; then as_pg "$PG_BIN/pg_ctl" -D "$TEST_INFRA_DIR/pg" -m immediate stop >/dev/null 2>&1 || true; fi
  rm -rf "$TEST_INFRA_DIR"
}
