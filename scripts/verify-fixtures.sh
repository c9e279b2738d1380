#!/usr/bin/env bash
# Check the fixtures for real (about a minute or two), then remove every
# container, volume, network and upkeep-sample/* tag it created.
#
#   1. upkeep-test/postgres:15 and :17: start with POSTGRES_*; from another
#      container on a user network: scram password login over TCP,
#      pg_dump -Fc / pg_dumpall / pg_restore, a wrong password is rejected;
#      a 17 client copies a database from the 15 server into the 17 server;
#      a restart keeps the data and does not re-run initdb.
#   2. Every bundle: SHA256SUMS, tarball layout (one top folder), docker load;
#      v1.0.0, v1.1.0, v2.0.0 come up with compose (project "fixturecheck",
#      from a copy of the bundle folder) and the app answers on
#      127.0.0.1:18080 with the .env greeting (another free port if 18080 is
#      taken by someone else's instance); v2.0.1-broken's app never gets
#      healthy.
#
# Usage: scripts/verify-fixtures.sh [BUNDLES_DIR]   (run scripts/fixtures.sh first)
SCRIPT_NAME=verify-fixtures.sh
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

BUNDLES=${1:-$UPKEEP_FIXTURES/bundles}
[ -d "$BUNDLES" ] || die "no bundles in $BUNDLES: run scripts/fixtures.sh first"
require_docker
COMPOSE=$(compose_cmd) || die "no compose"
PROJECT=fixturecheck
PW='Verify-pw_9e1.x'
ID=uv$$
NET=upkeep-verify-$ID
WORK=$(mktemp -d /tmp/upkeep-verify.XXXXXX)
CONTAINERS=()
LOADED_TAGS=()
COMPOSE_DIR=""

