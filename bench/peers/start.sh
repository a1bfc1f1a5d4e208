#!/usr/bin/env bash
# Starts one peer on 127.0.0.1 in the background and prints its process id once it accepts
# connections:
#   bench/peers/start.sh socketio [PORT]   (default 4001)
#   bench/peers/start.sh yjs      [PORT]   (default 4002)
#   bench/peers/start.sh prosody  [PORT]   (default 5280, WebSocket at /xmpp-websocket)
# Stop it with bench/peers/stop.sh PID. Logs go to $BENCH_TMP (default /tmp/headcount-bench).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
name="${1:?usage: start.sh socketio|yjs|prosody [PORT]}"
tmp="${BENCH_TMP:-/tmp/headcount-bench}"
mkdir -p "$tmp"

case "$name" in
  socketio)
    port="${2:-4001}"
    PORT="$port" nohup node "$here/socketio-server.mjs" >"$tmp/socketio.log" 2>&1 &
    pid=$!
    ;;
  yjs)
    port="${2:-4002}"
    HOST=127.0.0.1 PORT="$port" nohup node "$here/node_modules/@y/websocket-server/src/server.js" \
      >"$tmp/yjs.log" 2>&1 &
    pid=$!
    ;;
  prosody)
    port="${2:-5280}"
    dir="$tmp/prosody"
    rm -rf "$dir" && mkdir -p "$dir"
    sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" "$here/prosody/prosody.cfg.lua.in" >"$dir/prosody.cfg.lua"
    nohup prosody --config "$dir/prosody.cfg.lua" >"$tmp/prosody.out" 2>&1 &
    pid=$!
    ;;
  *)
    echo "unknown peer: $name" >&2
    exit 2
    ;;
esac

for _ in $(seq 1 100); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "$pid"
    exit 0
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "$name exited; see $tmp" >&2
    exit 1
  fi
  sleep 0.1
done
echo "$name did not open port $port" >&2
kill "$pid" 2>/dev/null || true
exit 1
