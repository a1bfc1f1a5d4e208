#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10); exits non-zero if any target crashes.
#
#   fuzz/run.sh            # 10 s per target
#   fuzz/run.sh 600        # 10 minutes per target
#   FUZZ_TARGETS="jwt ws_reader" fuzz/run.sh 60
#   FUZZ_SKIP_REGRESSIONS=1 fuzz/run.sh    # don't replay regressions/ (known, unfixed crashers)
#
# Works with the stable toolchain: cargo-fuzz needs nightly-only rustc flags (-Z sanitizer and
# friends), which RUSTC_BOOTSTRAP=1 unlocks on stable. Builds with AddressSanitizer and with
# debug assertions and overflow checks on (-a), so an integer overflow is a crash too.
#
# Each run starts from the committed seeds (corpus/<target>) and the known crashers
# (regressions/<target>, replayed first), and writes what it discovers to work/<target>, which
# git ignores, so the committed corpus stays small. Crashes land in artifacts/<target>/.
#
# Extra arguments after SECONDS go to libFuzzer, e.g. `fuzz/run.sh 60 -jobs=2 -workers=2`.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${1:-10}"
shift || true
targets="${FUZZ_TARGETS:-ws_reader protocol_decode join_payload jwt presence_state}"

export RUSTC_BOOTSTRAP=1
# Keep the fuzz build's output beside the fuzz crate, whatever the caller's environment says.
unset CARGO_TARGET_DIR

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "==> installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi
if ! command -v c++ >/dev/null 2>&1; then
  # libfuzzer-sys compiles libFuzzer itself, which needs a C++ compiler.
  echo "==> installing a C++ compiler for libFuzzer"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq g++
fi

# The ASan runtime ships with the stable toolchain; fall back to no sanitizer if it is missing.
sysroot="$(rustc --print sysroot)"
host="$(rustc -vV | sed -n 's/^host: //p')"
sanitizer=address
if ! ls "$sysroot/lib/rustlib/$host/lib/"librustc-*_rt.asan.a >/dev/null 2>&1; then
  echo "==> no AddressSanitizer runtime in $sysroot; building with --sanitizer none"
  sanitizer=none
fi
flags=(-a --sanitizer "$sanitizer")

echo "==> building the fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build "${flags[@]}"

failed=()
for t in $targets; do
  echo "==> $t for ${seconds}s"
  mkdir -p "work/$t"
  corpora=("work/$t" "corpus/$t")
  if [ -z "${FUZZ_SKIP_REGRESSIONS:-}" ] && [ -d "regressions/$t" ]; then
    corpora+=("regressions/$t")
  fi
  if ! cargo fuzz run "${flags[@]}" "$t" "${corpora[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 "$@"; then
    failed+=("$t")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "==> crashes in: ${failed[*]} (inputs in fuzz/artifacts/<target>/)"
  exit 1
fi
echo "==> no crashes in: $targets"
