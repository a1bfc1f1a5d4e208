#!/usr/bin/env bash
# Installs the peer servers headcount is benchmarked against: socket.io and @y/websocket-server
# (npm, versions pinned in package-lock.json) and Prosody (Debian package).
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm
fi
npm ci --no-audit --no-fund --loglevel=error

if ! command -v prosody >/dev/null; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prosody
fi
# The Debian package starts a system-wide Prosody where an init system runs; the benchmarks
# start their own with bench/peers/prosody/prosody.cfg.lua.in.
echo "peers installed: socket.io $(node -p 'require("./node_modules/socket.io/package.json").version'), @y/websocket-server $(node -p 'require("./node_modules/@y/websocket-server/package.json").version'), $(dpkg-query -W -f='prosody ${Version}' prosody 2>/dev/null || echo prosody)"
