#!/usr/bin/env bash
# Tests of the Svelte library and the demo page:
#   1. the demo build embedded in the server matches web/'s sources;
#   2. component tests (vitest, jsdom);
#   3. browser tests: Debian's Chromium, driven by playwright-core, against the real server binary;
#   4. the consumer app: a SvelteKit app installing the packed package, built, type-checked and
#      driven in Chromium, with the floor and the newest supabase-js (tests/consumer/run.sh).
# Installs what is missing on a fresh Debian machine (run as root there): chromium with apt, the
# npm packages with npm ci. Uses $HEADCOUNT_BIN when set, otherwise builds target/debug/headcount.
set -euo pipefail
cd "$(dirname "$0")"

log() { printf '\n==> %s\n' "$*"; }

node_major="$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)"
if [ "$node_major" -lt 20 ]; then
  echo "web/test.sh needs Node.js 20.19 or newer (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$CHROMIUM_BIN" ]; then
  log "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
fi

lock_hash="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [ "$(cat node_modules/.installed-lock 2>/dev/null || true)" != "$lock_hash" ]; then
  log "installing npm packages (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
  echo "$lock_hash" > node_modules/.installed-lock
fi

if [ -z "${HEADCOUNT_BIN:-}" ]; then
  log "building the headcount binary"
  (cd .. && cargo build -p headcount)
  export HEADCOUNT_BIN="$PWD/../target/debug/headcount"
fi

log "the embedded demo build matches the sources"
bash check-embedded.sh

log "component tests (vitest)"
npx vitest run

log "browser tests (chromium against $HEADCOUNT_BIN)"
node --test --test-concurrency=1 --test-timeout=120000 tests/browser/

log "the package in a SvelteKit app (tests/consumer)"
bash tests/consumer/run.sh
