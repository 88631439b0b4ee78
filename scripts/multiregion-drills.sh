# The drills of scripts/multiregion.sh (sourced by it): each runs walletd-drill against the regions
# that are up, prints what it measured, adds rows to $MR_DIR/summary.rows and fails on a broken
# promise (a stale read with a token, a lost acknowledged write, a double claim, a writable old
# primary).

DRILL_TIMEOUT="${MR_DRILL_TIMEOUT:-240}"

# A figure for the summary: drill, what, value.
row() { printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$MR_DIR/summary.rows"; }
# A field of a drill's JSON result.
field() { jq -r "$2" "$MR_DIR/results/$1.json"; }
drill_tool() { RUST_BACKTRACE=0 timeout -k 10 "$DRILL_TIMEOUT" "$DRILL" "$@"; }
lb_url() { echo "http://127.0.0.1:$PORT_lb"; }
region_url() { echo "http://127.0.0.1:$(port_of "http-$1")"; }
primary_db() { echo "postgres://postgres@127.0.0.1:$(port_of "pg-$PRIMARY")/walletd"; }

drill_read_your_writes() {
  local c_port delay=${MR_APPLY_DELAY:-300ms} rc=0
  c_port="$(port_of pg-c)"
  say "replica2 replays $delay behind the primary (recovery_min_apply_delay)"
  sql "$c_port" "ALTER SYSTEM SET recovery_min_apply_delay = '$delay'" && sql "$c_port" "SELECT pg_reload_conf()" >/dev/null
  wait_until "the apply delay to take effect" 10 sql_is "$c_port" "SHOW recovery_min_apply_delay" "$delay"
  drill_tool ryw --lb "$(lb_url)" --pairs 1000 --clients 16 --assert-fresh --out "$MR_DIR/results/ryw-token.json" || rc=$?
  drill_tool ryw --lb "$(lb_url)" --pairs 1000 --clients 16 --no-token --out "$MR_DIR/results/ryw-no-token.json" || rc=$?
  sql "$c_port" "ALTER SYSTEM RESET recovery_min_apply_delay" && sql "$c_port" "SELECT pg_reload_conf()" >/dev/null
  row read-your-writes "stale reads with the token" "$(field ryw-token '"\(.stale) of \(.pairs)"')"
  row read-your-writes "stale reads without it (replica2 $delay behind)" \
    "$(field ryw-no-token '"\(.stale) of \(.pairs) (\(.stale_rate * 1000 | round / 10) %: \(.stale_after_create) after a creation, \(.stale_after_update) after an update)"')"
  row read-your-writes "read p50 / p99 with the token" "$(field ryw-token '"\(.read.p50_ms | round) / \(.read.p99_ms | round) ms"')"
  return "$rc"
}

drill_invalidation() {
  local rc=0
  drill_tool invalidation --write "$(region_url us-east1)" --read "$(region_url europe-west1)" \
    --read "$(region_url asia-southeast1)" --n 100 --out "$MR_DIR/results/invalidation.json" || rc=$?
  local i
  for i in 0 1; do
    row invalidation "us-east1 write seen in ${REGIONS[$((i + 1))]} (p50 / p99 / max)" \
      "$(field invalidation ".regions[$i] | \"\(.window.p50_ms | round) / \(.window.p99_ms | round) / \(.window.max_ms | round) ms, \(.timeouts) timeouts of \(.samples)\"")"
  done
  return "$rc"
}

# Waits for the drill (pid $3) to log that its timed part has begun; fails if it ended before.
wait_started() {
  wait_until "the drill's load to start" 120 bash -c "grep -q '$2' '$1' || ! kill -0 $3"
  grep -q "$2" "$1" || { cat "$1" >&2; return 1; }
}

drill_region_loss() {
  local victim=europe-west1 log="$MR_DIR/logs/drill-region-loss.log" pid rc=0 killed_ms
  : >"$log"
  drill_tool load --lb "$(lb_url)" --setup "$(region_url us-east1)" --rate 200 --seconds 20 --buyers 64 --admin-token "$(cat "$MR_DIR/admin.token")" \
    --out "$MR_DIR/results/region-loss.json" >"$log" 2>&1 &
  pid=$!
  wait_started "$log" '^load: .* requests at' "$pid"
  # The kill comes 6 s into the load, not when something is ready.
  sleep 6
  say "kill -9 walletd $victim (pid $(pid_of "walletd-$victim"))"
  killed_ms="$(epoch_ms)"
  kill -KILL "$(pid_of "walletd-$victim")"
  wait "$pid" || rc=$?
  cat "$log"
  drill_tool verify --db "$(primary_db)" --acked "$MR_DIR/results/region-loss.json" \
    --out "$MR_DIR/results/region-loss-verify.json" || rc=$?
  row region-loss "requests at 200/s, errors" "$(field region-loss '"\(.total), \(.errors) \(.errors_by_status)"')"
  row region-loss "error window seen by clients" "$(field region-loss '"\(.error_window_s) s"') (kill at +$(field region-loss "(${killed_ms} - .requests[0][0]) / 1000") s)"
  row region-loss "acknowledged writes lost" "$(field region-loss-verify '"\(.lost) of \(.orders)"')"
  say "restarting walletd $victim"
  start_region "$victim"
  wait_until "the load balancer to take $victim back" 30 lb_all_up || rc=1
  return "$rc"
}

