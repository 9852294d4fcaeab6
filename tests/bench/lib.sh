# Helpers of the benchmark driver (tests/bench/run.sh); sourced, not run.
# Every process started here is remembered by pid and ended by pid on exit.

BENCH_PIDS=()

log() { echo "bench: $*" >&2; }
die() { echo "bench: error: $*" >&2; exit 1; }

# A figure line, in the format outpost-sim prints ("name value unit  # note").
figure() {
  local line
  line=$(printf '%-34s %12s %-10s%s' "$1" "$2" "$3" "${4:+  # $4}")
  echo "$line"
  [ -n "${RESULTS:-}" ] && echo "$line" >>"$RESULTS"
  return 0
}

# Polls `cmd` every 0.2 s until it succeeds or `secs` pass.
wait_for() {
  local secs=$1
  shift
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.2
  done
}

port_listens() { ss -Hltn "sport = :$1" | grep -q LISTEN; }

# spawn VAR LOG CMD...: starts CMD in the background with its output in LOG
# and its pid in VAR (remembered for the cleanup).
spawn() {
  local var=$1 logfile=$2
  shift 2
  "$@" >>"$logfile" 2>&1 </dev/null &
  local pid=$!
  BENCH_PIDS+=("$pid")
  printf -v "$var" '%s' "$pid"
}

stop_pid() {
  local pid=$1 i
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for i in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
  local pid
  for pid in "${BENCH_PIDS[@]}"; do stop_pid "$pid"; done
  # The broker restarted by the storm phase is no child of ours: its pid file.
  for pid in $(cat "$HUB_DIR/mosquitto.pid" "$STATE/floor/mosquitto.pid" 2>/dev/null); do
    [ "$(cat /proc/$pid/comm 2>/dev/null)" = mosquitto ] && stop_pid "$pid"
  done
  for pid in ${WORKLOAD_PIDS:-}; do kill -KILL "$pid" 2>/dev/null || true; done
  return 0
}

# PSS and RSS (kB) of a process, from smaps_rollup.
smaps() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/smaps_rollup"; }
# PSS, RSS and private dirty kB per mapping, largest PSS first.
smaps_by_mapping() {
  awk '/^[0-9a-f]+-[0-9a-f]+ / {name = ($6 == "" ? "[anon]" : $6)}
       /^Pss:/ {pss[name] += $2} /^Rss:/ {rss[name] += $2} /^Private_Dirty:/ {pd[name] += $2}
       END {printf "%8s %8s %8s  %s\n", "PSS", "RSS", "PrivDirty", "mapping";
            for (n in pss) printf "%8d %8d %8d  %s\n", pss[n], rss[n], pd[n], n}' "/proc/$1/smaps" |
    sort -k1,1nr
}
threads() { awk '$1 == "Threads:" {print $2}' "/proc/$1/status"; }
rss_kb() { awk '$1 == "VmRSS:" {print $2}' "/proc/$1/status"; }

ctl() { "$BIN/outpostctl" --config "$HUB_DIR/ctl.yaml" "$@"; }

hub_healthy() {
  curl -sf --cacert "$HUB_DIR/ca.crt" "https://localhost:$API_PORT/healthz" | jq -e '.broker == "connected"'
}

start_broker() {
  spawn BROKER_PID "$STATE/mosquitto.log" mosquitto -c "$HUB_DIR/mosquitto.conf"
  wait_for 30 port_listens "$BROKER_PORT" || die "mosquitto did not listen on $BROKER_PORT"
}

stop_broker() {
  local pid
  pid=$(cat "$HUB_DIR/mosquitto.pid" 2>/dev/null || true)
  [ -n "$pid" ] && [ "$(cat /proc/$pid/comm 2>/dev/null)" = mosquitto ] && stop_pid "$pid"
  wait_for 30 bash -c "! ss -Hltn 'sport = :$BROKER_PORT' | grep -q LISTEN" || die "broker still listens"
}

# The hub data dir (kept across runs: the enrolled fleet lives in hub.db),
# the broker and the hub.
hub_up() {
  if [ ! -f "$HUB_DIR/hub.yaml" ]; then
    log "outpost-hub init in $HUB_DIR"
    "$BIN/outpost-hub" init --data-dir "$HUB_DIR" --hostname localhost \
      --broker-port "$BROKER_PORT" --api-port "$API_PORT" >"$STATE/init.log" 2>&1 ||
      die "outpost-hub init failed: $(tail -1 "$STATE/init.log")"
  fi
  for p in "$BROKER_PORT" "$API_PORT" "$FLOOR_PORT"; do
    port_listens "$p" && die "port $p is in use (set BENCH_PORT_BASE)"
  done
  start_broker
  spawn HUB_PID "$STATE/hub.log" "$BIN/outpost-hub" serve --data-dir "$HUB_DIR"
  wait_for 60 hub_healthy || die "the hub did not come up: $(tail -3 "$STATE/hub.log")"
}

machine_figures() {
  figure machine.nproc "$(nproc)" cores
  figure machine.mem_gib "$(awk '/MemTotal/ {printf "%.1f", $2/1048576}' /proc/meminfo)" GiB
  log "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
  log "os: $(. /etc/os-release && echo "$PRETTY_NAME"), kernel $(uname -r)"
  log "mosquitto: $(mosquitto -h 2>/dev/null | head -1)"
}
