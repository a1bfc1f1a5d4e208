#!/usr/bin/env bash
# CI smoke test of the load generator: every scenario, tiny, against a freshly started
# headcount; fails on any client error. Takes well under a minute. With redis-server on the
# PATH, also a tiny fan-out across two nodes sharing a fresh Redis (a few seconds).
#   bench/smoke.sh                      (builds the debug binary)
#   HEADCOUNT_BIN=path bench/smoke.sh   (uses that binary)
set -euo pipefail
cd "$(dirname "$0")/.."

bin="${HEADCOUNT_BIN:-}"
if [ -z "$bin" ]; then
  cargo build -q -p headcount
  bin=target/debug/headcount
fi
out="$(mktemp -d)"
# At least 32 bytes: `serve` refuses shorter secrets.
secret="smoke-$(od -An -tx1 -N24 /dev/urandom | tr -d ' \n')"
server_pid=""
cluster_pids=()
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  for p in "${cluster_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${cluster_pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$out"
}
trap cleanup EXIT

"$bin" serve --bind 127.0.0.1:0 --jwt-secret "$secret" >"$out/server.log" 2>&1 &
server_pid=$!
url=""
for _ in $(seq 1 100); do
  url="$(sed -n 's/^ *API URL: //p' "$out/server.log" | head -n1)"
  [ -n "$url" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$out/server.log"; echo "smoke: the server did not start" >&2; exit 1; }
  sleep 0.1
done
[ -n "$url" ] || { echo "smoke: no server URL" >&2; exit 1; }

# Latency bounds are loose: this checks that every scenario runs and that nothing is lost or
# refused, not how fast a debug build on a busy CI machine is.
scenarios=(
  "idle --connections 50 --channels 5 --hold-secs 1"
  "fanout --channels 2 --subscribers 25 --publishers 4 --rates 500,2000 --step-secs 1 --p99-ms 2000"
  "presence-storm --members 50 --join-rate 200 --timeout-secs 15"
  "join-rate --rates 50,100 --step-secs 1 --p99-ms 2000"
)
passed=0
failed=0
for s in "${scenarios[@]}"; do
  name="${s%% *}"
  # shellcheck disable=SC2086
  if timeout 60 "$bin" bench $s --url "$url" --jwt-secret "$secret" --pid "$server_pid" \
    --json "$out/$name.json" >"$out/$name.txt" 2>&1; then
    passed=$((passed + 1))
    echo "smoke: $name ok ($(sed -n 's/^[a-z-]* against headcount: //p' "$out/$name.txt"))"
  else
    failed=$((failed + 1))
    echo "smoke: $name FAILED" >&2
    cat "$out/$name.txt" >&2
  fi
done
# The cluster case: two nodes on one fresh Redis, subscribers spread over both, publishers on
# the first, so most deliveries cross Redis.
if command -v redis-server >/dev/null; then
  rport="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')"
  redis-server --bind 127.0.0.1 --port "$rport" --save '' --appendonly no --logfile "$out/redis.log" &
  cluster_pids+=("$!")
  for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break; sleep 0.05; done
  urls=()
  for k in 1 2; do
    "$bin" serve --bind 127.0.0.1:0 --jwt-secret "$secret" --redis "redis://127.0.0.1:$rport" \
      >"$out/node$k.log" 2>&1 &
    cluster_pids+=("$!")
    u=""
    for _ in $(seq 1 100); do
      u="$(sed -n 's/^ *API URL: //p' "$out/node$k.log" | head -n1)"
      [ -n "$u" ] && break
      sleep 0.1
    done
    [ -n "$u" ] || { cat "$out/node$k.log"; echo "smoke: cluster node $k did not start" >&2; exit 1; }
    urls+=("$u")
  done
  if timeout 60 "$bin" bench fanout --channels 2 --subscribers 20 --publishers 2 --rates 500,1000 \
    --step-secs 1 --p99-ms 2000 --url "${urls[0]},${urls[1]}" --jwt-secret "$secret" \
    --json "$out/cluster-fanout.json" >"$out/cluster-fanout.txt" 2>&1; then
    passed=$((passed + 1))
    echo "smoke: cluster fanout ok ($(sed -n 's/^[a-z-]* against headcount: //p' "$out/cluster-fanout.txt"))"
  else
    failed=$((failed + 1))
    echo "smoke: cluster fanout FAILED" >&2
    cat "$out/cluster-fanout.txt" >&2
  fi
else
  echo "smoke: no redis-server, cluster fanout skipped"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
