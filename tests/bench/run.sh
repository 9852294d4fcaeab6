#!/usr/bin/env bash
# The benchmarks of docs/benchmarks.md (`make bench`): one line per figure on
# stdout, progress on stderr, everything also appended to
# $BENCH_STATE/results.txt. Benchmarks report; they are not tests.
#
#   tests/bench/run.sh [BIN_DIR]        (default build-bench/bin)
#
# Knobs (environment):
#   BENCH_PARTS          "agent startup soak fleet"   which parts run
#   BENCH_DEVICES        10000   simulated devices (outpost-sim)
#   BENCH_SIM_THREADS    4       outpost-sim's epoll threads
#   BENCH_ROLLOUTS       3       rollouts in a row (each line, then the median)
#   BENCH_FLEET_PHASES   connect,idle,reports,rollout,storm,floor  outpost-sim's phases
#   BENCH_SIM_ARGS       ""      more outpost-sim run flags (e.g. --connect-timeout 30)
#   BENCH_IDLE_SECONDS   60      idle-traffic window
#   BENCH_STEADY_SECONDS 30      agent steady state before its footprint
#   BENCH_SOAK_SECONDS   180     agent soak with crash-looping workloads
#   BENCH_SOAK_CRASHERS  64      crash-looping workloads in the soak (at most 64)
#   BENCH_STARTUP_RUNS   20      agent start-up runs (after one warm-up)
#   BENCH_STATE          build-bench/bench-state  kept between runs: the hub's
#                        data dir (hub.db holds the enrolled fleet), sim.db,
#                        the agent's state dir
#   BENCH_PORT_BASE      18880   broker +3, API +4, floor broker +5 (fixed:
#                        they are written into the hub's data dir at init)
set -euo pipefail
cd "$(dirname "$0")/../.."
source tests/bench/lib.sh

BIN=$(realpath "${1:-build-bench/bin}")
PARTS=${BENCH_PARTS:-agent startup soak fleet}
DEVICES=${BENCH_DEVICES:-10000}
SIM_THREADS=${BENCH_SIM_THREADS:-4}
ROLLOUTS=${BENCH_ROLLOUTS:-3}
FLEET_PHASES=${BENCH_FLEET_PHASES:-connect,idle,reports,rollout,storm,floor}
IDLE_SECONDS=${BENCH_IDLE_SECONDS:-60}
STEADY_SECONDS=${BENCH_STEADY_SECONDS:-30}
SOAK_SECONDS=${BENCH_SOAK_SECONDS:-180}
SOAK_CRASHERS=${BENCH_SOAK_CRASHERS:-64}
STARTUP_RUNS=${BENCH_STARTUP_RUNS:-20}
STATE=$(realpath -m "${BENCH_STATE:-build-bench/bench-state}")
PORT_BASE=${BENCH_PORT_BASE:-18880}
BROKER_PORT=$((PORT_BASE + 3))
API_PORT=$((PORT_BASE + 4))
FLOOR_PORT=$((PORT_BASE + 5))
HUB_DIR=$STATE/hub
AGENT_DIR=$STATE/agent
AGENT_CONF=$STATE/agent.yaml
SIM_DIR=$STATE/sim
RESULTS=$STATE/results.txt
WORKLOAD_PIDS=""

for b in outpost-agent outpost-hub outpostctl outpost-sim; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing (make bench builds it)"
done
mkdir -p "$STATE"
chmod 0755 "$STATE"
trap cleanup EXIT
# 10,000 TLS connections per process: the simulator and each broker.
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -ge $((DEVICES + 1000)) ] ||
  log "warning: ulimit -n is $(ulimit -n); $DEVICES devices need more"

echo "# outpost benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ), $(git rev-parse --short HEAD 2>/dev/null)" >>"$RESULTS"
machine_figures
hub_up

agent_status() { "$BIN/outpost-agent" --state-dir "$AGENT_DIR" --config "$AGENT_CONF" status --json; }

