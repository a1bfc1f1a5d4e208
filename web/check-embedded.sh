#!/usr/bin/env bash
# Fails when the demo build that the server embeds (crates/headcount-server/demo-dist, committed)
# differs from what web/ builds now. The build is deterministic and does not depend on the
# checkout's path, so any difference means the committed build is stale.
set -euo pipefail
cd "$(dirname "$0")"

if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
npx vite build --outDir "$out/demo-dist" --emptyOutDir --logLevel warn

if ! diff -r "$out/demo-dist" ../crates/headcount-server/demo-dist; then
  echo >&2
  echo "The embedded demo build is out of date: run 'npm run build' in web/ and commit" >&2
  echo "crates/headcount-server/demo-dist (then rebuild the server)." >&2
  exit 1
fi
echo "The embedded demo build matches the sources."
