#!/usr/bin/env bash
# make demo: a real Mosquitto with TLS, a hub and one enrolled agent under
# ./demo-state/, the example application applied, the fleet and the agent's
# status printed once it converged. Ctrl-C stops everything it started.
#   DEMO_ONESHOT=1  exit 0 right after the converged status (non-zero if the
#                   agent did not converge within 60 s)
#   DEMO_BROKER_PORT, DEMO_API_PORT  ports (default: free ones)
set -euo pipefail

cd "$(dirname "$0")/.."
BIN=${OUTPOST_BIN:-$PWD/build/bin}
STATE=$PWD/demo-state
ONESHOT=${DEMO_ONESHOT:-0}
DEADLINE_S=${DEMO_TIMEOUT:-60}

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
[ -t 1 ] || say() { printf '==> %s\n' "$*"; }
die() { echo "demo: $*" >&2; exit 1; }

free_port() {
  # Ask the kernel for a free port (bind to port 0) without python.
  local p
  for _ in $(seq 1 50); do
    p=$(( (RANDOM % 20000) + 30000 ))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

pids=()
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ ${#pids[@]} -gt 0 ]; then
    say "stopping demo processes"
    # The agent first (a clean stop leaves its workloads running, as on a
    # device), then its workloads, then hub and broker.
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    done
  fi
  # Workloads the demo agent started (they run in their own process groups).
  if [ -f "$STATE/agent/agent.db" ] && command -v sqlite3 >/dev/null; then
    for pid in $(sqlite3 "file:$STATE/agent/agent.db?mode=ro" \
                 "SELECT pid FROM process_records" 2>/dev/null); do
      [ "$pid" -gt 1 ] 2>/dev/null && kill -TERM -- "-$pid" 2>/dev/null || true
    done
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for b in outpost-hub outpostctl outpost-agent; do
  [ -x "$BIN/$b" ] || die "$BIN/$b is missing; run 'make build'"
done
command -v mosquitto >/dev/null || die "mosquitto is not installed"

BROKER_PORT=${DEMO_BROKER_PORT:-$(free_port)}
API_PORT=${DEMO_API_PORT:-$(free_port)}
rm -rf "$STATE"
mkdir -p "$STATE/logs"

say "initialising the hub in $STATE/hub (broker :$BROKER_PORT, API :$API_PORT)"
"$BIN/outpost-hub" init --data-dir "$STATE/hub" --hostname localhost \
  --broker-port "$BROKER_PORT" --api-port "$API_PORT" >"$STATE/logs/init.log"

say "starting mosquitto (TLS, client certificates, per-device ACLs)"
mosquitto -c "$STATE/hub/mosquitto.conf" >"$STATE/logs/mosquitto.log" 2>&1 &
pids+=($!)

say "starting outpost-hub"
"$BIN/outpost-hub" serve --data-dir "$STATE/hub" >"$STATE/logs/hub.log" 2>&1 &
pids+=($!)

CTL=("$BIN/outpostctl" --config "$STATE/hub/ctl.yaml")
for i in $(seq 1 200); do
  "${CTL[@]}" device list >/dev/null 2>&1 && break
  [ "$i" = 200 ] && { tail -20 "$STATE/logs/hub.log" >&2; die "the hub did not come up"; }
  sleep 0.1
done

say "creating a join token for a store in the south region"
token_json=$("${CTL[@]}" token create --ttl 1h --uses 1 --label role=store --label region=south -o json)
token=$(jq -r .token <<<"$token_json")
ca_hash=$(jq -r .caHash <<<"$token_json")
echo "    $(jq -r .joinCommand <<<"$token_json")"

AGENT=("$BIN/outpost-agent" --state-dir "$STATE/agent" --config /dev/null)
say "enrolling the agent"
"${AGENT[@]}" join --hub "https://localhost:$API_PORT" --token "$token" \
  --ca-hash "$ca_hash" --name demo-store

say "starting outpost-agent"
"${AGENT[@]}" run >"$STATE/logs/agent.log" 2>&1 &
pids+=($!)

say "applying examples/store-app.yaml"
"${CTL[@]}" apply -f examples/store-app.yaml

say "waiting for the agent to converge (at most ${DEADLINE_S}s)"
converged=0
end=$(( $(date +%s) + DEADLINE_S ))
while [ "$(date +%s)" -lt "$end" ]; do
  if st=$("${AGENT[@]}" status --json 2>/dev/null) &&
     jq -e '.connection == "connected" and .desiredGeneration > 0
            and .appliedGeneration == .desiredGeneration
            and (.workloads | length) > 0
            and all(.workloads[]; .state == "running")' >/dev/null <<<"$st"; then
    converged=1
    break
  fi
  sleep 0.2
done

say "fleet"
"${CTL[@]}" device list || true
echo
say "agent status"
"${AGENT[@]}" status || true

if [ "$converged" != 1 ]; then
  echo "--- agent log (tail)" >&2; tail -20 "$STATE/logs/agent.log" >&2 || true
  echo "--- hub log (tail)" >&2; tail -20 "$STATE/logs/hub.log" >&2 || true
  die "the agent did not converge within ${DEADLINE_S}s"
fi
say "converged"

if [ "$ONESHOT" = 1 ]; then
  exit 0
fi
say "running; logs in $STATE/logs and $STATE/agent/logs. Ctrl-C stops everything."
while :; do
  for pid in "${pids[@]}"; do
    kill -0 "$pid" 2>/dev/null || die "a demo process ($pid) exited; see $STATE/logs"
  done
  sleep 1
done
