#!/usr/bin/env bash
# The project's test run (called by .ci/run): fixtures, format, lints, tests, fuzzing.
# Stops at the first failing step and exits with its status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s ===\n' "$*"; }
T0=$SECONDS

step "fixtures (scripts/fixtures.sh)"
export UPKEEP_FIXTURES=${UPKEEP_FIXTURES:-$PWD/target/fixtures}
UPKEEP_BUNDLES=$(scripts/fixtures.sh)
export UPKEEP_BUNDLES
echo "UPKEEP_BUNDLES=$UPKEEP_BUNDLES ($((SECONDS - T0))s)"

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --all-targets"
cargo test --all-targets 2>&1

step "fuzz targets (scripts/fuzz.sh, ${FUZZ_SECONDS:-30}s each)"
scripts/fuzz.sh

step "all steps passed in $((SECONDS - T0))s"
