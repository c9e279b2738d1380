#!/usr/bin/env bash
# Make sure the offline test fixtures exist: the upkeep-test/* images
# (scripts/test-images.sh) and the sample release bundles
# (scripts/make-bundles.sh). Cheap when everything is cached.
#
# Usage: scripts/fixtures.sh [--force]
#   Logs go to stderr; stdout is one line: the bundles folder, so tests can do
#   BUNDLES=$(scripts/fixtures.sh). Exits non-zero when anything failed.
#   Concurrent callers are serialised with flock on $UPKEEP_FIXTURES/.lock:
#   the first builds, the others wait and then find everything in place.
# Env: UPKEEP_FIXTURES (default <repo>/target/fixtures),
#      UPKEEP_FIXTURES_LOCK_TIMEOUT (seconds to wait for the lock, default 3600).
SCRIPT_NAME=fixtures.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FORCE=()
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=(--force) ;;
    -h | --help) usage_header; exit 0 ;;
    *) die "unknown argument: $1 (usage: scripts/fixtures.sh [--force])" ;;
  esac
  shift
done

# shellcheck disable=SC2154 # rc is set inside the trap
trap 'rc=$?; [ "$rc" = 0 ] || log "FAILED (exit $rc): the test fixtures are incomplete; see the messages above"' EXIT
BUNDLES=$UPKEEP_FIXTURES/bundles
T0=$(now)
fixtures_lock
"$REPO/scripts/test-images.sh" "${FORCE[@]}" ||
  die "building the test images failed (scripts/test-images.sh; logs in $FIXTURE_WORK/logs)"
"$REPO/scripts/make-bundles.sh" "${FORCE[@]}" "$BUNDLES" ||
  die "generating the sample bundles failed (scripts/make-bundles.sh)"
log "fixtures ready in $(elapsed "$T0"): images upkeep-test/postgres:15, upkeep-test/postgres:17, upkeep-test/app:1"
log "bundles: $BUNDLES"
echo "$BUNDLES"
