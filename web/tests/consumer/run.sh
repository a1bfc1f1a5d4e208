#!/usr/bin/env bash
# The package as a SvelteKit developer meets it: the app in tests/consumer/app (the official
# `sv create --template minimal --types ts` app with adapter-node, its versions pinned in its
# package-lock) installs the tarball `npm pack` makes, with the supabase-js its lock pins (the
# floor of the peer range, what npm picks on Node 20) and then with the newest. For each:
# svelte-check is clean, `vite build` passes, and consumer.test.js drives the built app
# (adapter-node, and `vite preview`) with Chromium against the real headcount binary.
# Needs web/'s packages installed (test.sh runs npm ci) and $HEADCOUNT_BIN.
set -euo pipefail
cd "$(dirname "$0")/../.."
web="$PWD"

NEWEST_SUPABASE_JS=2.119.1

log() { printf '\n==> %s\n' "$*"; }

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log "packing @headcount/svelte"
npm pack --pack-destination "$work" --loglevel=error >/dev/null
tarball="$(ls "$work"/headcount-svelte-*.tgz)"
# What the tarball holds: compiled components and their types, nothing of the demo or the tests.
tar -tzf "$tarball" | sort > "$work/contents"
for f in package/dist/index.js package/dist/index.d.ts package/dist/RealtimePresence.svelte \
  package/dist/BroadcastChannel.svelte package/dist/SupabaseApp.svelte; do
  grep -qx "$f" "$work/contents" || { echo "the tarball lacks $f" >&2; exit 1; }
done
if grep -E '^package/(src|tests|node_modules)/' "$work/contents"; then
  echo "the tarball holds sources, tests or dependencies" >&2
  exit 1
fi

# The app outside web/, so nothing can resolve to web/node_modules.
cp -r tests/consumer/app "$work/app"
rm -rf "$work/app/node_modules" "$work/app/.svelte-kit" "$work/app/build"
cd "$work/app"
log "installing the app (npm ci) and the tarball"
npm ci --no-audit --no-fund --loglevel=error
floor="$(node -p 'require("./package-lock.json").packages["node_modules/@supabase/supabase-js"].version')"

for version in "$floor" "$NEWEST_SUPABASE_JS"; do
  log "@supabase/supabase-js $version"
  # As a user would (saved in the copy's package.json: vite-plugin-svelte finds the Svelte
  # libraries to compile there). supabase-js after 2.109 declares Node 22; the template's
  # engine-strict would refuse it on Node 20.
  npm install --save-exact --no-audit --no-fund --loglevel=error --engine-strict=false \
    "$tarball" "@supabase/supabase-js@$version"
  installed="$(node -p 'require("@supabase/supabase-js/package.json").version')"
  [ "$installed" = "$version" ] || { echo "installed supabase-js $installed, wanted $version" >&2; exit 1; }

  npx svelte-kit sync
  # Any error or warning fails, but one: in a runes-mode file Svelte itself flags the seed
  # snippet's `on:click` on its buttons as deprecated (event_directive_deprecated). That is the
  # snippet's own syntax, verbatim, not the package's; the snippet route uses `onclick`.
  npx svelte-check --tsconfig ./tsconfig.json --fail-on-warnings --output human \
    --compiler-warnings event_directive_deprecated:ignore
  if [ "$version" = "$floor" ]; then
    # The types catch mistakes: a route with 8 of them must get exactly those 8 errors.
    mkdir -p src/routes/typed
    cp "$web/tests/consumer/typed/+page.svelte" src/routes/typed/
    npx svelte-kit sync
    npx svelte-check --tsconfig ./tsconfig.json --output machine \
      --compiler-warnings event_directive_deprecated:ignore > "$work/typed.out" || true
    rm -rf src/routes/typed
    if ! grep -q 'COMPLETED .* 8 ERRORS 0 WARNINGS 1 FILES_WITH_PROBLEMS' "$work/typed.out"; then
      cat "$work/typed.out" >&2
      echo "svelte-check did not report exactly the 8 type errors of tests/consumer/typed" >&2
      exit 1
    fi
    npx svelte-kit sync
  fi
  rm -rf build
  npx vite build --logLevel warn
  # The client bundle carries the app's supabase-js (its X-Client-Info names the version).
  grep -rqF "supabase-js-web/$version" build/client || grep -rqF "$version" build/client || {
    echo "the client bundle does not hold supabase-js $version" >&2
    exit 1
  }

  log "browser tests of the app (supabase-js $version)"
  CONSUMER_APP_DIR="$work/app" SUPABASE_JS_VERSION="$version" \
    node --test --test-concurrency=1 --test-timeout=120000 "$web/tests/consumer/consumer.test.js"
done
