#!/usr/bin/env bash
# restart-broker.sh HUB_DIR PORT LOG: stops the hub's mosquitto (SIGTERM: it
# saves its persistence) and starts it again from the same mosquitto.conf;
# returns once it listens. outpost-sim's storm phase runs it.
set -euo pipefail
dir=$1 port=$2 log=$3

pid=$(cat "$dir/mosquitto.pid" 2>/dev/null || true)
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = mosquitto ]; then
  kill -TERM "$pid"
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
fi
listening() { ss -Hltn "sport = :$port" | grep -q LISTEN; }
for _ in $(seq 1 300); do
  listening || break
  sleep 0.05
done
setsid mosquitto -c "$dir/mosquitto.conf" >>"$log" 2>&1 </dev/null &
for _ in $(seq 1 600); do
  listening && exit 0
  sleep 0.05
done
echo "restart-broker: mosquitto does not listen on $port" >&2
exit 1