# The agent's application: three process workloads. The soak adds a second
# one of `n` workloads that exit after 1..10 s and are restarted by the agent
# (its crash-loop backoff: 1 s doubling to 60 s, reset only by a 30 s run):
# together about one crash and restart per second.
apply_agent() {
  local crashers=$1 i
  cat >"$STATE/bench-agent.yaml" <<EOF
apiVersion: outpost.dev/v1alpha1
kind: EdgeApplication
metadata:
  name: bench-agent
spec:
  selector:
    matchLabels: {role: bench-agent}
  workloads:
    - {name: camera, kind: process, command: ["/bin/sleep", "86400"], restartPolicy: Always}
    - {name: detector, kind: process, command: ["/bin/sleep", "86401"], restartPolicy: Always}
    - {name: uploader, kind: process, command: ["/bin/sleep", "86402"], restartPolicy: Always}
EOF
  ctl apply -f "$STATE/bench-agent.yaml" >/dev/null || die "apply bench-agent failed"
  if [ "$crashers" -eq 0 ]; then
    ctl delete app bench-crash >/dev/null 2>&1 || true
    return 0
  fi
  {
    printf 'apiVersion: outpost.dev/v1alpha1\nkind: EdgeApplication\nmetadata:\n  name: bench-crash\n'
    printf 'spec:\n  selector:\n    matchLabels: {role: bench-agent}\n  workloads:\n'
    for i in $(seq 1 "$crashers"); do
      echo "    - {name: crasher-$i, kind: process, command: [\"/bin/sh\", \"-c\", \"sleep $((1 + i % 10)); exit 3\"], restartPolicy: Always}"
    done
  } >"$STATE/bench-crash.yaml"
  ctl apply -f "$STATE/bench-crash.yaml" >/dev/null || die "apply bench-crash failed"
}

agent_enrolled() {
  if [ ! -f "$AGENT_DIR/agent.db" ]; then
    printf 'log_level: info\nnvidia_smi: "-"\n' >"$AGENT_CONF"
    local tok
    tok=$(ctl token create --uses 1 --ttl 1h --label role=bench-agent -o json)
    "$BIN/outpost-agent" --state-dir "$AGENT_DIR" --config "$AGENT_CONF" join \
      --hub "https://localhost:$API_PORT" --token "$(jq -r .token <<<"$tok")" \
      --ca-hash "$(jq -r .caHash <<<"$tok")" --name bench-agent >>"$STATE/agent.log" 2>&1 ||
      die "agent join failed: $(tail -1 "$STATE/agent.log")"
  fi
  AGENT_ID=$(agent_status | jq -r .deviceId)
}

# Connected, the hub's generation applied, `n` workloads running.
agent_converged() {
  local n=$1 s want
  s=$(agent_status) || return 1
  want=$(ctl device get "$AGENT_ID" -o json | jq -r .desiredGeneration)
  jq -e --argjson want "$want" --argjson n "$n" \
    '.connection == "connected" and .appliedGeneration == $want and
     ([.workloads[] | select(.state == "running")] | length) >= $n' <<<"$s"
}

start_agent() {
  spawn AGENT_PID "$STATE/agent.log" "$BIN/outpost-agent" --state-dir "$AGENT_DIR" \
    --config "$AGENT_CONF" run
}

# Stops the agent (its workloads outlive it by design) and then them.
stop_agent() {
  local pids
  pids=$(agent_status | jq -r '.workloads[].pid | select(. > 0)' 2>/dev/null || true)
  stop_pid "${AGENT_PID:-}"
  for p in $pids; do kill -KILL "$p" 2>/dev/null || true; done
  AGENT_PID=""
}