drill_primary_loss() {
  [ "$PRIMARY" = a ] || { say "primary-loss runs once per 'up' (the primary is already $PRIMARY)"; return 1; }
  local log="$MR_DIR/logs/drill-primary-loss.log" pid rc=0 stopped_ms out
  : >"$log"
  drill_tool claims --lb "$(lb_url)" --setup "$(region_url us-east1)" --rate 10 --seconds 25 --admin-token "$(cat "$MR_DIR/admin.token")" \
    --out "$MR_DIR/results/primary-loss.json" >"$log" 2>&1 &
  pid=$!
  wait_started "$log" '^claims: .* orders placed' "$pid"
  # The stop comes 6 s into the claims.
  sleep 6
  say "stopping the primary (a) at once"
  stopped_ms="$(epoch_ms)"
  pg_ctl_node a -m immediate -w stop >/dev/null
  say "promoting the synchronous standby (b)"
  pg_ctl_node b -w -t 60 promote >/dev/null
  put PRIMARY b
  PRIMARY=b
  local promoted_ms b_port c_port
  promoted_ms="$(epoch_ms)"
  b_port="$(port_of pg-b)" c_port="$(port_of pg-c)"
  say "repointing replica2 (c) at b"
  sql "$c_port" "ALTER SYSTEM SET primary_conninfo = 'host=127.0.0.1 port=$PORT_eu_pg_b user=postgres application_name=replica2'"
  sql "$c_port" "SELECT pg_reload_conf()" >/dev/null
  wait_until "replica2 to stream from b" 60 \
    sql_is "$c_port" "SELECT sender_port || ' ' || status FROM pg_stat_wal_receiver" "$PORT_eu_pg_b streaming" || rc=1
  say "fencing the old primary (a): a standby of b"
  touch "$MR_DIR/pg/a/standby.signal"
  echo "primary_conninfo = 'host=127.0.0.1 port=$b_port user=postgres application_name=old-primary'" >>"$MR_DIR/pg/a/postgresql.auto.conf"
  chown postgres "$MR_DIR/pg/a/standby.signal"
  pg_ctl_node a -w -t 60 start >/dev/null || rc=1
  out="$(sql "$(port_of pg-a)" "CREATE TABLE fence_probe (x int)" walletd 2>&1 || true)"
  say "a write on the old primary: $out"
  wait "$pid" || rc=$?
  cat "$log"
  drill_tool verify --db "$(primary_db)" --acked "$MR_DIR/results/primary-loss.json" \
    --out "$MR_DIR/results/primary-loss-verify.json" || rc=$?
  local back
  back="$(field primary-loss "[.requests[] | select(.[0] >= $stopped_ms and .[2] == 201) | .[1]] | min // empty | (. - $stopped_ms) / 1000")"
  row primary-loss "claims (201 / 409 / errors)" "$(field primary-loss '"\(.won) / \(.lost) / \(.errors) \(.errors_by_status)"')"
  row primary-loss "primary stopped to b promoted" "$(((promoted_ms - stopped_ms)))ms"
  row primary-loss "primary stopped to the next 201" "${back:-never} s"
  row primary-loss "acknowledged claims lost, double claims" "$(field primary-loss-verify '"\(.claims - .claims_found) of \(.claims), \(.double_claims | length)"')"
  row primary-loss "a write on the fenced old primary" "$out"
  [[ "$out" == *read-only* ]] || { say "the old primary took a write"; rc=1; }
  [ -n "$back" ] || rc=1
  return "$rc"
}

summary() {
  {
    echo "| drill | figure | value |"
    echo "|---|---|---|"
    awk -F'\t' '{ printf "| %s | %s | %s |\n", $1, $2, $3 }' "$MR_DIR/summary.rows"
  } >"$MR_DIR/summary.md"
  cat "$MR_DIR/summary.md"
}

cmd_drill() {
  load_state
  local name=$1 t0 rc=0
  if [ "$name" = all ]; then
    : >"$MR_DIR/summary.rows"
    for name in read-your-writes invalidation region-loss primary-loss; do
      t0=$SECONDS
      timeout -k 10 "$((DRILL_TIMEOUT + 60))" "$0" drill "$name" || { say "drill $name failed"; rc=1; }
      row "$name" "time" "$((SECONDS - t0)) s"
    done
    summary
    return "$rc"
  fi
  case $name in
  read-your-writes | invalidation | region-loss | primary-loss) "drill_${name//-/_}" ;;
  *) die "no drill $name" ;;
  esac
}
