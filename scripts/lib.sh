# shellcheck shell=bash
# Shared helpers for the fixture scripts. Source it; don't run it.
#
#   UPKEEP_FIXTURES   where fixtures live (default: <repo>/target/fixtures)
#     work/           debootstrap + apt caches, build contexts (safe to delete)
#     bundles/        sample vendor release bundles (make-bundles.sh)
#     .lock           flock(1) lock serialising fixture builders
#
# Nothing here names a package-registry host: the Debian mirror is read from
# this machine's apt sources at run time.

set -euo pipefail
umask 022

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
UPKEEP_FIXTURES=${UPKEEP_FIXTURES:-$REPO/target/fixtures}
export UPKEEP_FIXTURES
# shellcheck disable=SC2034 # used by the scripts that source this
FIXTURE_WORK=$UPKEEP_FIXTURES/work
SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0")}

# Bump when the content of the test images changes: images carrying another
# revision label are rebuilt even though their tag exists.
# shellcheck disable=SC2034
FIXTURE_REV=1

log() { printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "$SCRIPT_NAME" "$*" >&2; }
die() {
  log "ERROR: $*"
  exit 1
}

# Seconds since the epoch with fractions; elapsed START prints "12.3s".
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1fs", b - a }'; }

# Is a Debian package installed?
deb_installed() {
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

# ensure_debs PKG...: install the packages that are missing (root only).
# Tries with the current package lists first and runs `apt-get update` once
# only if that fails (lists missing or stale).
ensure_debs() {
  local missing=() p
  for p in "$@"; do deb_installed "$p" || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "missing Debian packages (${missing[*]}); run as root or install them"
  log "installing Debian packages: ${missing[*]}"
  local apt=(apt-get -q -y -o DPkg::Lock::Timeout=600 --no-install-recommends)
  if ! DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" >&2; then
    log "install failed with the current package lists; running apt-get update once"
    apt-get -q -o DPkg::Lock::Timeout=600 update >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive "${apt[@]}" install "${missing[@]}" >&2 ||
      die "apt-get install ${missing[*]} failed"
  fi
}

# debian_mirror SUITE: the archive URI this machine's apt uses for SUITE,
# read from /etc/apt/sources.list and sources.list.d/ (one-line .list files
# and deb822 .sources files).
debian_mirror() {
  local suite=$1 f uri=""
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    uri=$(awk -v want="$suite" '
      $1 == "deb" {
        sub(/\[[^]]*\]/, "")          # drop [options]
        if ($3 == want) { print $2; exit }
      }' "$f")
    [ -n "$uri" ] && break
  done
  if [ -z "$uri" ]; then
    for f in /etc/apt/sources.list.d/*.sources; do
      [ -f "$f" ] || continue
      uri=$(awk -v want="$suite" '
        function flush() {
          if (isdeb && index(" " suites " ", " " want " ") && uris != "") {
            split(uris, u, /[ \t]+/); print u[1]; found = 1
          }
          isdeb = 0; suites = ""; uris = ""
        }
        /^[ \t]*#/ { next }
        /^[ \t]*$/ { flush(); if (found) exit; next }
        tolower($1) == "types:"  { for (i = 2; i <= NF; i++) if ($i == "deb") isdeb = 1 }
        tolower($1) == "suites:" { $1 = ""; suites = $0 }
        tolower($1) == "uris:"   { $1 = ""; sub(/^[ \t]+/, ""); uris = $0 }
        END { if (!found) flush() }' "$f")
      [ -n "$uri" ] && break
    done
  fi
  [ -n "$uri" ] || return 1
  printf '%s\n' "${uri%/}"
}

# Serialise fixture builders (several test binaries may start them at once).
# Re-entrant: a child of the lock holder sees UPKEEP_FIXTURES_LOCKED.
fixtures_lock() {
  if [ "${UPKEEP_FIXTURES_LOCKED:-}" = "$UPKEEP_FIXTURES" ]; then return 0; fi
  mkdir -p "$UPKEEP_FIXTURES"
  exec 9>>"$UPKEEP_FIXTURES/.lock"
  if ! flock -n 9; then
    log "another fixture build holds $UPKEEP_FIXTURES/.lock; waiting"
    flock -w "${UPKEEP_FIXTURES_LOCK_TIMEOUT:-3600}" 9 ||
      die "timed out waiting for $UPKEEP_FIXTURES/.lock"
  fi
  export UPKEEP_FIXTURES_LOCKED=$UPKEEP_FIXTURES
}

# machine_lock: also serialise against fixture builders of other work trees
# that share this Docker daemon (the upkeep-test/* tags are global).
machine_lock() {
  if [ -n "${UPKEEP_MACHINE_LOCKED:-}" ]; then return 0; fi
  local f=${UPKEEP_MACHINE_LOCK:-/run/lock/upkeep-test-images.lock}
  [ -d "$(dirname "$f")" ] || f=/tmp/upkeep-test-images.lock
  exec 8>>"$f"
  if ! flock -n 8; then
    log "another work tree is building the test images ($f); waiting"
    flock -w "${UPKEEP_FIXTURES_LOCK_TIMEOUT:-3600}" 8 || die "timed out waiting for $f"
  fi
  export UPKEEP_MACHINE_LOCKED=1
}

require_docker() {
  command -v docker >/dev/null || die "docker CLI not found"
  docker info >/dev/null 2>&1 || die "cannot talk to the Docker daemon (is it running? are you root?)"
}

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

# compose_cmd: prints the compose command available here ("docker-compose"
# for v1, "docker compose" for v2), or fails.
compose_cmd() {
  if command -v docker-compose >/dev/null 2>&1; then
    echo docker-compose
  elif docker compose version >/dev/null 2>&1; then
    echo "docker compose"
  else
    return 1
  fi
}

# The comment block at the top of the running script, as its usage text.
usage_header() { awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "$0"; }

# Human-readable size of a file or folder.
hsize() { du -sh "$1" 2>/dev/null | cut -f1; }
