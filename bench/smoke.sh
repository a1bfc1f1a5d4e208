#!/usr/bin/env bash
# CI smoke test of the load generator: every scenario, tiny, against a freshly started
# headcount; fails on any client error. Takes well under a minute.
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
secret="smoke-$$-$RANDOM"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
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
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
