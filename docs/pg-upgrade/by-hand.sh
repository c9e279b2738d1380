#!/usr/bin/env bash
# docs/pg-upgrade/by-hand.sh — the pg_upgrade strategy of issue 13 item 1,
# done by hand with docker commands on the test fixtures, as the proof the
# implementation follows (docs/pg-upgrade/DESIGN.md). Not a test, not run by CI.
#
#   docs/pg-upgrade/by-hand.sh [ROWS]
#
# 1. A Postgres 15 cluster (upkeep-test/postgres:15, bookworm) with a second
#    database, a large object, a role with a password and an index on an ICU
#    collation; stopped.
# 2. The old installation (bindir, libdir, sharedir) and its shared-library
#    closure without glibc, out of a created-never-started container of the
#    old image, into a scratch volume, with a wrapper per old executable that
#    sets LD_LIBRARY_PATH for that exec alone; proven by `postgres -V`,
#    `pg_ctl --version`, `pg_controldata --version` in the new image.
# 3. The cluster copied into a staging folder ON THE NEW VOLUME, a new cluster
#    initdb'd beside it, `pg_upgrade --check`, `pg_upgrade --link`, the new
#    cluster renamed into place, the staging copy removed, pg_hba.conf /
#    pg_ident.conf and the entrypoint's settings carried.
# 4. Postgres 17 (upkeep-test/postgres:17, trixie) started on it: rows, the
#    large object, the role's login, the collation version mismatch, REINDEX.
# The old volume is mounted read-only throughout; its listing is compared.
set -euo pipefail
ROWS=${1:-200000}
P=pgupbyhand$$
OLD_IMAGE=upkeep-test/postgres:15 NEW_IMAGE=upkeep-test/postgres:17
WORK=$(mktemp -d)
cleanup() {
  docker rm -f "${P}15" "${P}17" >/dev/null 2>&1 || true
  docker volume rm -f "${P}data15" "${P}data17" "${P}old" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT
now() { date +%s.%N; }
say() { printf '[by-hand %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
psql15() { docker exec -u postgres "${P}15" psql -U graphistry -d graphistry -XAtq "$@"; }
psql17() { docker exec -u postgres "${P}17" psql -U graphistry -d graphistry -XAtq "$@"; }
wait_ready() {
  for _ in $(seq 60); do
    docker exec -u postgres "$1" psql -U graphistry -d graphistry -XAtc 'select 1' >/dev/null 2>&1 && return 0
    sleep 1
  done
  echo "$1 did not become ready" >&2; return 1
}
listing() {
  docker run --rm --entrypoint sh -v "$1:/v:ro" "$OLD_IMAGE" -c \
    'cd /v && find . -printf "%p %y %U:%G %m %T@ %s\n" | sort && find . -type f -exec md5sum {} + | sort'
}

say "1. Postgres 15 cluster with $ROWS rows"
# read by the server user (uid 999) inside the container; the folder is private (mktemp -d)
printf 'secret\n' >"$WORK/pw"; chmod 644 "$WORK/pw"
docker run -d --name "${P}15" -e POSTGRES_PASSWORD_FILE=/run/pw -v "$WORK/pw:/run/pw:ro" \
  -e POSTGRES_USER=graphistry -v "${P}data15:/var/lib/postgresql/data" "$OLD_IMAGE" >/dev/null
wait_ready "${P}15"
psql15 -c "CREATE DATABASE analytics" \
  -c "CREATE ROLE reader LOGIN PASSWORD 'readerpw'" \
  -c "CREATE TABLE items(id int primary key, name text); INSERT INTO items SELECT g, 'item '||g FROM generate_series(1,$ROWS) g" \
  -c "CREATE COLLATION de_icu (provider = icu, locale = 'de'); CREATE TABLE names(n text COLLATE de_icu); CREATE INDEX names_n ON names(n); INSERT INTO names VALUES ('b'), ('ä'), ('a')"
LO=$(psql15 -c "SELECT lo_from_bytea(0, 'lowrite')")
docker exec -u postgres "${P}15" psql -U graphistry -d analytics -Xq -c "CREATE TABLE events AS SELECT g AS id FROM generate_series(1, 5000) g"
docker stop "${P}15" >/dev/null
before=$(listing "${P}data15")

say "2. old installation and its library closure, out of a never-started container"
t0=$(now)
# shellcheck disable=SC2016 # expanded in the old image
docker run --rm --entrypoint sh "$OLD_IMAGE" -c '
  for f in /usr/lib/postgresql/15/bin/* /usr/lib/postgresql/15/lib/*.so; do ldd "$f" 2>/dev/null; done |
  awk '"'"'$2 == "=>" && $3 ~ /^\// { print $1, $3 }'"'"' | sort -u | while read -r n p; do
    case "$n" in libc.so*|libm.so*|libpthread*|libdl.so*|librt.so*|libresolv*|ld-linux*|libutil*) continue ;; esac
    echo "$n $(readlink -f "$p")"
  done' >"$WORK/closure"
stage=$WORK/stage; mkdir -p "$stage/real/usr/lib/postgresql" "$stage/real/usr/share/postgresql" "$stage/libs" "$stage/bin"
cid=$(docker create "$OLD_IMAGE" true)
docker cp "$cid:/usr/lib/postgresql/15" "$stage/real/usr/lib/postgresql/"
docker cp "$cid:/usr/share/postgresql/15" "$stage/real/usr/share/postgresql/"
while read -r n p; do docker cp -L "$cid:$p" "$stage/libs/$n"; done <"$WORK/closure"
docker rm "$cid" >/dev/null
for f in "$stage"/real/usr/lib/postgresql/15/bin/*; do
  b=$(basename "$f")
  printf '#!/bin/sh\nLD_LIBRARY_PATH=/upkeep-old/libs exec /upkeep-old/real/usr/lib/postgresql/15/bin/%s "$@"\n' "$b" >"$stage/bin/$b"
  chmod 755 "$stage/bin/$b"
done
tar -C "$stage" -cf - . | docker run --rm -i --entrypoint sh -v "${P}old:/upkeep-old" "$NEW_IMAGE" -c 'tar -C /upkeep-old -xf -'
t1=$(now)
say "   $(wc -l <"$WORK/closure") libraries, $(du -sh "$stage" | cut -f1) in $(echo "$t1 - $t0" | bc) s"
docker run --rm --entrypoint sh -v "${P}old:/upkeep-old:ro" "$NEW_IMAGE" -c \
  '/upkeep-old/bin/postgres -V && /upkeep-old/bin/pg_ctl --version && /upkeep-old/bin/pg_controldata --version'
say "   without the wrappers' library folder, in the new image:"
docker run --rm --entrypoint sh -v "${P}old:/upkeep-old:ro" "$NEW_IMAGE" -c \
  'ldd /upkeep-old/real/usr/lib/postgresql/15/bin/postgres | grep "not found"' || true

say "3. staging copy on the new volume, initdb, pg_upgrade --check, pg_upgrade --link, rename into place"
cat >"$WORK/upgrade.sh" <<'SCRIPT'
set -eu
W=/v/.upkeep-pg_upgrade N=/usr/lib/postgresql/17/bin
cd /tmp
printf 'local all all trust\n' >"$W/old/pg_hba.conf"   # the staging copy is ours
"$N/initdb" -D "$W/new" -U graphistry --encoding=UTF8 --locale=C.UTF-8 --auth=trust >/dev/null
t0=$(date +%s.%N)
"$N/pg_upgrade" -b /upkeep-old/bin -B "$N" -d "$W/old" -D "$W/new" -U graphistry --socketdir=/tmp -p 50432 -P 50433 --check >/dev/null
t1=$(date +%s.%N)
"$N/pg_upgrade" -b /upkeep-old/bin -B "$N" -d "$W/old" -D "$W/new" -U graphistry --socketdir=/tmp -p 50432 -P 50433 --link >/dev/null
t2=$(date +%s.%N)
cd "$W/new"
for e in * .[!.]*; do [ -e "$e" ] || continue; mv "$e" /v/; done
cd /tmp && rm -rf "$W"
cp /from/pg_hba.conf /from/pg_ident.conf /v/
grep -E "^(listen_addresses|port|unix_socket_directories|password_encryption|jit) " /from/postgresql.conf >>/v/postgresql.conf
sync
t3=$(date +%s.%N)
echo "check $t0 $t1 link $t1 $t2 move $t2 $t3"
SCRIPT
t2=$(now)
docker run --rm --entrypoint sh -v "${P}data15:/from:ro" -v "${P}data17:/v" "$NEW_IMAGE" -c \
  'mkdir -p /v/.upkeep-pg_upgrade/old && cp -a /from/. /v/.upkeep-pg_upgrade/old/ && chown postgres:postgres /v /v/.upkeep-pg_upgrade && chmod 700 /v /v/.upkeep-pg_upgrade/old'
t3=$(now)
times=$(docker run --rm --user postgres --entrypoint sh -v "${P}old:/upkeep-old:ro" -v "${P}data15:/from:ro" \
  -v "${P}data17:/v" -v "$WORK/upgrade.sh:/upgrade.sh:ro" "$NEW_IMAGE" /upgrade.sh)
t4=$(now)
read -r _ c0 c1 _ l0 l1 _ m0 m1 <<<"$times"
say "   staging copy (cp -a) $(echo "$t3 - $t2" | bc) s; pg_upgrade --check $(echo "$c1 - $c0" | bc) s; --link $(echo "$l1 - $l0" | bc) s; rename + carry $(echo "$m1 - $m0" | bc) s; helper total $(echo "$t4 - $t3" | bc) s"

say "4. Postgres 17 on the upgraded cluster"
docker run -d --name "${P}17" -e POSTGRES_PASSWORD_FILE=/run/pw -v "$WORK/pw:/run/pw:ro" \
  -e POSTGRES_USER=graphistry -v "${P}data17:/var/lib/postgresql/data" "$NEW_IMAGE" >/dev/null
wait_ready "${P}17"
fail=0
check() { if [ "$2" = "$3" ]; then say "   ok: $1 = $2"; else say "   FAIL: $1 = $2, expected $3"; fail=1; fi; }
check "server major" "$(psql17 -c 'SHOW server_version_num' | cut -c1-2)" 17
check "items rows" "$(psql17 -c 'SELECT count(*) FROM items')" "$ROWS"
check "analytics.events rows" "$(docker exec -u postgres "${P}17" psql -U graphistry -d analytics -XAtc 'SELECT count(*) FROM events')" 5000
check "large object" "$(psql17 -c "SELECT convert_from(lo_get($LO), 'UTF8')")" lowrite
printf 'readerpw\n' >"$WORK/readerpw"
check "reader logs in over TCP with its password" \
  "$(docker exec -i "${P}17" sh -c 'PGPASSWORD=$(cat) psql -h 127.0.0.1 -U reader -d graphistry -XAtc "SELECT current_user"' <"$WORK/readerpw")" reader
mismatch=$(psql17 -c "SELECT collversion || ' -> ' || pg_collation_actual_version(oid) FROM pg_collation WHERE collname = 'de_icu'" 2>/dev/null)
say "   ICU collation de_icu recorded -> provided: $mismatch (ICU 72 -> 76)"
psql17 -c "REINDEX INDEX CONCURRENTLY names_n" -c "ALTER COLLATION de_icu REFRESH VERSION" 2>/dev/null
check "collation version after REINDEX + REFRESH" \
  "$(psql17 -c "SELECT collversion = pg_collation_actual_version(oid) FROM pg_collation WHERE collname = 'de_icu'")" t
docker stop "${P}17" >/dev/null
check "old volume byte-identical (listing + md5 of every file)" "$(listing "${P}data15" | md5sum)" "$(echo "$before" | md5sum)"
exit "$fail"
