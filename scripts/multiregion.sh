#!/usr/bin/env bash
# Multi-region on one machine (DESIGN D7, README "Multi-region"), every piece a real process on
# loopback: a PostgreSQL primary with a synchronous and an asynchronous streaming replica, a Redis per
# region, the Kafka-protocol broker, walletd in three regions, delay proxies for the distance between
# regions, and HAProxy as the global load balancer.
#
#   scripts/multiregion.sh up | status | down
#   scripts/multiregion.sh drill read-your-writes | invalidation | region-loss | primary-loss | all
#
# State (data, logs, pids, ports) lives in $MR_DIR (default /tmp/walletd-multiregion). One-way
# delays: MR_EU_DELAY_MS (us-east1 <-> europe-west1, 15), MR_ASIA_DELAY_MS (us-east1 <->
# asia-southeast1, 30), MR_ASIA_EU_DELAY_MS (asia-southeast1 <-> europe-west1, 20).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/test-infra.sh
source "$REPO/scripts/test-infra.sh"

MR_DIR="${MR_DIR:-/tmp/walletd-multiregion}"
STATE="$MR_DIR/state"
EU_DELAY_MS="${MR_EU_DELAY_MS:-15}"
ASIA_DELAY_MS="${MR_ASIA_DELAY_MS:-30}"
ASIA_EU_DELAY_MS="${MR_ASIA_EU_DELAY_MS:-20}"
REGIONS=(us-east1 europe-west1 asia-southeast1)
TARGET="${CARGO_TARGET_DIR:-$REPO/target}"

say() { echo "multiregion $(date +%T): $*" >&2; }
die() { say "$*"; exit 1; }

# --- state -------------------------------------------------------------------------------------

# The state file holds KEY=value lines; later lines win, so a change is one more line.
put() { echo "$1=$2" >>"$STATE"; }
load_state() {
  [ -f "$STATE" ] || die "not up (no $STATE); run: $0 up"
  # shellcheck disable=SC1090
  source "$STATE"
}
port_of() { local v="PORT_${1//-/_}"; echo "${!v}"; }
pid_file() { echo "$MR_DIR/pids/$1.pid"; }
pid_of() { cat "$(pid_file "$1")" 2>/dev/null || true; }
alive() { local p; p="$(pid_of "$1")"; [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }

# Starts a long-running process in a session of its own (it outlives this script), logging to
# $MR_DIR/logs/NAME.log and recording its pid.
spawn() {
  local name=$1; shift
  setsid "$@" </dev/null >>"$MR_DIR/logs/$name.log" 2>&1 &
  echo $! >"$(pid_file "$name")"
}

# Polls a command until it succeeds or the deadline passes.
wait_until() {
  local what=$1 secs=$2 end; shift 2
  end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < end)) || { say "gave up after ${secs}s waiting for $what"; return 1; }
    sleep 0.1
  done
}

# SIGTERM to each named process at once, then SIGKILL to any still there after 20 s.
stop_pids() {
  local name pids=()
  for name in "$@"; do alive "$name" && pids+=("$(pid_of "$name")"); done
  [ "${#pids[@]}" -gt 0 ] || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  wait_until "${*} to stop" 20 none_alive "${pids[@]}" || kill -KILL "${pids[@]}" 2>/dev/null || true
}
none_alive() { local p; for p in "$@"; do kill -0 "$p" 2>/dev/null && return 1; done; return 0; }

