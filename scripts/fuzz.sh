#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (FUZZ_SECONDS each,
# default 20) with libFuzzer, from the committed seeds in fuzz/seeds/<target>
# plus what earlier runs found (fuzz/corpus/<target>, not committed).
# Stops at the first target that crashes, leaks past the memory limits or
# hangs; libFuzzer then names the input it saved in fuzz/artifacts/<target>/.
# Add that input as a regression test in tests/hostile.rs.
#
# Needs only the stable toolchain: cargo-fuzz is installed from crates.io when
# missing, and RUSTC_BOOTSTRAP=1 lets stable rustc take the -Z flags cargo-fuzz
# passes (coverage instrumentation). No address sanitizer (`-s none`): the
# targets are safe Rust, where it finds little, and building every dependency
# with it took over an hour on this 2-core machine; libFuzzer's own limits
# still catch panics, hangs and memory blow-ups.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Usage: scripts/fuzz.sh [--build]   (--build: install cargo-fuzz and build
# the targets, run nothing; the test run builds early, fuzzes last)
BUILD_ONLY=
case "${1:-}" in
  --build) BUILD_ONLY=1 ;;
  "") ;;
  *) echo "usage: scripts/fuzz.sh [--build]" >&2; exit 2 ;;
esac
SECONDS_EACH=${FUZZ_SECONDS:-20}
CARGO_FUZZ_VERSION=0.13.2
export RUSTC_BOOTSTRAP=1

if [ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  echo "installing cargo-fuzz $CARGO_FUZZ_VERSION from crates.io"
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

cargo fuzz build -O -s none --fuzz-dir fuzz
[ -z "$BUILD_ONLY" ] || exit 0
for target in $(cargo fuzz list --fuzz-dir fuzz); do
  mkdir -p "fuzz/corpus/$target" "fuzz/seeds/$target"
  echo "=== fuzz $target (${SECONDS_EACH}s) ==="
  # memory bounded: one allocation over 1 GiB or 1.5 GiB resident is a failure;
  # one input running 20 s is a hang
  cargo fuzz run -O -s none --fuzz-dir fuzz "$target" "fuzz/corpus/$target" "fuzz/seeds/$target" -- \
    -max_total_time="$SECONDS_EACH" -rss_limit_mb=1536 -malloc_limit_mb=1024 -timeout=20 \
    -print_final_stats=1
done
echo "every fuzz target ran ${SECONDS_EACH}s without a failure"
