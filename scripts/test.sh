#!/usr/bin/env bash
# The project's test run (called by .ci/run): fixtures, format, lints, tests, fuzzing.
# Stops at the first failing step and exits with its status.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s ===\n' "$*"; }
T0=$SECONDS

# The test images and bundles (debootstrap, apt, docker build: mostly
# downloads and disk) are made while the code compiles (CPU): 3-6 minutes of
# a fresh machine's run overlap instead of adding up.
step "fixtures (scripts/fixtures.sh), in the background while the code builds"
export UPKEEP_FIXTURES=${UPKEEP_FIXTURES:-$PWD/target/fixtures}
mkdir -p "$UPKEEP_FIXTURES"
FIXTURES_OUT=$UPKEEP_FIXTURES/fixtures.out
FIXTURES_LOG=$UPKEEP_FIXTURES/fixtures.log
scripts/fixtures.sh >"$FIXTURES_OUT" 2>"$FIXTURES_LOG" &
FIXTURES_PID=$!
trap 'kill "$FIXTURES_PID" 2>/dev/null || true' EXIT

step "cargo fmt --check"
cargo fmt --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "build: test binaries, fuzz targets"
cargo test --all-targets --no-run
scripts/fuzz.sh --build

step "fixtures (waiting for scripts/fixtures.sh)"
if ! wait "$FIXTURES_PID"; then
  cat "$FIXTURES_LOG"
  echo "scripts/fixtures.sh failed: the test images or bundles could not be built (log above)" >&2
  exit 1
fi
trap - EXIT
cat "$FIXTURES_LOG"
UPKEEP_BUNDLES=$(cat "$FIXTURES_OUT")
export UPKEEP_BUNDLES
echo "UPKEEP_BUNDLES=$UPKEEP_BUNDLES (ready $((SECONDS - T0))s into the run)"

# Compose v2 (`docker compose`, what most administrators have) runs the whole
# suite; v1 (`docker-compose` 1.29) the compose-facing subset below, to keep
# CI under 45 minutes: the vendor corpus, .env values through an upgrade,
# anchored Postgres, two copies, two sites, a restore, bind-mounted data.
# Run under v2 only, since what they add is Postgres or upkeep work, not
# compose's: every_database (the multi-database upgrade and restore,
# pg_upgrade included), the same-major upgrade and the external Postgres
# volume (about 7, 4 and 3.5 minutes each in a v2 run under nextest).
# UPKEEP_COMPOSE_V2_CONFIG is a DOCKER_CONFIG holding the v2 plugin (.ci/run
# installs one); without it, the machine's own is used.
V1_SUITE=(--test compose_env --test compose_anchored --test instances --test backup
  --test ownership --test bind_mounts --test compose_corpus
  -- hostile anchored two_copies restore_after_disaster two_sites postgres_and_uploads vendor)
[ -z "${UPKEEP_COMPOSE_V2_CONFIG:-}" ] || export DOCKER_CONFIG=$UPKEEP_COMPOSE_V2_CONFIG

# The integration tests mostly wait on containers: three at a time keep the
# two cores busy (RUST_TEST_THREADS overrides). UPKEEP_NEXTEST=1 runs them
# under cargo-nextest instead (three at a time across all test binaries,
# slowest first: .config/nextest.toml). It is not the default: measured on
# this 2-core machine (before status and the upgrade preflight stopped
# asking the engine for /system/df, which walked every volume and layer on
# each call), three heavy tests at once from different binaries kept
# dockerd and fuse-overlayfs at 30-64 % system time and the v2 suite took
# 38 minutes, where cargo test's whole CI run took 48. Since, the whole
# run under cargo test takes 27 minutes (v2 suite 13.4, v1 subset 4.9).
run_tests() { # run_tests [--test NAME]... [-- FILTER...]
  if [ "${UPKEEP_NEXTEST:-}" = 1 ]; then
    local args=() filters=() seen_dashes=
    for a in "$@"; do
      if [ "$a" = -- ]; then seen_dashes=1
      elif [ -n "$seen_dashes" ]; then filters+=("$a")
      else args+=("$a"); fi
    done
    cargo nextest run -j "$RUST_TEST_THREADS" "${args[@]}" ${filters[@]+"${filters[@]}"}
  else
    cargo test "$@"
  fi
}

step "tests (every target), compose v2"
UPKEEP_COMPOSE=v2 run_tests --all-targets 2>&1

step "tests (compose subset), compose v1"
UPKEEP_COMPOSE=v1 run_tests "${V1_SUITE[@]}" 2>&1

step "fuzz targets (scripts/fuzz.sh, ${FUZZ_SECONDS:-20}s each; built above)"
scripts/fuzz.sh

step "all steps passed in $((SECONDS - T0))s"