tcp_open() { (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
http_code() { curl -s -o /dev/null -m 2 -w '%{http_code}' "$1" || true; }
ready() { [ "$(http_code "http://127.0.0.1:$1/health/ready")" = 200 ]; }
epoch_ms() { date +%s%3N; }

# --- binaries ----------------------------------------------------------------------------------

binaries() {
  # Release when built already (its figures are the ones to quote), else debug; MR_PROFILE chooses.
  # Always through cargo, which rebuilds what changed (and does nothing otherwise), so a drill never
  # runs an old binary.
  local profile="${MR_PROFILE:-}"
  if [ -z "$profile" ]; then
    if [ -x "$TARGET/release/walletd" ]; then profile=release; else profile=debug; fi
  fi
  local flag=()
  [ "$profile" = release ] && flag=(--release)
  say "building walletd and the drill tools ($profile)"
  (cd "$REPO" && CARGO_TARGET_DIR="$TARGET" cargo build "${flag[@]}" -q -p walletd -p bench \
    --bin walletd --bin walletd-drill --bin delay-proxy)
  local dir="$TARGET/$profile"
  WALLETD="$dir/walletd"
  DRILL="$dir/walletd-drill"
  PROXY="$dir/delay-proxy"
}

# --- PostgreSQL ----------------------------------------------------------------------------------
# Nodes a, b, c: a starts as the primary (us-east1), b as its synchronous standby (us-east1, the
# promotion candidate), c as an asynchronous standby in europe-west1 that streams through the
# delay proxy. PRIMARY in the state names the current primary.

sql() { psql -h 127.0.0.1 -p "$1" -U postgres -d "${3:-postgres}" -Atqc "$2"; }
# For wait_until: the query at PORT answers EXPECTED.
sql_is() { [ "$(sql "$1" "$2" 2>/dev/null)" = "$3" ]; }
pg_ctl_node() { local n=$1; shift; as_pg "$PG_BIN/pg_ctl" -D "$MR_DIR/pg/$n" -l "$MR_DIR/logs/pg-$n.log" "$@"; }

# Settings of every node; a standby's copy is overridden by the lines appended after its backup.
pg_conf() {
  cat <<EOF
port = $1
listen_addresses = '127.0.0.1'
unix_socket_directories = '$MR_DIR/pg'
max_connections = 500
wal_level = replica
max_wal_senders = 10
wal_keep_size = '1GB'
hot_standby = on
hot_standby_feedback = on
wal_log_hints = on
fsync = on
synchronous_commit = on
synchronous_standby_names = ''
EOF
}

# A standby of the node at port FROM (maybe a proxy), made by pg_basebackup -R: the connection it
# streams over, application_name included, becomes its primary_conninfo.
pg_standby() {
  local n=$1 from=$2 app=$3
  as_pg "$PG_BIN/pg_basebackup" -h 127.0.0.1 -p "$from" -U postgres -D "$MR_DIR/pg/$n" -R -X stream -c fast \
    -d "host=127.0.0.1 port=$from user=postgres application_name=$app"
  pg_conf "$(port_of "pg-$n")" >>"$MR_DIR/pg/$n/postgresql.conf"
}

start_postgres() {
  PG_BIN="$(pg_bindir)" || die "no PostgreSQL server binaries (apt-get install postgresql)"
  put PG_BIN "$PG_BIN"
  mkdir -p "$MR_DIR/pg"
  chown postgres "$MR_DIR/pg" "$MR_DIR/logs"
  say "PostgreSQL primary a on $PORT_pg_a"
  as_pg "$PG_BIN/initdb" -D "$MR_DIR/pg/a" -U postgres -A trust -E UTF8 >"$MR_DIR/logs/initdb.log"
  pg_conf "$PORT_pg_a" >>"$MR_DIR/pg/a/postgresql.conf"
  pg_ctl_node a -w -t 60 start >/dev/null
  sql "$PORT_pg_a" "CREATE DATABASE walletd"
  say "synchronous standby b (replica1) on $PORT_pg_b"
  pg_standby b "$PORT_pg_a" replica1
  pg_ctl_node b -w -t 60 start >/dev/null
  # Commits wait for replica1 from now on (before it streamed, they would have hung). In
  # postgresql.conf, not ALTER SYSTEM: c's copy of it is overridden by its own lines, b has none.
  echo "synchronous_standby_names = 'replica1'" >>"$MR_DIR/pg/a/postgresql.conf"
  pg_ctl_node a reload >/dev/null
  wait_until "replica1 to stream synchronously" 60 \
    sql_is "$PORT_pg_a" "SELECT sync_state FROM pg_stat_replication WHERE application_name = 'replica1'" sync
  say "asynchronous standby c (replica2, europe-west1) on $PORT_pg_c, streaming over ${EU_DELAY_MS} ms"
  pg_standby c "$PORT_eu_pg_a" replica2
  echo "fsync = off" >>"$MR_DIR/pg/c/postgresql.conf"
  pg_ctl_node c -w -t 60 start >/dev/null
  wait_until "replica2 to stream" 60 \
    sql_is "$PORT_pg_a" "SELECT state FROM pg_stat_replication WHERE application_name = 'replica2'" streaming
  put PRIMARY a
}

# --- the regions ---------------------------------------------------------------------------------

# Each region reaches the primary (and b, the promotion candidate) through its own delay proxies.
start_proxies() {
  local spec name to delay
  for spec in "eu-pg-a pg-a $EU_DELAY_MS" "eu-pg-b pg-b $EU_DELAY_MS" "asia-pg-a pg-a $ASIA_DELAY_MS" \
    "asia-pg-b pg-b $ASIA_DELAY_MS" "asia-pg-c pg-c $ASIA_EU_DELAY_MS"; do
    read -r name to delay <<<"$spec"
    spawn "$name" "$PROXY" --listen "127.0.0.1:$(port_of "$name")" --to "127.0.0.1:$(port_of "$to")" --delay-ms "$delay"
    wait_until "proxy $name" 10 tcp_open "$(port_of "$name")"
  done
}

start_redis() {
  local r port
  for r in "${REGIONS[@]}"; do
    port="$(port_of "redis-$r")"
    spawn "redis-$r" redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$MR_DIR"
    wait_until "redis $r" 10 redis-cli -p "$port" ping
  done
}

start_broker() {
  local tansu
  tansu="$(command -v tansu || echo "$HOME/.cargo/bin/tansu")"
  if [ ! -x "$tansu" ]; then
    say "installing the tansu broker with cargo (takes several minutes, once)"
    cargo install tansu --locked --features dynostore,libsql >&2
  fi
  spawn tansu "$tansu" broker --listener-url "tcp://127.0.0.1:$PORT_kafka" \
    --advertised-listener-url "tcp://127.0.0.1:$PORT_kafka" --storage-engine memory://tansu/
  wait_until "the broker" 30 tcp_open "$PORT_kafka"
}

# The database URLs of a region: writes to the primary through its proxies (a multi-host URL that
# follows a promotion), reads from its replica.
region_urls() {
  local hosts
  case $1 in
  us-east1) hosts="127.0.0.1:$PORT_pg_a,127.0.0.1:$PORT_pg_b" READ_PORT=$PORT_pg_b ;;
  europe-west1) hosts="127.0.0.1:$PORT_eu_pg_a,127.0.0.1:$PORT_eu_pg_b" READ_PORT=$PORT_pg_c ;;
  asia-southeast1) hosts="127.0.0.1:$PORT_asia_pg_a,127.0.0.1:$PORT_asia_pg_b" READ_PORT=$PORT_asia_pg_c ;;
  esac
  WRITE_URL="postgres://postgres@$hosts/walletd?target_session_attrs=read-write"
  READ_URL="postgres://postgres@127.0.0.1:$READ_PORT/walletd"
}

region_env() {
  local r=$1
  region_urls "$r"
  REGION_ENV=(
    WALLETD_REGION="$r"
    WALLETD_HTTP_ADDR="127.0.0.1:$(port_of "http-$r")"
    WALLETD_METRICS_ADDR="127.0.0.1:$(port_of "metrics-$r")"
    WALLETD_GRPC_ADDR="127.0.0.1:$(port_of "grpc-$r")"
    WALLETD_DATA_DIR="$MR_DIR/$r"
    WALLETD_DATABASE_URL="$WRITE_URL"
    WALLETD_READ_DATABASE_URL="$READ_URL"
    WALLETD_REDIS_URL="redis://127.0.0.1:$(port_of "redis-$r")"
    WALLETD_KAFKA_BROKERS="127.0.0.1:$PORT_kafka"
    WALLETD_JWT_PRIVATE_KEY_FILE="$MR_DIR/jwt-signing-key.pem"
    WALLETD_ADMIN_ADDRESSES="$ADMIN_ADDRESS"
    WALLETD_SIWE_DOMAIN="127.0.0.1:$PORT_lb"
    WALLETD_SIWE_URI="http://127.0.0.1:$PORT_lb"
    WALLETD_TRUSTED_PROXIES=127.0.0.1/32
    # A region far from the primary holds a connection for each of its round trips: once
    # europe-west1 is lost, asia-southeast1 takes half of 100 writes/s at ~0.9 s each (15 round trips
    # of 60 ms), ~45 connections busy at once.
    WALLETD_DATABASE_POOL_SIZE=64
    # The drills sign in many users from one address and poll hard: limits are not what they measure.
    WALLETD_RATE_LIMIT_PER_MINUTE=0
    WALLETD_SIGNIN_RATE_LIMIT_PER_MINUTE=0
    WALLETD_LOG_FORMAT=json
  )
}

start_region() {
  local r=$1
  region_env "$r"
  mkdir -p "$MR_DIR/$r"
  spawn "walletd-$r" env "${REGION_ENV[@]}" "$WALLETD" serve
  wait_until "walletd $r to be ready" 120 ready "$(port_of "http-$r")" \
    || { tail -5 "$MR_DIR/logs/walletd-$r.log" >&2; return 1; }
}

start_haproxy() {
  local r servers=""
  for r in "${REGIONS[@]}"; do
    servers+="    server $r 127.0.0.1:$(port_of "http-$r") check inter 500ms fall 2 rise 2"$'\n'
  done
  cat >"$MR_DIR/haproxy.cfg" <<EOF
global
    maxconn 4096
    stats socket $MR_DIR/haproxy.sock mode 600 level admin
    log stdout format raw local0

defaults
    mode http
    log global
    option httplog
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A dead region refuses the check at once (down after 2 checks, ~1 s); a busy far region may take
    # longer than the check interval to answer, which is not a reason to take it out.
    timeout check 2s
    # Only a connection that never reached a server is retried, on another one: a request that
    # reached one may be a write, and it is not sent twice.
    retries 3
    retry-on conn-failure
    option redispatch
    option forwardfor

frontend global_lb
    bind 127.0.0.1:$PORT_lb
    default_backend walletd

backend walletd
    balance roundrobin
    option httpchk GET /health/ready
$servers
EOF
  haproxy -c -q -f "$MR_DIR/haproxy.cfg"
  spawn haproxy haproxy -db -f "$MR_DIR/haproxy.cfg"
  wait_until "every region up behind the load balancer" 30 lb_all_up
}

# HAProxy's own view: every server UP.
lb_all_up() { [ "$(lb_servers | grep -c ' UP')" = "${#REGIONS[@]}" ]; }
lb_servers() {
  echo "show stat" | socat - "UNIX-CONNECT:$MR_DIR/haproxy.sock" 2>/dev/null \
    | awk -F, '$1 == "walletd" && $2 != "BACKEND" { print $2, $18 }'
}

cmd_up() {
  [ -f "$STATE" ] && die "already up ($MR_DIR); run: $0 down"
  command -v haproxy >/dev/null || apt_install haproxy
  command -v socat >/dev/null || apt_install socat
  command -v jq >/dev/null || apt_install jq
  command -v curl >/dev/null || apt_install curl
  command -v redis-server >/dev/null || apt_install redis-server
  pg_bindir >/dev/null || apt_install postgresql
  if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
  fi
  binaries
  local t0=$SECONDS name
  rm -rf "$MR_DIR"
  mkdir -p "$MR_DIR/pids" "$MR_DIR/logs" "$MR_DIR/results"
  chmod 755 "$MR_DIR"
  : >"$STATE"
  put WALLETD "$WALLETD"
  put DRILL "$DRILL"
  put PROXY "$PROXY"
  for name in pg-a pg-b pg-c eu-pg-a eu-pg-b asia-pg-a asia-pg-b asia-pg-c kafka lb \
    "${REGIONS[@]/#/http-}" "${REGIONS[@]/#/metrics-}" "${REGIONS[@]/#/grpc-}" "${REGIONS[@]/#/redis-}"; do
    put "PORT_${name//-/_}" "$(free_port)"
  done
  load_state
  start_proxies
  start_postgres
  start_redis
  start_broker
  # Keys made now, never in the repository: the JWT key every region shares, an admin address.
  "$WALLETD" signing-key new --out "$MR_DIR/jwt-signing-key.pem" >/dev/null 2>>"$MR_DIR/logs/keys.log"
  put ADMIN_ADDRESS "$("$WALLETD" keygen --out "$MR_DIR/admin.key")"
  load_state
  region_env us-east1
  say "migrations"
  env "${REGION_ENV[@]}" "$WALLETD" migrate >>"$MR_DIR/logs/migrate.log" 2>&1
  env "${REGION_ENV[@]}" "$WALLETD" token --role admin --address "$ADMIN_ADDRESS" --ttl-secs 86400 \
    >"$MR_DIR/admin.token" 2>>"$MR_DIR/logs/migrate.log"
  chmod 600 "$MR_DIR/admin.token"
  for name in "${REGIONS[@]}"; do
    say "walletd $name on $(port_of "http-$name")"
    start_region "$name"
  done
  start_haproxy
  say "up in $((SECONDS - t0)) s; load balancer http://127.0.0.1:$PORT_lb"
}

# A region's replica as its walletd sees it: lag, and where its reads went.
replica_figures() {
  curl -s -m 2 "http://127.0.0.1:$1/metrics" | awk '
    /^db_replica_lag_seconds/ { lag = $2 } /^db_replica_lag_bytes/ { bytes = $2 }
    /^db_reads_total\{target="replica"/ { replica += $2 } /^db_reads_total\{target="primary"/ { primary += $2 }
    END { printf "replica lag %s s (%s B), reads: %d replica, %d primary", lag, bytes, replica, primary }'
}

cmd_status() {
  load_state
  local n role r port
  printf '%-24s %-8s %-6s %s\n' component pid port health
  for n in a b c; do
    port="$(port_of "pg-$n")"
    role=down
    if as_pg "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$port"; then
      role="$(sql "$port" "SELECT CASE WHEN pg_is_in_recovery() THEN 'standby' ELSE 'primary' END")"
      [ "$role" = standby ] && role+=" of $(sql "$port" "SELECT coalesce(sender_port::text, '-') || ' ' || status FROM pg_stat_wal_receiver" || true)"
    fi
    printf '%-24s %-8s %-6s %s\n' "postgres $n" "$(head -1 "$MR_DIR/pg/$n/postmaster.pid" 2>/dev/null || echo -)" "$port" "$role"
  done
  [ "$(sql "$(port_of "pg-$PRIMARY")" "SELECT 1" 2>/dev/null)" = 1 ] \
    && sql "$(port_of "pg-$PRIMARY")" "SELECT application_name, sync_state, replay_lag FROM pg_stat_replication" \
    | sed 's/^/    replication: /'
  for n in eu-pg-a eu-pg-b asia-pg-a asia-pg-b asia-pg-c tansu "${REGIONS[@]/#/redis-}"; do
    port="$(port_of "${n/tansu/kafka}")"
    printf '%-24s %-8s %-6s %s\n' "$n" "$(pid_of "$n")" "$port" "$(alive "$n" && tcp_open "$port" && echo up || echo down)"
  done
  for r in "${REGIONS[@]}"; do
    port="$(port_of "http-$r")"
    printf '%-24s %-8s %-6s %s\n' "walletd $r" "$(pid_of "walletd-$r")" "$port" \
      "ready: $(http_code "http://127.0.0.1:$port/health/ready"); $(replica_figures "$(port_of "metrics-$r")")"
  done
  printf '%-24s %-8s %-6s %s\n' haproxy "$(pid_of haproxy)" "$PORT_lb" "ready: $(http_code "http://127.0.0.1:$PORT_lb/health/ready")"
  lb_servers | sed 's/^/    backend: /'
}

cmd_down() {
  [ -f "$STATE" ] || { rm -rf "$MR_DIR"; return 0; }
  load_state
  local n
  stop_pids haproxy "${REGIONS[@]/#/walletd-}"
  stop_pids tansu "${REGIONS[@]/#/redis-}"
  for n in a b c; do
    [ -f "$MR_DIR/pg/$n/postmaster.pid" ] && { pg_ctl_node "$n" -m fast -w -t 30 stop >/dev/null 2>&1 || true; } &
  done
  wait
  stop_pids eu-pg-a eu-pg-b asia-pg-a asia-pg-b asia-pg-c
  rm -rf "$MR_DIR"
  say "down"
}

# shellcheck source=scripts/multiregion-drills.sh
source "$REPO/scripts/multiregion-drills.sh"

case "${1:-}" in
up) cmd_up ;;
status) cmd_status ;;
down) cmd_down ;;
drill) shift; cmd_drill "${1:-all}" ;;
*) die "usage: $0 up | status | down | drill [read-your-writes|invalidation|region-loss|primary-loss|all]" ;;
esac
