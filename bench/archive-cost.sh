#!/usr/bin/env bash
# bench/archive-cost.sh — what reading a volume through the engine's archive
# API costs against reading its folder on the host and against GNU tar on a
# FIFO (upkeep's way on a local engine, src/docker/pipe.rs), and what
# upkeep's ingest adds (issue 13, item 3: the first backup against restic's).
# Median of 3 rounds each, same volume, page cache warm. Needs root and a
# local engine (the host-folder reads are what upkeep does not do: DESIGN.md).
#   bench/archive-cost.sh [MIB]   (default 600: a third random, base64, log text)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
MIB=${1:-600}
P="acost$$"; W=$(mktemp -d); VOL="${P}_vol"
trap 'docker rm -f "${P}c" >/dev/null 2>&1; docker volume rm -f "$VOL" >/dev/null 2>&1; rm -rf "$W"' EXIT
INGEST=target/release/examples/ingest
[[ -x $INGEST ]] || { echo "build first: cargo build --release --examples" >&2; exit 1; }
docker volume create "$VOL" >/dev/null
MNT=$(docker volume inspect -f '{{.Mountpoint}}' "$VOL")
# head closes its pipe early on purpose: no pipefail while the data is made
set +o pipefail
n=$(( MIB / 50 )); i=0
while [ $i -lt $n ]; do
  case $((i % 3)) in
    0) head -c 52428800 /dev/urandom > "$MNT/blob-$i.bin" ;;
    1) head -c 39321600 /dev/urandom | base64 | head -c 52428800 > "$MNT/export-$i.b64" ;;
    2) seq 1 800000 | awk '{print "2024-01-01T00:00:" $1 " INFO [api] GET /api/v1/datasets/" $1 " status=200"}' | head -c 52428800 > "$MNT/app-$i.log" ;;
  esac
  i=$((i + 1))
done
set -o pipefail
docker create --name "${P}c" -v "$VOL:/v:ro" upkeep-test/postgres:15 true >/dev/null
sock=/var/run/docker.sock
t() { local t0 t1; t0=$(date +%s.%N); bash -o pipefail -c "$1" >/dev/null; t1=$(date +%s.%N); awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}'; }
med() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
printf 'pw\n' > "$W/pw"; chmod 600 "$W/pw"
# what upkeep does on a local engine (src/docker/pipe.rs): the image's GNU tar
# in a started helper writes into a FIFO of ours, mounted read-only
mkdir -p "$W/io"; mkfifo "$W/io/pipe"
PIPE_TAR="docker run -d --rm --network none -u 0:0 -v $VOL:/v:ro -v $W/io:/io:ro --entrypoint tar upkeep-test/postgres:15 --create --format=gnu --numeric-owner --xattrs --xattrs-include=security.capability --file /io/pipe --directory /v ."
declare -A R
for round in 1 2 3; do
  R[host]+=" $(t "tar -C $MNT -cf - . | cat > /dev/null")"
  R[engine]+=" $(t "curl -sf --unix-socket $sock 'http://x/v1.41/containers/${P}c/archive?path=/v' | cat > /dev/null")"
  R[pipe]+=" $(t "$PIPE_TAR > /dev/null; cat $W/io/pipe > /dev/null")"
  tar -C "$MNT" -cf "$W/vol.tar" .
  rm -rf "$W/repo"
  R[ingest]+=" $(t "UPKEEP_PASSWORD_FILE=$W/pw $INGEST $W/repo vol < $W/vol.tar")"
  R[ingest2]+=" $(t "UPKEEP_PASSWORD_FILE=$W/pw $INGEST $W/repo vol < $W/vol.tar")"
  R[engine_ingest]+=" $(t "curl -sf --unix-socket $sock 'http://x/v1.41/containers/${P}c/archive?path=/v' | UPKEEP_PASSWORD_FILE=$W/pw $INGEST $W/repo vol")"
  R[pipe_ingest]+=" $(t "$PIPE_TAR > /dev/null; UPKEEP_PASSWORD_FILE=$W/pw $INGEST $W/repo vol < $W/io/pipe")"
  rm -rf "$W/repo-r"; RESTIC_PASSWORD=pw restic -q -r "$W/repo-r" init >/dev/null
  R[restic]+=" $(t "cd $MNT && RESTIC_PASSWORD=pw RESTIC_CACHE_DIR=$W/rc restic -q -r $W/repo-r backup .")"
  R[restic2]+=" $(t "cd $MNT && RESTIC_PASSWORD=pw RESTIC_CACHE_DIR=$W/rc restic -q -r $W/repo-r backup .")"
  rm -f "$W/vol.tar"
done
echo "| $MIB MiB of files in a volume | median s | rounds |"
echo "| --- | ---: | --- |"
declare -A WHAT=(
  [host]="\`tar -cf -\` of the volume's folder on the host"
  [engine]="the engine's archive API of the same folder (\`GET /containers/ID/archive\`: what upkeep reads when the pipe cannot be used)"
  [pipe]="GNU tar in a helper container onto a FIFO of the host, read by \`cat\` (what upkeep reads on a local engine)"
  [pipe_ingest]="that FIFO read by \`examples/ingest\`, unchanged"
  [ingest]="\`examples/ingest\` of that tar from the page cache, fresh repository"
  [ingest2]="the same again, unchanged (every byte chunked and hashed, nothing stored)"
  [engine_ingest]="archive API piped into \`examples/ingest\`, unchanged (upkeep's second backup of the volume)"
  [restic]="\`restic backup .\` of the folder, fresh repository"
  [restic2]="the same again, unchanged (restic skips files by size, mtime and inode)"
)
for k in host engine pipe ingest ingest2 engine_ingest pipe_ingest restic restic2; do
  read -ra v <<< "${R[$k]}"
  echo "| ${WHAT[$k]} | $(med "${v[@]}") | ${v[*]} |"
done