part_agent() {
  log "agent footprint: enroll, three workloads, ${STEADY_SECONDS}s steady state"
  agent_enrolled
  apply_agent 0
  start_agent
  wait_for 60 agent_converged 3 || die "the agent did not converge: $(tail -3 "$STATE/agent.log")"
  WORKLOAD_PIDS=$(agent_status | jq -r '.workloads[].pid')
  sleep "$STEADY_SECONDS"
  # The floor: mosquitto_sub with the same device certificate on the same
  # broker, subscribed to the device's desired topic.
  : >"$STATE/mosquitto_sub.out"
  spawn SUB_PID "$STATE/mosquitto_sub.out" mosquitto_sub -h localhost -p "$BROKER_PORT" \
    --cafile "$AGENT_DIR/ca.crt" --cert "$AGENT_DIR/device.crt" --key "$AGENT_DIR/device.key" \
    -i "$AGENT_ID-floor" -q 1 -t "outpost/v1/devices/$AGENT_ID/desired" -F '%t %l'
  wait_for 30 test -s "$STATE/mosquitto_sub.out" || die "mosquitto_sub did not connect"
  sleep 2
  local apss arss spss srss
  apss=$(smaps "$AGENT_PID" Pss)
  arss=$(smaps "$AGENT_PID" Rss)
  spss=$(smaps "$SUB_PID" Pss)
  srss=$(smaps "$SUB_PID" Rss)
  figure agent.pss_kib "$apss" KiB "connected, 3 workloads, after ${STEADY_SECONDS}s; target <= 3072"
  figure agent.rss_kib "$arss" KiB
  figure floor.mosquitto_sub_pss_kib "$spss" KiB "same broker, same device certificate"
  figure floor.mosquitto_sub_rss_kib "$srss" KiB
  figure agent.pss_vs_floor "$(awk -v a="$apss" -v b="$spss" 'BEGIN {printf "%.2f", a / b}')" x "target <= 1.5"
  figure agent.threads "$(threads "$AGENT_PID")" ""
  strip -o "$STATE/outpost-agent.stripped" "$BIN/outpost-agent"
  figure agent.binary_stripped_bytes "$(stat -c %s "$STATE/outpost-agent.stripped")" B "x86-64, dynamically linked"
  smaps_by_mapping "$AGENT_PID" >"$STATE/agent-smaps.txt"
  smaps_by_mapping "$SUB_PID" >"$STATE/mosquitto_sub-smaps.txt"
  log "PSS by mapping: $STATE/agent-smaps.txt, $STATE/mosquitto_sub-smaps.txt"
  stop_pid "$SUB_PID"
}

part_startup() {
  log "agent start-up: enrolled, cached document, broker unreachable"
  agent_enrolled
  if [ -z "${AGENT_PID:-}" ]; then
    apply_agent 0
    start_agent
    wait_for 60 agent_converged 3 || die "the agent did not converge"
  fi
  stop_agent
  stop_broker
  "$BIN/outpost-sim" agent-startup --runs "$STARTUP_RUNS" --expect 3 --log "$STATE/agent-startup.log" \
    --results "$RESULTS" -- "$BIN/outpost-agent" --state-dir "$AGENT_DIR" --config "$AGENT_CONF" run
  start_broker
  wait_for 90 hub_healthy || die "the hub did not reconnect to the broker"
}

part_soak() {
  log "agent soak: ${SOAK_SECONDS}s, 3 workloads + $SOAK_CRASHERS crash-looping ones"
  agent_enrolled
  [ -n "${AGENT_PID:-}" ] && stop_agent
  apply_agent "$SOAK_CRASHERS"
  start_agent
  wait_for 60 agent_converged 3 || die "the agent did not converge"
  local t0=$SECONDS warm=$((SOAK_SECONDS / 3)) s r0="" r1 p0="" p1 rs0="" rs1 d0="" d1 pss rss dirty depth max_depth=0
  while [ $((SECONDS - t0)) -lt "$SOAK_SECONDS" ]; do
    sleep 10
    s=$(agent_status) || continue
    pss=$(smaps "$AGENT_PID" Pss)
    rss=$(smaps "$AGENT_PID" Rss)
    dirty=$(smaps "$AGENT_PID" Private_Dirty)
    depth=$(jq -r .outboxDepth <<<"$s")
    [ "$depth" -gt "$max_depth" ] && max_depth=$depth
    r1=$(jq '[.workloads[].restarts] | add' <<<"$s")
    p1=$pss rs1=$rss d1=$dirty
    echo "soak t=$((SECONDS - t0))s pss=$pss rss=$rss private_dirty=$dirty restarts=$r1 outbox=$depth" >>"$STATE/soak.log"
    if [ -z "$p0" ] && [ $((SECONDS - t0)) -ge "$warm" ]; then
      p0=$pss rs0=$rss d0=$dirty r0=$r1 tw=$SECONDS
    fi
  done
  stop_agent
  [ -n "$p0" ] || die "soak too short"
  local span=$((SECONDS - tw))
  figure agent.soak_seconds "$SOAK_SECONDS" s "measured over the last ${span}s (the first third warms up)"
  figure agent.soak_restarts_per_s "$(awk -v a="$r0" -v b="$r1" -v t="$span" 'BEGIN {printf "%.2f", (b - a) / t}')" 1/s
  figure agent.soak_rss_start_kib "$rs0" KiB
  figure agent.soak_rss_end_kib "$rs1" KiB
  figure agent.soak_rss_growth_kib "$((rs1 - rs0))" KiB "target 0 (no growth)"
  figure agent.soak_private_dirty_growth_kib "$((d1 - d0))" KiB "heap and other written pages"
  figure agent.soak_pss_start_end_kib "$p0/$p1" KiB "PSS moves with how many workloads share libc"
  figure agent.soak_max_outbox "$max_depth" events "events waiting for the hub's ack, sampled"
}