cleanup() {
  local rc=$?
  set +e
  if [ -n "$COMPOSE_DIR" ]; then
    (cd "$COMPOSE_DIR" && $COMPOSE -p "$PROJECT" --project-directory . down -v --remove-orphans) >/dev/null 2>&1
  fi
  [ ${#CONTAINERS[@]} -eq 0 ] || docker rm -f -v "${CONTAINERS[@]}" >/dev/null 2>&1
  docker network rm "$NET" >/dev/null 2>&1
  [ ${#LOADED_TAGS[@]} -eq 0 ] || docker rmi "${LOADED_TAGS[@]}" >/dev/null 2>&1
  rm -rf "$WORK"
  if [ "$rc" = 0 ]; then log "ALL CHECKS PASSED"; else log "FAILED (exit $rc)"; fi
}
trap cleanup EXIT

ok() { log "ok: $*"; }

http_get() {
  if command -v curl >/dev/null; then curl -fsS --max-time 3 "$1"; else busybox wget -q -T 3 -O- "$1"; fi
}

# wait_for SECONDS CMD...: retry CMD every 0.5s
wait_for() {
  local limit=$1 t0
  shift
  t0=$(now)
  until "$@" >/dev/null 2>&1; do
    if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN { exit !(b - a > l) }'; then return 1; fi
    sleep 0.5
  done
}

# ---------------------------------------------------------------- 1. images
T_ALL=$(now)
docker network create "$NET" >/dev/null
# run in a client container on the same user network, against the server
cat >"$WORK/client.sh" <<'EOF'
q() { psql -X -v ON_ERROR_STOP=1 -tA "$@"; }
echo "  client: $(q -d appdb -c 'SELECT version()' | cut -d' ' -f1-2) server"
[ "$(q -d appdb -c "SELECT current_user || '@' || current_database()")" = app@appdb ]
[ "$(q -d appdb -c "SELECT string_agg(DISTINCT auth_method, ',') FROM pg_hba_file_rules WHERE type = 'host'")" = scram-sha-256 ]
[ "$(q -d appdb -c "SELECT left(rolpassword, 14) FROM pg_authid WHERE rolname = current_user")" = 'SCRAM-SHA-256$' ]
q -d appdb -qc "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 50000) g"
pg_dump -Fc -d appdb -f /tmp/appdb.dump
pg_dumpall -g >/tmp/globals.sql
grep -q 'CREATE ROLE app' /tmp/globals.sql
q -d postgres -qc 'CREATE DATABASE restored'
pg_restore -d restored /tmp/appdb.dump
[ "$(q -d restored -c "SELECT count(*) || '/' || sum(id) FROM t")" = 50000/1250025000 ]
tar -czf /tmp/x.tgz -C /tmp appdb.dump && gzip -t /tmp/x.tgz
if PGPASSWORD=wrong psql -X -d appdb -c 'SELECT 1' >/tmp/out 2>&1; then
  echo 'wrong password accepted' >&2
  exit 1
fi
grep -q 'password authentication failed' /tmp/out
EOF
for major in 15 17; do
  img=upkeep-test/postgres:$major
  name=upkeep-verify-pg$major-$ID
  t0=$(now)
  CONTAINERS+=("$name")
  docker run -d --name "$name" --network "$NET" --network-alias "pg$major" \
    -e POSTGRES_USER=app -e POSTGRES_PASSWORD="$PW" -e POSTGRES_DB=appdb "$img" >/dev/null
  wait_for 60 docker exec "$name" pg_isready -q -h 127.0.0.1 ||
    { docker logs "$name" | tail -20 >&2; die "$img: server not ready after 60s"; }
  ok "$img: initdb + start, accepting TCP in $(elapsed "$t0")"

  t0=$(now)
  docker run --rm --network "$NET" -e PGHOST="pg$major" -e PGUSER=app -e PGPASSWORD="$PW" \
    -v "$WORK/client.sh:/client.sh:ro" "$img" sh -eu /client.sh || die "$img: client checks failed"
  ok "$img: scram login over TCP from another container, pg_dump -Fc/pg_dumpall/pg_restore, wrong password rejected ($(elapsed "$t0"))"
done

t0=$(now)
docker run --rm --network "$NET" -e PGUSER=app -e PGPASSWORD="$PW" upkeep-test/postgres:17 sh -euc '
  psql -X -q -v ON_ERROR_STOP=1 -h pg17 -d postgres -c "CREATE DATABASE from15"
  pg_dump -h pg15 -Fc appdb | pg_restore -h pg17 -d from15
  [ "$(psql -X -tA -h pg17 -d from15 -c "SELECT count(*) FROM t")" = 50000 ]
' || die "cross-major dump 15 -> 17 failed"
ok "pg_dump (17) of the 15 server restored into the 17 server ($(elapsed "$t0"))"

name=upkeep-verify-pg15-$ID
t0=$(now)
docker stop "$name" >/dev/null
stop_s=$(elapsed "$t0")
docker start "$name" >/dev/null
wait_for 60 docker exec "$name" pg_isready -q -h 127.0.0.1 || die "restart: not ready"
n=$(docker exec -e PGPASSWORD="$PW" "$name" psql -X -tA -h 127.0.0.1 -U app -d appdb -c "SELECT count(*) FROM t")
[ "$n" = 50000 ] || die "restart: data lost ($n rows)"
inits=$(docker logs "$name" 2>&1 | grep -c "init process complete" || true)
[ "$inits" = 1 ] || die "restart: initdb ran $inits times"
ok "upkeep-test/postgres:15: docker stop (SIGINT) took $stop_s; restart kept the data, no re-init"
docker rm -f -v "${CONTAINERS[@]}" >/dev/null
CONTAINERS=()
docker network rm "$NET" >/dev/null

# --------------------------------------------------------------- 2. bundles
port_busy() { ss -Hltn "sport = :$1" | grep -q .; }

app_cid() { docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=app"; }
app_healthy() { [ "$(docker inspect -f '{{.State.Health.Status}}' "$(app_cid)")" = healthy ]; }

for dir in "$BUNDLES"/upkeep-sample-*/; do
  dir=${dir%/}
  name=$(basename "$dir")
  v=${name#upkeep-sample-}
  t_b=$(now)
  [ "$(cat "$dir/VERSION")" = "$v" ] || die "$name: VERSION is not $v"
  (cd "$dir" && sha256sum --quiet --strict -c SHA256SUMS) || die "$name: SHA256SUMS mismatch"
  for tb in "$dir.tar.gz" "$dir.tar.zst"; do
    case "$tb" in *.gz) dec=(gzip -dc) ;; *) dec=(zstd -dcq) ;; esac
    tops=$("${dec[@]}" "$tb" | tar -t | cut -d/ -f1 | sort -u)
    [ "$tops" = "$name" ] || die "$(basename "$tb"): top level is '$tops', not $name"
  done
  [ "$(stat -c %a "$dir/.env")" = 600 ] || die "$name/.env is not 0600"
  [ "$(stat -c %a "$dir/etc/ssl/server.key")" = 600 ] || die "$name/etc/ssl/server.key is not 0600"
  openssl x509 -in "$dir/etc/ssl/server.crt" -noout -checkend 0 >/dev/null || die "$name: bad certificate"
  [ "$(openssl x509 -in "$dir/etc/ssl/server.crt" -noout -pubkey | sha256sum)" = \
    "$(openssl pkey -in "$dir/etc/ssl/server.key" -pubout | sha256sum)" ] || die "$name: key and certificate don't match"
  ! grep -q '^version:' "$dir/docker-compose.yml" || die "$name: compose file has a version: key"

  for t in "upkeep-sample/postgres:$v" "upkeep-sample/app:$v"; do
    if image_exists "$t"; then
      log "note: $t already exists (loaded by someone else?); it will be kept"
    else
      LOADED_TAGS+=("$t")
    fi
  done
  cp -a "$dir" "$WORK/"
  COMPOSE_DIR=$WORK/$name
  imgs=$(ls "$COMPOSE_DIR"/containers.tar*)
  t0=$(now)
  loaded=$(docker load -i "$imgs") || die "$name: docker load failed"
  for t in "upkeep-sample/postgres:$v" "upkeep-sample/app:$v"; do
    grep -qxF "Loaded image: $t" <<<"$loaded" || die "$name: $(basename "$imgs") did not provide $t: $loaded"
  done
  ! grep -q upkeep-test <<<"$loaded" || die "$name: $(basename "$imgs") also names upkeep-test images"
  ok "$name: checksums, tarballs, modes, cert; docker load $(basename "$imgs") ($(hsize "$imgs")) in $(elapsed "$t0")"

  greeting=$(sed -n 's/^APP_GREETING=//p' "$COMPOSE_DIR/.env")
  # The Docker daemon may be shared (other work trees' tests running bundle
  # instances): when the bundle's port is taken, remap it in our copy, as the
  # tool does for side-by-side instances.
  PORT=18080
  grep -qF "\"127.0.0.1:$PORT:8080\"" "$COMPOSE_DIR/docker-compose.yml" || die "$name: app is not published on 127.0.0.1:$PORT"
  if port_busy "$PORT"; then
    p=18100
    while port_busy "$p"; do p=$((p + 1)); [ "$p" -lt 18200 ] || die "no free port in 18100-18199"; done
    log "note: 127.0.0.1:$PORT is in use by someone else; this check publishes the app on $p instead"
    sed -i "s/\"127.0.0.1:$PORT:8080\"/\"127.0.0.1:$p:8080\"/" "$COMPOSE_DIR/docker-compose.yml"
    PORT=$p
  fi
  t0=$(now)
  (cd "$COMPOSE_DIR" && $COMPOSE -p "$PROJECT" --project-directory . -f docker-compose.yml up -d) \
    >"$WORK/up.log" 2>&1 || { cat "$WORK/up.log" >&2; die "$name: compose up failed"; }
  up_s=$(elapsed "$t0")
  case "$v" in
    *broken*)
      # postgres becomes healthy, the app exits at once and never gets healthy
      pg=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=postgres")
      [ "$(docker inspect -f '{{.State.Health.Status}}' "$pg")" = healthy ] || die "$name: postgres not healthy"
      if wait_for 15 app_healthy; then die "$name: the broken app became healthy"; fi
      st=$(docker inspect -f '{{.State.Status}} exit={{.State.ExitCode}} health={{.State.Health.Status}}' "$(app_cid)")
      case "$st" in "exited exit=1 "*) ;; *) die "$name: app state is '$st', expected exited exit=1" ;; esac
      if http_get "http://127.0.0.1:$PORT/" >/dev/null 2>&1; then die "$name: something answers on $PORT"; fi
      ok "$name: compose up -d returned in $up_s; postgres healthy, app never healthy ($st)"
      ;;
    *)
      wait_for 60 app_healthy || { docker logs "$(app_cid)" 2>&1 | tail >&2; die "$name: app not healthy after 60s"; }
      healthy_s=$(elapsed "$t0")
      page=$(http_get "http://127.0.0.1:$PORT/") || die "$name: nothing on 127.0.0.1:$PORT"
      grep -qF "greeting: $greeting" <<<"$page" || die "$name: page lacks the greeting: $page"
      grep -qF "version: $v" <<<"$page" || die "$name: page lacks the version"
      grep -qF "caddyfile: $(head -n 1 "$COMPOSE_DIR/Caddyfile")" <<<"$page" || die "$name: page lacks the Caddyfile line"
      pg=$(docker ps -q --filter "label=com.docker.compose.project=$PROJECT" --filter "label=com.docker.compose.service=postgres")
      docker exec "$pg" sh -c 'PGPASSWORD=$POSTGRES_PASSWORD psql -X -tA -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB" -c "SHOW server_version"' \
        >"$WORK/ver" || die "$name: psql with the .env credentials failed"
      ok "$name: up -d in $up_s, app healthy after $healthy_s; page: $(grep -F greeting: <<<"$page"); postgres $(cat "$WORK/ver")"
      ;;
  esac
  t0=$(now)
  (cd "$COMPOSE_DIR" && $COMPOSE -p "$PROJECT" --project-directory . down -v) >/dev/null 2>&1 ||
    die "$name: compose down failed"
  COMPOSE_DIR=""
  [ ${#LOADED_TAGS[@]} -eq 0 ] || docker rmi "${LOADED_TAGS[@]}" >/dev/null
  LOADED_TAGS=()
  rm -rf "${WORK:?}/$name"
  ok "$name: down -v in $(elapsed "$t0"); bundle checked in $(elapsed "$t_b")"
done
left=$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT"; docker volume ls -q --filter "label=com.docker.compose.project=$PROJECT")
[ -z "$left" ] || die "leftovers of project $PROJECT: $left"
log "verification took $(elapsed "$T_ALL")"
