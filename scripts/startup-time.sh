#!/usr/bin/env bash
# Measures walletd's time from exec to a 200 on /health/ready on the embedded defaults (SQLite),
# first start (creates the database and signing key) and warm starts. Usage: scripts/startup-time.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-5}"
bin=target/release/walletd
[ -x "$bin" ] || cargo build --release -p walletd
bin="$PWD/$bin"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
gport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
measure() {
  local start end pid
  start=$(date +%s%N)
  (cd "$dir" && WALLETD_HTTP_ADDR=127.0.0.1:$port WALLETD_GRPC_ADDR=127.0.0.1:$gport WALLETD_METRICS_ADDR=127.0.0.1:$mport exec "$bin" serve >/dev/null 2>&1) &
  pid=$!
  until curl -sf "http://127.0.0.1:$port/health/ready" >/dev/null 2>&1; do
    kill -0 "$pid" 2>/dev/null || { echo "walletd exited" >&2; exit 1; }
    sleep 0.002
  done
  end=$(date +%s%N)
  kill -TERM "$pid"; wait "$pid" || true
  echo $(( (end - start) / 1000000 ))
}
echo "first start (new database + RSA key): $(measure) ms"
for i in $(seq 1 "$runs"); do echo "warm start $i: $(measure) ms"; done