part_fleet() {
  log "fleet: $DEVICES simulated devices"
  local have=0 tok
  [ -f "$SIM_DIR/sim.db" ] && have=$(sqlite3 "$SIM_DIR/sim.db" 'SELECT count(*) FROM devices')
  if [ "$have" -lt "$DEVICES" ]; then
    log "enrolling $((DEVICES - have)) devices through the hub's API (kept in $SIM_DIR)"
    tok=$(ctl token create --uses $((DEVICES - have)) --ttl 4h --label fleet=sim -o json)
    "$BIN/outpost-sim" enroll --state-dir "$SIM_DIR" --hub "https://localhost:$API_PORT" \
      --token "$(jq -r .token <<<"$tok")" --ca-hash "$(jq -r .caHash <<<"$tok")" \
      --count "$DEVICES" --jobs 4 || die "enrollment failed"
  fi
  # The floor's broker: the hub's mosquitto.conf on another port, no persistence.
  mkdir -p "$STATE/floor"
  sed -e "s|^listener .*|listener $FLOOR_PORT|" -e 's|^persistence true|persistence false|' \
    -e '/^persistence_location/d' -e '/^persistence_file/d' -e '/^autosave_interval/d' \
    -e "s|^pid_file .*|pid_file $STATE/floor/mosquitto.pid|" \
    "$HUB_DIR/mosquitto.conf" >"$STATE/floor/mosquitto.conf"
  spawn FLOOR_PID "$STATE/floor/mosquitto.log" mosquitto -c "$STATE/floor/mosquitto.conf"
  wait_for 30 port_listens "$FLOOR_PORT" || die "the floor broker did not listen"
  "$BIN/outpost-sim" run --state-dir "$SIM_DIR" --count "$DEVICES" --threads "$SIM_THREADS" \
    --broker "ssl://localhost:$BROKER_PORT" --hub-data-dir "$HUB_DIR" --hub-pid "$HUB_PID" \
    --phases "$FLEET_PHASES" --idle-seconds "$IDLE_SECONDS" \
    --manifest tests/bench/sim-fleet.yaml --app sim-fleet --rollouts "$ROLLOUTS" \
    --restart-cmd "tests/bench/restart-broker.sh $HUB_DIR $BROKER_PORT $STATE/mosquitto.log" \
    --floor-broker "ssl://localhost:$FLOOR_PORT" --results "$RESULTS" ${BENCH_SIM_ARGS:-} ||
    log "outpost-sim run failed (figures above are those it measured)"
  stop_pid "$FLOOR_PID"
}

for part in $PARTS; do
  case "$part" in
    agent) part_agent ;;
    startup) part_startup ;;
    soak) part_soak ;;
    fleet) part_fleet ;;
    *) die "unknown part $part (agent, startup, soak, fleet)" ;;
  esac
done
log "figures appended to $RESULTS"
