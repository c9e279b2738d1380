#!/usr/bin/env bash
# Build the local Docker images the tests use, without any registry:
#
#   upkeep-test/postgres:15   Debian bookworm (debootstrap minbase) + postgresql-15
#   upkeep-test/postgres:17   Debian trixie   (debootstrap minbase) + postgresql-17
#   upkeep-test/app:1         upkeep-test/postgres:15 + busybox-static + app.sh
#
# Usage: scripts/test-images.sh [--force] [postgres:15|postgres:17|app:1 ...]
#
# An image is skipped when its tag exists with this script's fixture revision
# (and, for the app, on top of the current postgres:15); --force rebuilds.
# Needs root and a Docker daemon; installs debootstrap and busybox-static when
# missing. Caches: $UPKEEP_FIXTURES/work/cache (default <repo>/target/fixtures).
SCRIPT_NAME=test-images.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

HERE=$REPO/scripts/fixtures
PG_IMAGES=("15 bookworm" "17 trixie") # major suite
APP_TAG=upkeep-test/app:1
APP_BASE=upkeep-test/postgres:15

usage() { usage_header; }

FORCE=0
WANT=()
while [ $# -gt 0 ]; do
  case "$1" in
    --force) FORCE=1 ;;
    -h | --help) usage; exit 0 ;;
    postgres:15 | postgres:17 | app:1) WANT+=("$1") ;;
    upkeep-test/*) WANT+=("${1#upkeep-test/}") ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
  shift
done
[ ${#WANT[@]} -gt 0 ] || WANT=(postgres:15 postgres:17 app:1)
wanted() { local w; for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }

fixtures_lock
machine_lock
require_docker
# The Docker CLI here has no buildx plugin: use the classic builder, which
# handles FROM scratch and local bases without a registry.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0

mkdir -p "$FIXTURE_WORK/cache"
SUMMARY=()

# current TAG [BASE_ID]: the image exists with our revision (and base)
current() {
  local rev base
  rev=$(docker image inspect -f '{{index .Config.Labels "org.upkeep.fixture.rev"}}' "$1" 2>/dev/null) || return 1
  [ "$rev" = "$FIXTURE_REV" ] || return 1
  if [ -n "${2:-}" ]; then
    base=$(docker image inspect -f '{{index .Config.Labels "org.upkeep.fixture.base-id"}}' "$1")
    [ "$base" = "$2" ] || return 1
  fi
}

# drop_old OLD_ID TAG: remove the image TAG pointed to before a rebuild if it
# is now untagged and unused. Never by ID while it has tags: `docker rmi ID`
# would take someone else's tag (say a loaded upkeep-sample/*) with it.
drop_old() {
  [ -n "$1" ] || return 0
  [ "$1" != "$(docker image inspect -f '{{.Id}}' "$2")" ] || return 0
  local tags
  tags=$(docker image inspect -f '{{len .RepoTags}}' "$1" 2>/dev/null) || return 0
  if [ "$tags" != 0 ]; then
    log "$2: previous image ${1:7:12} still has other tags; kept"
  elif ! docker rmi "$1" >/dev/null 2>&1; then
    log "$2: previous image ${1:7:12} still in use; kept"
  fi
}

image_size() { docker image inspect -f '{{.Size}}' "$1" | awk '{ printf "%.0f MB", $1 / 1e6 }'; }

# run_logged LOGFILE CMD...: run quietly; on failure show the log's tail
run_logged() {
  local logf=$1
  shift
  if ! "$@" >"$logf" 2>&1; then
    tail -n 40 "$logf" >&2
    die "failed: $* (full log: $logf)"
  fi
}

# The part that runs inside the rootfs (chroot): users, packages, slimming.
# $1 = postgres major.
# shellcheck disable=SC2016 # expanded inside the chroot
CHROOT_SETUP='
set -eu
major=$1
apt="apt-get -q -y -o Acquire::Check-Valid-Until=false -o APT::Sandbox::User=root -o Dpkg::Use-Pty=0"
$apt update
# uid/gid 999 like the official image, so data volumes move between images
getent group postgres >/dev/null || groupadd -r -g 999 postgres
getent passwd postgres >/dev/null || useradd -r -g postgres -u 999 -d /var/lib/postgresql -s /bin/bash postgres
[ "$(id -u postgres):$(id -g postgres)" = 999:999 ] || { echo "postgres is not 999:999" >&2; exit 1; }
mkdir -p /var/lib/postgresql && chown postgres:postgres /var/lib/postgresql
$apt install --no-install-recommends postgresql-common tzdata
# no cluster at package install: the entrypoint runs initdb on first start
sed -ri "s/^[#[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/" \
  /etc/postgresql-common/createcluster.conf
$apt install --no-install-recommends "postgresql-$major"
# LLVM JIT is optional: without llvmjit.so the server runs with JIT
# unavailable. Dropping it and libLLVM/libz3 saves ~130 MB.
rm -rf /usr/lib/postgresql/$major/lib/llvmjit* /usr/lib/postgresql/$major/lib/bitcode
jit=$(dpkg-query -W -f "\${db:Status-Status} \${Package}\n" "libllvm*" "libz3-*" 2>/dev/null | awk "\$1 == \"installed\" { print \$2 }")
[ -z "$jit" ] || dpkg --purge --force-depends $jit
for b in /usr/lib/postgresql/$major/bin/*; do ln -sf "$b" /usr/local/bin/; done
'

build_pg() {
  local major=$1 suite=$2 tag=upkeep-test/postgres:$1
  [ "$(id -u)" = 0 ] || die "building $tag needs root (debootstrap, chroot)"
  local t0 t1 mirror script root ctx logd
  t0=$(now)
  root=$FIXTURE_WORK/rootfs-pg$major-$suite
  ctx=$FIXTURE_WORK/ctx-pg$major
  logd=$FIXTURE_WORK/logs
  local debcache=$FIXTURE_WORK/cache/debootstrap-$suite aptcache=$FIXTURE_WORK/cache/apt-$suite
  mkdir -p "$debcache" "$aptcache/partial" "$logd"
  rm -rf "$root" "$ctx"
  local old
  old=$(docker image inspect -f '{{.Id}}' "$tag" 2>/dev/null || true)

  # newer suites share the archive of the machine's own release
  mirror=$(debian_mirror "$suite" || debian_mirror bookworm) ||
    die "no Debian archive found in /etc/apt/sources.list*"
  script=/usr/share/debootstrap/scripts/$suite
  [ -e "$script" ] || script=/usr/share/debootstrap/scripts/sid

  log "$tag: debootstrap --variant=minbase $suite (log: $logd/debootstrap-$suite.log)"
  run_logged "$logd/debootstrap-$suite.log" nice -n 10 \
    debootstrap --variant=minbase --cache-dir="$debcache" "$suite" "$root" "$mirror" "$script"
  t1=$(now)
  log "$tag: debootstrap done in $(elapsed "$t0"), rootfs $(hsize "$root")"

  # no service starts from maintainer scripts
  printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
  chmod 755 "$root/usr/sbin/policy-rc.d"
  cp -L /etc/resolv.conf "$root/etc/resolv.conf"
  log "$tag: installing postgresql-$major in the rootfs (log: $logd/apt-pg$major.log)"
  # a private mount namespace: /proc and the apt cache bind mount vanish on exit
  # shellcheck disable=SC2016 # expanded by the inner bash
  run_logged "$logd/apt-pg$major.log" nice -n 10 unshare --mount --fork bash -euc '
    root=$1 cache=$2 major=$3 setup=$4
    mount --make-rprivate /
    mount -t proc proc "$root/proc"
    mount --bind "$cache" "$root/var/cache/apt/archives"
    chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
      LC_ALL=C DEBIAN_FRONTEND=noninteractive sh -c "$setup" sh "$major"
  ' sh "$root" "$aptcache" "$major" "$CHROOT_SETUP"
  log "$tag: packages installed in $(elapsed "$t1"), rootfs $(hsize "$root")"

  # scrub what names this machine or its mirror, and what the image never needs
  rm -f "$root/usr/sbin/policy-rc.d"
  : >"$root/etc/resolv.conf"
  echo localhost >"$root/etc/hostname"
  : >"$root/etc/apt/sources.list"
  rm -rf "$root"/etc/apt/sources.list.d/* "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/usr/share/info/* "$root"/usr/share/i18n "$root"/var/log/apt/* \
    "$root"/var/cache/debconf/*-old "$root"/var/lib/dpkg/*-old
  find "$root/var/log" -type f -name '*.log' -delete
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  local host=${mirror#*://}
  host=${host%%/*}
  # (package-shipped files under /usr may name Debian's default mirror; the
  # machine-specific state lives in /etc and /var)
  if grep -rIlqs -F "$host" "$root/etc" "$root/var"; then
    log "$tag: warning: the rootfs still mentions the mirror host in:"
    grep -rIls -F "$host" "$root/etc" "$root/var" | head -5 >&2
  fi

  install -m 0755 "$HERE/postgres-entrypoint.sh" "$root/usr/local/bin/docker-entrypoint.sh"
  mkdir -p "$root/docker-entrypoint-initdb.d" "$root/var/lib/postgresql/data" \
    "$root/run/postgresql" "$root/backups"
  chroot "$root" chown postgres:postgres /var/lib/postgresql /var/lib/postgresql/data \
    /run/postgresql /backups
  chmod 700 "$root/var/lib/postgresql/data"
  chmod 2775 "$root/run/postgresql"
  chmod 775 "$root/backups"

  local t2
  t2=$(now)
  mkdir -p "$ctx"
  tar -C "$root" --numeric-owner --xattrs --exclude='./dev/*' --exclude='./proc/*' \
    --exclude='./sys/*' -cf "$ctx/rootfs.tar" .
  local rootsize
  rootsize=$(hsize "$root")
  rm -rf "$root"
  cp "$HERE/Dockerfile.postgres" "$ctx/Dockerfile"
  log "$tag: rootfs $rootsize packed in $(elapsed "$t2"); docker build"
  run_logged "$logd/build-pg$major.log" docker build --no-cache -t "$tag" \
    --build-arg PG_MAJOR="$major" --build-arg SUITE="$suite" \
    --build-arg FIXTURE_REV="$FIXTURE_REV" "$ctx"
  rm -rf "$ctx"
  drop_old "$old" "$tag"

  # the tools tests rely on must be there
  docker run --rm --entrypoint sh "$tag" -c '
    for b in postgres initdb pg_ctl pg_dump pg_dumpall pg_restore psql pg_isready tar sh gzip setpriv; do
      command -v "$b" >/dev/null || { echo "missing: $b" >&2; exit 1; }
    done
    [ "$(id -u postgres):$(id -g postgres)" = 999:999 ] || { echo "postgres is not 999:999" >&2; exit 1; }
    [ ! -e /usr/lib/postgresql/'"$major"'/lib/llvmjit.so ] || { echo "llvmjit still present" >&2; exit 1; }
  ' || die "$tag: image check failed"
  local dt
  dt=$(elapsed "$t0")
  log "$tag: built in $dt ($(image_size "$tag"))"
  SUMMARY+=("$tag  built in $dt  $(image_size "$tag")")
}

build_app() {
  local t0 ctx base_id
  t0=$(now)
  ensure_debs busybox-static
  local bb=/bin/busybox
  [ -x "$bb" ] || die "$bb missing after installing busybox-static"
  if ldd "$bb" >/dev/null 2>&1; then die "$bb is dynamically linked (is busybox, not busybox-static, installed?)"; fi
  local applets
  applets=$("$bb" --list)
  for a in httpd wget; do
    grep -qx "$a" <<<"$applets" || die "$bb has no $a applet"
  done
  base_id=$(docker image inspect -f '{{.Id}}' "$APP_BASE")
  local old
  old=$(docker image inspect -f '{{.Id}}' "$APP_TAG" 2>/dev/null || true)
  ctx=$FIXTURE_WORK/ctx-app
  rm -rf "$ctx"
  mkdir -p "$ctx/overlay/usr/bin" "$ctx/overlay/usr/local/bin" "$ctx/overlay/srv/www" \
    "$ctx/overlay/srv/pivot-db" "$ctx/overlay/etc/app"
  # /bin is a symlink to usr/bin in the image: copy into usr/bin
  install -m 0755 "$bb" "$ctx/overlay/usr/bin/busybox"
  install -m 0755 "$HERE/app.sh" "$ctx/overlay/usr/local/bin/app.sh"
  cp "$HERE/Dockerfile.app" "$ctx/Dockerfile"
  log "$APP_TAG: docker build on $APP_BASE"
  run_logged "$FIXTURE_WORK/logs/build-app.log" docker build --no-cache -t "$APP_TAG" \
    --build-arg BASE="$APP_BASE" --build-arg BASE_ID="$base_id" \
    --build-arg FIXTURE_REV="$FIXTURE_REV" "$ctx"
  rm -rf "$ctx"
  drop_old "$old" "$APP_TAG"
  docker run --rm --entrypoint sh "$APP_TAG" -c \
    'command -v pg_isready >/dev/null && [ -x /usr/local/bin/app.sh ] && [ -L /bin ] && [ -x /bin/sh ]' ||
    die "$APP_TAG: image check failed"
  local dt
  dt=$(elapsed "$t0")
  log "$APP_TAG: built in $dt ($(image_size "$APP_TAG"))"
  SUMMARY+=("$APP_TAG  built in $dt  $(image_size "$APP_TAG")")
}

T0=$(now)
mkdir -p "$FIXTURE_WORK/logs"
for spec in "${PG_IMAGES[@]}"; do
  read -r major suite <<<"$spec"
  tag=upkeep-test/postgres:$major
  wanted "postgres:$major" || continue
  if [ "$FORCE" = 0 ] && current "$tag"; then
    log "$tag: present ($(image_size "$tag")), skipped"
    SUMMARY+=("$tag  cached  $(image_size "$tag")")
    continue
  fi
  ensure_debs debootstrap
  build_pg "$major" "$suite"
done

# the app sits on postgres:15; it is rebuilt when that changed
if wanted app:1 || { [ "$FORCE" = 1 ] && wanted postgres:15; }; then
  image_exists "$APP_BASE" || die "$APP_BASE is missing: build it first (scripts/test-images.sh postgres:15)"
  base_id=$(docker image inspect -f '{{.Id}}' "$APP_BASE")
  if [ "$FORCE" = 0 ] && current "$APP_TAG" "$base_id"; then
    log "$APP_TAG: present ($(image_size "$APP_TAG")), skipped"
    SUMMARY+=("$APP_TAG  cached  $(image_size "$APP_TAG")")
  else
    build_app
  fi
fi

log "done in $(elapsed "$T0"):"
for s in "${SUMMARY[@]}"; do log "  $s"; done
