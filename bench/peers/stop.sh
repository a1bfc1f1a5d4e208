#!/usr/bin/env bash
# Stops a server started by start.sh (or headcount started by the runner): TERM, then KILL.
set -uo pipefail
pid="${1:?usage: stop.sh PID}"
kill -TERM "$pid" 2>/dev/null || exit 0
for _ in $(seq 1 50); do
  kill -0 "$pid" 2>/dev/null || exit 0
  sleep 0.1
done
kill -KILL "$pid" 2>/dev/null || true
