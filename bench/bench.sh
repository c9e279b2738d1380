#!/usr/bin/env bash
# bench/bench.sh — the benchmark harness of upkeep (issues 3, 4 and 5).
#
#   bench/bench.sh repo [SIZE_MIB...]     repository ingest vs restic, borg, gzip, zstd
#   bench/bench.sh backup [SCALE...]         upkeep backup/restore vs the seed page's commands and restic
#   bench/bench.sh upgrade [SCALE...]        upkeep upgrade downtime (copy, pg_upgrade, dump) vs raw copy / dump+restore by hand
#   bench/bench.sh backup,upgrade [SCALE...] both on one pgbench fill per scale (saves fills)
#   bench/bench.sh transport [SCALE...]      first backup, archive endpoint vs FIFO, interleaved, beside restic's
#   bench/bench.sh physical [SCALE...]       backup --physical vs logical: time, growth, restore
#   Several scales run one after the other in one run (default 70), each on a fresh
#   instance; upgrade then ends with a table of the downtimes across the scales.
#
# Each contender and its baselines run in this process tree, on the same data,
# one after the other in one run. Wall time: `date +%s.%N`; peak RSS:
# `/usr/bin/time -f %M` (of the client process tree: for `docker exec`/`docker
# run` pipelines the work inside containers is not in that number). The report
# (Markdown) goes to stdout and to WORK/report.md; progress goes to stderr.
#
# Every run makes its own work folder target/bench/<what>-<date>-<pid>/ (site,
# input, repositories) and its own compose project names `bench<pid>…`; a trap
# removes their containers, volumes and networks and the work folder at the end,
# even on failure (BENCH_KEEP=1 keeps the work folder; the Docker objects go anyway).
#
# Environment:
#   BENCH_NO_BUILD=1       use the binaries as they are (no `cargo build --release`)
#   BENCH_SEED=42          seed of the generated input (repo)
#   BENCH_FULL_MAX=1024    repo: sizes above this run only upkeep, restic, borg (lz4) and
#                          zstd -T0 (no gzip -9, no borg zstd,3): enough for the RSS claim
#   BENCH_VOL_MIB=600      backup/upgrade: MiB of files written into the postgres_backups volume
#   BENCH_NOISE_MIB=256    physical: MiB of random text (md5 hex) added in a table of its own,
#                          since pgbench's rows compress about 50:1
#   BENCH_ROUNDS=1         backup/upgrade: rounds of every measurement (fresh repository and
#                          instances each); the report gives medians and each round's value
#   UPKEEP_FIXTURES        where scripts/fixtures.sh put its bundles (default target/fixtures)
#   PYTHON=python3         runs bench/gen-data.py
#
# Not a test: nothing here runs under `cargo test`. Needs root (Docker), restic,
# borgbackup, gzip, zstd, GNU time (Debian packages `restic borgbackup zstd time`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CMDLINE="bench/bench.sh${*:+ $*}"
WHAT=${1:-}
[[ $# -gt 0 ]] && shift
case "$WHAT" in
  repo|backup|upgrade|backup,upgrade|upgrade,backup|physical|transport) ;;
  *) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
esac

P="bench$$"                       # prefix of every compose project, volume, container
STAMP=$(date +%Y%m%d-%H%M%S)
WORK="$ROOT/target/bench/${WHAT//,/+}-$STAMP-$$"
SITE="$WORK/site"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
UPKEEP="$TARGET_DIR/release/upkeep"
INGEST="$TARGET_DIR/release/examples/ingest"
PYTHON=${PYTHON:-python3}
REPORT="$WORK/report.md"
mkdir -p "$WORK"
: > "$REPORT"
# The report goes to fd 3 (the real stdout); everything else, including what the
# measured commands print, goes to stderr.
exec 3>&1 1>&2

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
out() { printf '%s\n' "$*" | tee -a "$REPORT" >&3; }
die() { log "ERROR: $*"; exit 1; }

# ---------------------------------------------------------------- cleanup
MONITOR_PID=""
cleanup() {
  local rc=$?
  set +e
  [[ -n $MONITOR_PID ]] && kill "$MONITOR_PID" 2>/dev/null && wait "$MONITOR_PID" 2>/dev/null
  [[ -n $EV_PID ]] && kill "$EV_PID" 2>/dev/null
  local c v n
  c=$(docker ps -aq --filter "name=^/?${P}" 2>/dev/null)
  [[ -n $c ]] && docker rm -f -v $c >/dev/null 2>&1
  # helper containers upkeep made for this run's volumes (normally gone already)
  v=$(docker volume ls -q --filter "name=^${P}" 2>/dev/null)
  for vol in $v; do
    c=$(docker ps -aq --filter "volume=$vol" 2>/dev/null)
    [[ -n $c ]] && docker rm -f -v $c >/dev/null 2>&1
  done
  [[ -n $v ]] && docker volume rm -f $v >/dev/null 2>&1
  n=$(docker network ls -q --filter "name=^${P}" 2>/dev/null)
  [[ -n $n ]] && docker network rm $n >/dev/null 2>&1
  local left
  left=$( (docker ps -aq --filter "name=^/?${P}"; docker volume ls -q --filter "name=^${P}"; \
           docker network ls -q --filter "name=^${P}") 2>/dev/null | wc -l)
  [[ $left -ne 0 ]] && log "cleanup: $left Docker objects named ${P}* could not be removed"
  if [[ -z ${BENCH_KEEP:-} ]]; then
    [[ -f $REPORT ]] && cp "$REPORT" "$ROOT/target/bench/last-${WHAT//,/+}.md" 2>/dev/null
    rm -rf "$WORK"
  else
    log "kept $WORK"
  fi
  [[ $rc -ne 0 ]] && log "FAILED (exit $rc); Docker objects ${P}* removed"
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---------------------------------------------------------------- measuring
declare -A T M C      # wall seconds, peak RSS KiB, CPU seconds (user+system), by key
declare -A R          # wall seconds of every round, by key ("a b c")
ROUNDS=${BENCH_ROUNDS:-1}
ROUND=1

# timed KEY CMD...: runs CMD (redirections of the call apply), records T[KEY], M[KEY], C[KEY].
timed() {
  local key=$1; shift
  local tf="$WORK/.time.$key" t0 t1 rc=0
  log "run $key: $*"
  t0=$(date +%s.%N)
  /usr/bin/time -f '%M %U %S' -o "$tf" "$@" || rc=$?
  t1=$(date +%s.%N)
  T[$key]=$(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}')
  local rss=0 us=0 ss=0
  read -r rss us ss < <(tail -n1 "$tf" 2>/dev/null) || true
  M[$key]=${rss:-0}
  C[$key]=$(awk -v u="${us:-0}" -v s="${ss:-0}" 'BEGIN{printf "%.1f", u+s}')
  R[$key]="${R[$key]:+${R[$key]} }${T[$key]}"
  log "  $key: ${T[$key]} s, peak RSS $(mib_k "${M[$key]}") MiB, CPU ${C[$key]} s"
  [[ $rc -eq 0 ]] || die "$key failed (exit $rc): $*"
}
# ptimed KEY CMD...: timed, and the Docker events of this run's objects meanwhile
# (containers, execs, helper containers: their names or labels carry $P) kept as a
# timeline, printed at the end of the report: which stage of an upkeep command
# takes the time, without touching upkeep.
EV_PID=""
TIMELINES=()
ptimed() {
  local key=$1 t0 ev="$WORK/.events.$1"
  docker events --format '{{json .}}' > "$ev" 2>/dev/null & EV_PID=$!
  sleep 0.3
  t0=$(date +%s%N)
  timed "$@"
  sleep 0.5; kill "$EV_PID" 2>/dev/null; wait "$EV_PID" 2>/dev/null || true; EV_PID=""
  jq -r -s --arg p "$P" --argjson t0 "$t0" -f "$ROOT/bench/timeline.jq" "$ev" \
    > "$WORK/timeline.$key" 2>"$WORK/timeline.$key.err" || log "no timeline for $key: $(head -c 300 "$WORK/timeline.$key.err")"
  [[ " ${TIMELINES[*]} " == *" $key "* ]] || TIMELINES+=("$key")
}
# After the rounds: every T[key] becomes the median of its rounds.
settle_medians() {
  local k
  for k in "${!R[@]}"; do
    T[$k]=$(tr ' ' '\n' <<< "${R[$k]}" | sort -g | awk '{v[NR]=$1} END{printf "%.2f", NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}')
  done
}
# run_rounds WHAT FN ARGS...: FN ARGS once per round (fresh repository and instances are
# FN's business), then every T[key] is the median of its rounds.
run_rounds() {
  local what=$1; shift
  [[ $ROUNDS == 1 ]] || out "- $ROUNDS rounds, each on fresh instances (backups: into a fresh repository); every time below is the median of the rounds, each round's value in parentheses."
  for ((ROUND = 1; ROUND <= ROUNDS; ROUND++)); do
    log "$what round $ROUND of $ROUNDS"
    "$@"
  done
  settle_medians
}
# rounds_of KEY: " (rounds: a / b / c)" when there was more than one round.
rounds_of() { [[ $ROUNDS -gt 1 ]] && printf ' (rounds: %s)' "${R[$1]// / \/ }"; return 0; }
# ratio_rounds A B: the ratio A/B of every round, " (rounds: x× / y× / z×)".
ratio_rounds() {
  [[ $ROUNDS -gt 1 ]] || return 0
  local -a a b; read -ra a <<< "${R[$1]}"; read -ra b <<< "${R[$2]}"
  local i out=""
  for i in "${!a[@]}"; do out+="${out:+ / }$(ratio "${a[$i]}" "${b[$i]}")"; done
  printf ' (rounds: %s)' "$out"
}
timelines_out() {
  [[ ${#TIMELINES[@]} -gt 0 ]] || return 0
  out ""
  out "## Docker event timelines of the upkeep commands (profile)"
  local k
  for k in "${TIMELINES[@]}"; do
    out ""
    out "\`$k\` (${T[$k]} s in all; seconds since the command started):"
    out ""
    out "\`\`\`"
    out "$(cat "$WORK/timeline.$k")"
    out "\`\`\`"
  done
}
# sh_timed KEY 'pipeline': the same for a shell pipeline (pipefail on).
sh_timed() { local key=$1; shift; timed "$key" bash -o pipefail -c "$1"; }

calc() { awk "BEGIN{ $1 }"; }
mib_k() { calc "printf \"%.0f\", ${1:-0}/1024"; }                    # KiB -> MiB
mib_b() { calc "printf \"%.1f\", ${1:-0}/1048576"; }                 # bytes -> MiB
ratio() { calc "if ($2 > 0) printf \"%.2f×\", $1/$2; else printf \"–\""; }
rate() { calc "if ($2 > 0) printf \"%.0f\", $1/$2; else printf \"–\""; }   # MiB / s
growth() { calc "printf \"+%.0f KiB (%.3f %%)\", ($1-$2)/1024, 100*($1-$2)/$2"; }
pct() { calc "if ($2 > 0) printf \"%.2f %%\", 100*($1-$2)/$2; else printf \"–\""; }
dsize() { du -sb "$1" | cut -f1; }
verdict() { if calc "exit !($1)"; then echo "**met**"; else echo "**NOT met**"; fi; }

# Other developers' Docker tests share this machine: note whether any ran meanwhile.
OTHERS="$WORK/.others"
others_now() { pgrep -f 'cargo test|target/debug/deps' >/dev/null 2>&1; }
start_monitor() {
  : > "$OTHERS"
  ( while sleep 5; do others_now && date +%H:%M:%S >> "$OTHERS"; done ) &
  MONITOR_PID=$!
}
others_note() {
  if [[ -s $OTHERS ]]; then
    out "- **Other test processes (\`cargo test\` / \`target/debug/deps\`) ran during this run**, seen $(wc -l < "$OTHERS") times between $(head -n1 "$OTHERS") and $(tail -n1 "$OTHERS"): timings are disturbed."
  else
    out "- No other test process (\`cargo test\` / \`target/debug/deps\`) was seen during the run (checked every 5 s)."
  fi
}

machine() {
  local fs dev rota
  fs=$(df -T "$WORK" | awk 'NR==2{printf "%s on %s, %.0f GiB, %.0f GiB free", $2, $1, $3/1048576, $5/1048576}')
  dev=$(df "$WORK" | awk 'NR==2{print $1}'); dev=${dev#/dev/}
  rota=$(cat "/sys/block/$dev/queue/rotational" 2>/dev/null || echo '?')
  out ""
  out "- Command: \`$CMDLINE\` (started $(date -u +%Y-%m-%dT%H:%M:%SZ))"
  out "- upkeep: $(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo '?'), release build"
  out "- Machine: $(nproc) cores ($(awk -F: '/model name/{print $2; exit}' /proc/cpuinfo | sed 's/^ *//')), $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r)"
  out "- Disk: $fs (virtio block device, rotational flag $rota); Docker root $(docker info --format '{{.DockerRootDir}}' 2>/dev/null) on the same disk"
  out "- Docker Engine $(docker version --format '{{.Server.Version}}' 2>/dev/null), storage driver $(docker info --format '{{.Driver}}' 2>/dev/null), $(docker-compose version --short 2>/dev/null | sed 's/^/docker-compose /' || docker compose version --short)"
  out "- Tools: $(restic version | cut -d' ' -f1-2), $(borg --version 2>/dev/null || echo 'no borg'), $(gzip --version | head -n1), $(zstd --version | sed 's/\*\*\* //; s/, by.*//'), $($PYTHON --version)"
  out "- Load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
}

build() {
  if [[ -z ${BENCH_NO_BUILD:-} ]]; then
    log "cargo build --release --bin upkeep --example ingest"
    (cd "$ROOT" && cargo build --release --quiet --bin upkeep --example ingest) >&2
  fi
  [[ -x $UPKEEP ]] || die "no $UPKEEP"
  [[ $WHAT != repo || -x $INGEST ]] || die "no $INGEST"
}

need() { command -v "$1" >/dev/null || die "$1 is missing: apt-get install -y $2"; }
# Installs the Debian packages the harness uses when missing (as root), then checks.
need_tools() {
  local pkgs=() p
  local want=(restic zstd time jq)
  [[ $WHAT == repo ]] && want+=(borgbackup)
  for p in "${want[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || pkgs+=("$p")
  done
  if [[ ${#pkgs[@]} -gt 0 && $(id -u) -eq 0 ]]; then
    log "installing ${pkgs[*]}"
    apt-get -q update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${pkgs[@]}" >&2
  fi
  need restic restic; [[ $WHAT != repo ]] || need borg borgbackup; need gzip gzip; need zstd zstd; need jq jq
  [[ -x /usr/bin/time ]] || die "/usr/bin/time is missing: apt-get install -y time"
}

# ================================================================= repo (issue 3)
bench_repo() {
  local sizes=("$@")
  [[ ${#sizes[@]} -gt 0 ]] || sizes=(1024)
  local full_max=${BENCH_FULL_MAX:-1024} seed=${BENCH_SEED:-42}
  local pw="$WORK/password"
  head -c 24 /dev/urandom | base64 > "$pw"; chmod 600 "$pw"
  export UPKEEP_PASSWORD_FILE="$pw" RESTIC_PASSWORD_FILE="$pw"
  export RESTIC_CACHE_DIR="$WORK/restic-cache"
  BORG_PASSPHRASE=$(cat "$pw"); export BORG_PASSPHRASE
  export BORG_BASE_DIR="$WORK/borg-home" BORG_DISPLAY_PASSPHRASE=no
  local rss_lines=() targets=()

  out "# Repository benchmark (issue 3)"
  machine
  out "- Input: \`bench/gen-data.py SIZE $seed\` (deterministic): half incompressible segments, half text-like rows (dump/log lines), segments 256 KiB–8 MiB; written once to a file, read from the page cache by every contender."
  out "- upkeep: \`target/release/examples/ingest REPO < input\` (one stream, one snapshot, upkeep::repo); restic: \`restic backup --stdin\` into a repository version 2 (default compression auto); borg: \`borg create REPO::NAME -\` (repokey encryption, default lz4). Second backup: the same input again, unchanged."
  start_monitor

  for size in "${sizes[@]}"; do
    local input="$WORK/input-${size}MiB.bin" t0 t1
    log "generating $size MiB of input (seed $seed)"
    t0=$(date +%s.%N)
    "$PYTHON" "$ROOT/bench/gen-data.py" "$size" "$seed" > "$input"
    t1=$(date +%s.%N)
    log "  generated in $(calc "printf \"%.1f\", $t1-$t0") s"
    cat "$input" > /dev/null
    local bytes mib full=1
    bytes=$(stat -c %s "$input"); mib=$(calc "print $bytes/1048576")
    calc "exit !($size > $full_max)" && full=0
    local -A stored=() grow=()
    local r
    # --- upkeep
    r="$WORK/repo-upkeep-$size"
    timed "up1_$size" "$INGEST" "$r" < "$input"; stored[up]=$(dsize "$r")
    timed "up2_$size" "$INGEST" "$r" < "$input"; grow[up]=$(dsize "$r")
    # --- restic
    r="$WORK/repo-restic-$size"
    restic -r "$r" init --repository-version 2 -q >/dev/null
    stored[rinit]=$(dsize "$r")
    timed "re1_$size" restic -r "$r" backup -q --stdin --stdin-filename input.bin < "$input"
    stored[re]=$(dsize "$r")
    timed "re2_$size" restic -r "$r" backup -q --stdin --stdin-filename input.bin < "$input"
    grow[re]=$(dsize "$r")
    # --- borg (lz4, its default)
    r="$WORK/repo-borg-$size"
    borg init -e repokey "$r" >/dev/null 2>&1
    timed "bo1_$size" borg create "$r::first" - < "$input"; stored[bo]=$(dsize "$r")
    timed "bo2_$size" borg create "$r::second" - < "$input"; grow[bo]=$(dsize "$r")
    if [[ $full -eq 1 ]]; then
      r="$WORK/repo-borgz-$size"
      borg init -e repokey "$r" >/dev/null 2>&1
      timed "bz1_$size" borg create --compression zstd,3 "$r::first" - < "$input"; stored[bz]=$(dsize "$r")
      rm -rf "$r"
      timed "gz_$size" gzip -9 -c < "$input" > "$WORK/out.gz"; stored[gz]=$(stat -c %s "$WORK/out.gz"); rm -f "$WORK/out.gz"
      timed "z1_$size" zstd -3 -T1 -q -c < "$input" > "$WORK/out.zst"; stored[z1]=$(stat -c %s "$WORK/out.zst"); rm -f "$WORK/out.zst"
    fi
    timed "z0_$size" zstd -3 -T0 -q -c < "$input" > "$WORK/out.zst"; stored[z0]=$(stat -c %s "$WORK/out.zst"); rm -f "$WORK/out.zst"
    [[ $full -eq 1 ]] && timed "sha_$size" sha256sum < "$input" > /dev/null
    rm -rf "$WORK"/repo-*-"$size"

    local re1=${T[re1_$size]} re2=${T[re2_$size]}
    out ""
    out "## $size MiB input ($(calc "printf \"%.0f\", $bytes/1048576") MiB, zstd -3 makes it $(mib_b "${stored[z0]}") MiB)"
    out ""
    out "| contender | 1st backup s | MiB/s | vs restic | CPU s | peak RSS MiB | stored MiB | 2nd (unchanged) s | MiB/s | vs restic | repo growth | 2nd peak RSS MiB |"
    out "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    row_repo() { # label key1 key2 storedkey growkey
      local k1=$2 k2=$3
      if [[ -n $k2 ]]; then
        out "| $1 | ${T[$k1]} | $(rate "$mib" "${T[$k1]}") | $(ratio "$re1" "${T[$k1]}") | ${C[$k1]} | $(mib_k "${M[$k1]}") | $(mib_b "${stored[$4]}") | ${T[$k2]} | $(rate "$mib" "${T[$k2]}") | $(ratio "$re2" "${T[$k2]}") | $(growth "${grow[$5]}" "${stored[$4]}") | $(mib_k "${M[$k2]}") |"
      else
        out "| $1 | ${T[$k1]} | $(rate "$mib" "${T[$k1]}") | $(ratio "$re1" "${T[$k1]}") | ${C[$k1]} | $(mib_k "${M[$k1]}") | $(if [[ -n $4 ]]; then mib_b "${stored[$4]}"; else echo –; fi) | – | – | – | – | – |"
      fi
    }
    row_repo "**upkeep** (examples/ingest)" "up1_$size" "up2_$size" up up
    row_repo "restic 0.14 \`backup --stdin\`" "re1_$size" "re2_$size" re re
    row_repo "borg 1.2 \`create -\` (lz4)" "bo1_$size" "bo2_$size" bo bo
    if [[ $full -eq 1 ]]; then
      row_repo "borg 1.2 \`create --compression zstd,3 -\`" "bz1_$size" "" bz ""
      row_repo "\`gzip -9\` (to a file)" "gz_$size" "" gz ""
      row_repo "\`zstd -3 -T1\` (to a file)" "z1_$size" "" z1 ""
    fi
    row_repo "\`zstd -3 -T0\` (to a file)" "z0_$size" "" z0 ""
    [[ $full -eq 1 ]] && row_repo "*diagnostic*: \`sha256sum\` (one thread)" "sha_$size" "" "" ""
    out ""
    out "\"vs restic\" is restic's time divided by the contender's: above 1× is faster than restic. CPU s: user + system seconds of the process tree (2 cores: at most twice the wall time). Repo growth: bytes the unchanged second backup added, relative to the repository after the first. Stored: repository size (du) or output file size."
    rss_lines+=("$size MiB: upkeep ${M[up1_$size]} / ${M[up2_$size]} KiB, restic ${M[re1_$size]} KiB, borg ${M[bo1_$size]} KiB")
    targets+=("$size|$(calc "printf \"%.2f\", $re1/${T[up1_$size]}")|$(pct "${grow[up]}" "${stored[up]}")|${grow[up]}|${stored[up]}|$(mib_k "${M[up1_$size]}")|$(mib_k "${M[up2_$size]}")")
    rm -f "$input"
  done

  out ""
  out "## Targets (issue 3)"
  out ""
  out "| input | upkeep / restic throughput (≥ 1.0×) | unchanged 2nd backup growth (≤ 1 %) | peak RSS 1st / 2nd MiB (≤ 256) |"
  out "| --- | --- | --- | --- |"
  local tline first_rss="" last_rss=""
  for tline in "${targets[@]}"; do
    IFS='|' read -r s thr growp g2 s1 rss1 rss2 <<< "$tline"
    out "| $s MiB | ${thr}× $(verdict "$thr >= 1.0") | $growp $(verdict "($g2-$s1) <= 0.01*$s1") | $rss1 / $rss2 $(verdict "$rss1 <= 256 && $rss2 <= 256") |"
    [[ -z $first_rss ]] && first_rss=$rss1
    last_rss=$rss1
  done
  if [[ ${#targets[@]} -gt 1 ]]; then
    out ""
    out "Peak RSS from the smallest to the largest input: $first_rss → $last_rss MiB: not growing with the input $(verdict "$last_rss <= $first_rss * 1.15 + 8")."
  fi
  out ""
  others_note
}

# ================================================================= instance helpers
ENVU=""; ENVDB=""
bundles() {
  local dir=${UPKEEP_FIXTURES:-$ROOT/target/fixtures}/bundles
  if [[ ! -d $dir/upkeep-sample-v2.0.0 ]]; then
    log "building fixtures (scripts/fixtures.sh)"
    dir=$("$ROOT/scripts/fixtures.sh" | tail -n1)
  fi
  echo "$dir"
}
up() { "$UPKEEP" --site "$SITE" "$@"; }
pg_of() {  # container of the postgres service of instance $1
  docker ps -q --filter "label=com.docker.compose.project=$1" \
    --filter "label=com.docker.compose.service=postgres" | head -n1
}
vol_of() { up status "$1" --json | jq -r --arg k "$2" '(if type=="array" then .[0] else . end).volumes[] | select(.key==$k) | .name'; }
home_of() { up status "$1" --json | jq -r '(if type=="array" then .[0] else . end).home'; }
psql_in() { docker exec -u postgres "$1" psql -X -At -U "$ENVU" -d "$ENVDB" -c "$2"; }
accounts() { psql_in "$1" "select count(*) from pgbench_accounts"; }
remove_instance() {  # down NAME and remove its volumes
  local name=$1 vols
  vols=$(up status "$name" --json 2>/dev/null | jq -r '(if type=="array" then .[0] else . end).volumes[].name' 2>/dev/null || true)
  up down "$name" >/dev/null 2>&1 || true
  docker ps -aq --filter "label=com.docker.compose.project=$name" | xargs -r docker rm -f -v >/dev/null 2>&1 || true
  for v in $vols; do docker volume rm -f "$v" >/dev/null 2>&1 || true; done
}

remove_all_instances() {  # of the benchmark's own site, between scales
  local n
  for n in $(up status --json | jq -r '(if type=="array" then . else [.] end)[].name'); do
    remove_instance "$n"
  done
}

SRC=""; DB_BYTES=0; VOL_BYTES=0; SCALE=70
install_releases() {
  local b v; b=$(bundles)
  mkdir -p "$SITE"
  for v in "$@"; do
    log "install $v"
    up install "$b/upkeep-sample-$v" >&2
  done
}
setup_instance() {  # starts v1.0.0 as ${P}src<SCALE>, fills it
  SRC="${P}src$SCALE"
  log "up v1.0.0 --as $SRC"
  up up v1.0.0 --as "$SRC" >&2
  local home pg
  home=$(home_of "$SRC")
  ENVU=$(sed -n 's/^POSTGRES_USER=//p' "$home/.env" | tr -d '"'"'")
  ENVDB=$(sed -n 's/^POSTGRES_DB=//p' "$home/.env" | tr -d '"'"'")
  pg=$(pg_of "$SRC")
  [[ -n $pg ]] || die "no postgres container for $SRC"
  log "pgbench -i -s $SCALE (user $ENVU, db $ENVDB)"
  timed fill_pgbench docker exec -u postgres "$pg" pgbench -i -q -s "$SCALE" -U "$ENVU" "$ENVDB" 2>"$WORK/pgbench.log" \
    || { tail "$WORK/pgbench.log" >&2; exit 1; }
  local vol_mib=${BENCH_VOL_MIB:-600} n
  n=$(( (vol_mib + 49) / 50 ))
  log "writing $((n * 50)) MiB of files into /backups (postgres_backups): random, base64 and log text"
  # a third each: random bytes (compressed archives), base64 text (compresses 4:3),
  # log lines with varying ids and numbers (compresses well)
  timed fill_volume docker exec "$pg" sh -c '
    set -e; n='"$n"'; mkdir -p /backups/bench; cd /backups/bench; i=0
    while [ $i -lt $n ]; do
      case $((i % 3)) in
        0) dd if=/dev/urandom of=blob-$i.bin bs=1M count=50 status=none ;;
        1) head -c 39321600 /dev/urandom | base64 > export-$i.b64; truncate -s 50M export-$i.b64 ;;
        2) awk -v seed=$i "BEGIN { srand(seed); while (b < 52428800) {
               l = sprintf(\"2024-%02d-%02dT%02d:%02d:%02d.%03dZ INFO [api] GET /api/v1/datasets/%08x status=200 bytes=%d took=%dms user=u%05d\n\",
                   1+int(rand()*12), 1+int(rand()*28), int(rand()*24), int(rand()*60), int(rand()*60), int(rand()*1000),
                   int(rand()*4294967295), int(rand()*1000000), int(rand()*3000), int(rand()*20000));
               printf \"%s\", l; b += length(l) } }" > app-$i.log ;;
      esac
      i=$((i+1))
    done
    chown -R postgres:postgres /backups/bench; sync'
  psql_in "$pg" "checkpoint" >/dev/null
  DB_BYTES=$(psql_in "$pg" "select pg_database_size(current_database())")
  VOL_BYTES=$(docker exec "$pg" du -sb /backups | cut -f1)
  ROWS=$(accounts "$pg")
  log "database $(mib_b "$DB_BYTES") MiB, postgres_backups $(mib_b "$VOL_BYTES") MiB, $ROWS accounts"
}

data_line() {
  out "- Data: v1.0.0 instance (Postgres 15), \`pgbench -i -s $SCALE\` → database $(mib_b "$DB_BYTES") MiB (pg_database_size, $ROWS rows in pgbench_accounts; filled in ${T[fill_pgbench]} s); volume postgres_backups $(mib_b "$VOL_BYTES") MiB of files (a third each: /dev/urandom, base64 of /dev/urandom, generated log lines; written in ${T[fill_volume]} s)."
}

# ================================================================= backup (issue 4)
# record KEY VALUE: a derived time (a sum of steps) of this round, like timed's.
record() { T[$1]=$2; R[$1]="${R[$1]:+${R[$1]} }$2"; }

# The path an administrator who knows restic would script (issue 13, item 3):
# backup = `pg_dump -Fc | restic backup --stdin` plus `restic backup` of the
# volume's folder on the host, first and unchanged second; restore = `upkeep up`
# of a fresh instance, `restic dump … | pg_restore --no-owner`, `restic restore`
# of the folder into the new volume's. Fresh repository each round.
# restic_backup SUFFIX PG MNT REPO: one backup of the restic path into REPO:
# rs_dumpSUFFIX, rs_volSUFFIX and their sum rs_bSUFFIX.
restic_backup() {
  local n=$1 pg=$2 mnt=$3 rr=$4
  export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$WORK/restic-cache"
  sh_timed "rs_dump$n" "docker exec -u postgres $pg pg_dump -Fc -U $ENVU $ENVDB | restic -q -r $rr backup --stdin --stdin-filename $ENVDB.dump >/dev/null"
  sh_timed "rs_vol$n" "cd $mnt && restic -q -r $rr backup . >/dev/null"
  record "rs_b$n" "$(calc "printf \"%.2f\", ${T[rs_dump$n]} + ${T[rs_vol$n]}")"
}
restic_round() {
  local pg=$1 vol=$2 rr="$WORK/restic-s$SCALE-r$ROUND" mnt mnt2 pg2
  export RESTIC_PASSWORD=bench RESTIC_CACHE_DIR="$WORK/restic-cache"
  mnt=$(docker volume inspect -f '{{.Mountpoint}}' "$vol")
  restic -q -r "$rr" init >/dev/null
  local i
  for i in 1 2; do
    restic_backup "$i" "$pg" "$mnt" "$rr"
  done
  RS_REPO=$(dsize "$rr")
  timed rs_up "$UPKEEP" --site "$SITE" up v1.0.0 --as "${P}rss${SCALE}r$ROUND"
  pg2=$(pg_of "${P}rss${SCALE}r$ROUND"); mnt2=$(docker volume inspect -f '{{.Mountpoint}}' "$(vol_of "${P}rss${SCALE}r$ROUND" postgres_backups)")
  local dump_snap vol_snap
  dump_snap=$(restic -r "$rr" snapshots --json | jq -r "map(select(.paths[0] | endswith(\"$ENVDB.dump\"))) | last | .short_id")
  vol_snap=$(restic -r "$rr" snapshots --json | jq -r "map(select(.paths[0] == \"$mnt\")) | last | .short_id")
  sh_timed rs_restore_db "restic -r $rr dump $dump_snap /$ENVDB.dump | docker exec -i -u postgres $pg2 pg_restore --no-owner -U $ENVU -d $ENVDB"
  # backed up from inside the folder (`backup .`), the snapshot's files sit at its root
  sh_timed rs_restore_vol "restic -q -r $rr restore $vol_snap --target $mnt2 >/dev/null"
  record rs_r "$(calc "printf \"%.2f\", ${T[rs_up]} + ${T[rs_restore_db]} + ${T[rs_restore_vol]}")"
  local rows; rows=$(accounts "$pg2")
  [[ $rows == "$ROWS" ]] || log "WARNING: restic-path restore has $rows accounts, expected $ROWS"
  remove_instance "${P}rss${SCALE}r$ROUND"
  rm -rf "$rr"
}

# seed_backup PG VOL: the seed page's backup, $WORK/dump.sql.gz and $WORK/vol.tar.
seed_backup() {
  sh_timed seed_dump "docker exec $1 pg_dump -U $ENVU $ENVDB | gzip -9 > $WORK/dump.sql.gz"
  sh_timed seed_tar "docker run --rm --name ${P}tar -v $2:/v:ro upkeep-test/postgres:15 tar -C /v -cf - . > $WORK/vol.tar"
  record seed_b "$(calc "printf \"%.2f\", ${T[seed_dump]} + ${T[seed_tar]}")"
}
# seed_restore: the seed page's restore of seed_backup's files into a fresh instance.
seed_restore() {
  local pg2 vol2 name="${P}seeds${SCALE}r$ROUND"
  timed seed_up "$UPKEEP" --site "$SITE" up v1.0.0 --as "$name"
  pg2=$(pg_of "$name"); vol2=$(vol_of "$name" postgres_backups)
  sh_timed seed_psql "gunzip -c $WORK/dump.sql.gz | docker exec -i $pg2 psql -X -q -U $ENVU $ENVDB > $WORK/psql.log 2>&1"
  sh_timed seed_untar "docker run --rm -i --name ${P}untar -v $vol2:/v upkeep-test/postgres:15 tar -C /v -xf - < $WORK/vol.tar"
  local seed_rows; seed_rows=$(accounts "$pg2")
  [[ $seed_rows == "$ROWS" ]] || log "WARNING: seed restore has $seed_rows accounts, expected $ROWS"
  remove_instance "$name"
  record seed_r "$(calc "printf \"%.2f\", ${T[seed_up]} + ${T[seed_psql]} + ${T[seed_untar]}")"
  record seed_r_noup "$(calc "printf \"%.2f\", ${T[seed_psql]} + ${T[seed_untar]}")"
}

# One round of the backup benchmark, each repository and instance fresh.
backup_round() {
  local pg=$1 vol=$2 snap repo="$WORK/repo-s$SCALE-r$ROUND"
  # --- backup: seed first, then upkeep (the database is in the page cache for both)
  seed_backup "$pg" "$vol"
  ptimed up_backup "$UPKEEP" --site "$SITE" backup "$SRC" --repo "$repo"
  REPO_AFTER1=$(dsize "$repo")
  ptimed up_backup_online "$UPKEEP" --site "$SITE" backup "$SRC" --online --repo "$WORK/repo-online"
  REPO_ONLINE=$(dsize "$WORK/repo-online"); rm -rf "$WORK/repo-online"
  ptimed up_backup2 "$UPKEEP" --site "$SITE" backup "$SRC" --repo "$repo"
  REPO_AFTER2=$(dsize "$repo")
  if [[ $ROUND == 1 ]]; then
    # diagnostics: what upkeep's Postgres stream costs by itself (pg_dump -Fc compresses
    # with zlib inside the container, single-threaded), and the same dump uncompressed
    sh_timed diag_fc "docker exec -u postgres $pg pg_dump -Fc -U $ENVU $ENVDB | wc -c > $WORK/fc.size"
    sh_timed diag_fc0 "docker exec -u postgres $pg pg_dump -Fc -Z0 -U $ENVU $ENVDB | wc -c > $WORK/fc0.size"
    sh_timed diag_fc1 "docker exec -u postgres $pg pg_dump -Fc -Z1 -U $ENVU $ENVDB | wc -c > $WORK/fc1.size"
  fi
  snap=$(up snapshots --repo "$repo" --json | jq -r '(if type=="array" then . else .snapshots end) | map(select(.tags | index("instance='"$SRC"'"))) | .[0].id')
  [[ -n $snap && $snap != null ]] || die "no snapshot of $SRC"
  DUMP_SZ=$(stat -c %s "$WORK/dump.sql.gz"); TAR_SZ=$(stat -c %s "$WORK/vol.tar")

  # --- restore: the seed's way into a fresh instance, then upkeep restore
  seed_restore
  rm -f "$WORK/dump.sql.gz" "$WORK/vol.tar"
  ptimed up_restore "$UPKEEP" --site "$SITE" restore "$snap" --into v1.0.0 --as "${P}rsts${SCALE}r$ROUND" --repo "$repo"
  local up_rows; up_rows=$(accounts "$(pg_of "${P}rsts${SCALE}r$ROUND")")
  [[ $up_rows == "$ROWS" ]] || die "upkeep restore has $up_rows accounts, expected $ROWS"
  remove_instance "${P}rsts${SCALE}r$ROUND"
  [[ $ROUND == "$ROUNDS" ]] || rm -rf "$repo"
  restic_round "$pg" "$vol"
}

bench_backup() {
  local pg vol
  pg=$(pg_of "$SRC"); vol=$(vol_of "$SRC" postgres_backups)
  out ""
  out "# Backup and restore benchmark (issue 4)"
  [[ -n ${MACHINE_DONE:-} ]] || { machine; MACHINE_DONE=1; }
  data_line
  out "- The seed page's commands (reference/update-backup-migrate.md): \`docker exec PG pg_dump -U $ENVU $ENVDB | gzip -9 > dump.sql.gz\` and the volume as a tar (\`docker run --rm -v VOL:/v:ro upkeep-test/postgres:15 tar -C /v -cf - . > vol.tar\`); restore: a fresh instance (\`upkeep up v1.0.0 --as NEW\`, empty database), \`gunzip -c dump.sql.gz | docker exec -i NEWPG psql -U $ENVU $ENVDB\` and the tar back into the new volume."
  run_rounds backup backup_round "$pg" "$vol"
  local seed_b=${T[seed_b]} seed_r=${T[seed_r]} seed_r_noup=${T[seed_r_noup]}
  local dump_sz=$DUMP_SZ tar_sz=$TAR_SZ repo_after1=$REPO_AFTER1 repo_after2=$REPO_AFTER2 repo_online=$REPO_ONLINE
  out ""
  out "| step | seed page: s | upkeep: s | speed-up (seed / upkeep) | upkeep peak RSS MiB |"
  out "| --- | ---: | ---: | ---: | ---: |"
  out "| backup: \`pg_dump \| gzip -9\` ($(mib_b "$dump_sz") MiB) | ${T[seed_dump]} | | | |"
  out "| backup: tar of postgres_backups ($(mib_b "$tar_sz") MiB) | ${T[seed_tar]} | | | |"
  out "| **backup**: seed total vs \`upkeep backup NAME\` (first backup; the dump and the volume stream side by side; postgres_backups is passive in the Graphistry profiles, so Postgres keeps running) | $seed_b$(rounds_of seed_b) | ${T[up_backup]}$(rounds_of up_backup) | **$(ratio "$seed_b" "${T[up_backup]}")**$(ratio_rounds seed_b up_backup) | $(mib_k "${M[up_backup]}") |"
  out "| backup: seed total vs \`upkeep backup NAME --online\` (first backup into a fresh repository, nothing stopped) | $seed_b | ${T[up_backup_online]}$(rounds_of up_backup_online) | $(ratio "$seed_b" "${T[up_backup_online]}")$(ratio_rounds seed_b up_backup_online) | $(mib_k "${M[up_backup_online]}") |"
  out "| backup: seed total vs \`upkeep backup NAME\` again, data unchanged (deduplicated; the seed has no such thing) | $seed_b | ${T[up_backup2]}$(rounds_of up_backup2) | $(ratio "$seed_b" "${T[up_backup2]}")$(ratio_rounds seed_b up_backup2) | $(mib_k "${M[up_backup2]}") |"
  out "| *diagnostic*: \`docker exec pg_dump -Fc\` alone, to a pipe ($(mib_b "$(cat "$WORK/fc.size")") MiB) | | ${T[diag_fc]} | | |"
  out "| *diagnostic*: \`docker exec pg_dump -Fc -Z0\` alone, to a pipe ($(mib_b "$(cat "$WORK/fc0.size")") MiB) | | ${T[diag_fc0]} | | |"
  out "| *diagnostic*: \`docker exec pg_dump -Fc -Z1\` alone, to a pipe ($(mib_b "$(cat "$WORK/fc1.size")") MiB) | | ${T[diag_fc1]} | | |"
  out "| restore: \`upkeep up\` of a fresh v1.0.0 instance | ${T[seed_up]} | | | |"
  out "| restore: \`gunzip \| psql\` | ${T[seed_psql]} | | | |"
  out "| restore: untar into the new volume | ${T[seed_untar]} | | | |"
  out "| **restore**: seed total vs \`upkeep restore SNAP --into v1.0.0 --as NEW\` (creates and starts the instance, verifies row counts) | $seed_r$(rounds_of seed_r) | ${T[up_restore]}$(rounds_of up_restore) | **$(ratio "$seed_r" "${T[up_restore]}")**$(ratio_rounds seed_r up_restore) | $(mib_k "${M[up_restore]}") |"
  out "| restore: seed without its \`upkeep up\` (psql + untar only) | $seed_r_noup | ${T[up_restore]} | $(ratio "$seed_r_noup" "${T[up_restore]}") | |"
  out ""
  out "Stored (last round): the repository after the first upkeep backup $(mib_b "$repo_after1") MiB, after the unchanged second $(mib_b "$repo_after2") MiB (+$(pct "$repo_after2" "$repo_after1")); the --online backup's fresh repository $(mib_b "$repo_online") MiB; the seed's files $(mib_b "$((dump_sz + tar_sz))") MiB (dump.sql.gz + vol.tar)."
  out ""
  out "The restic path (issue 13, item 3: what an administrator who knows restic would script; fresh restic repository each round, restic $(restic version | cut -d' ' -f2)):"
  out ""
  out "| step | restic path: s | upkeep: s | restic / upkeep | target |"
  out "| --- | ---: | ---: | ---: | --- |"
  out "| first backup: \`pg_dump -Fc \| restic backup --stdin\` (${T[rs_dump1]} s) + \`restic backup\` of the volume folder (${T[rs_vol1]} s) vs \`upkeep backup\` | ${T[rs_b1]}$(rounds_of rs_b1) | ${T[up_backup]} | **$(ratio "${T[rs_b1]}" "${T[up_backup]}")**$(ratio_rounds rs_b1 up_backup) | ≥ 1.2× $(verdict "${T[rs_b1]} >= 1.2*${T[up_backup]}") |"
  out "| unchanged second backup | ${T[rs_b2]}$(rounds_of rs_b2) | ${T[up_backup2]} | **$(ratio "${T[rs_b2]}" "${T[up_backup2]}")**$(ratio_rounds rs_b2 up_backup2) | ≥ 1.2× $(verdict "${T[rs_b2]} >= 1.2*${T[up_backup2]}") |"
  out "| restore: \`upkeep up\` (${T[rs_up]} s) + \`restic dump \| pg_restore --no-owner\` (${T[rs_restore_db]} s) + \`restic restore\` of the folder (${T[rs_restore_vol]} s) vs \`upkeep restore\` (logical) | ${T[rs_r]}$(rounds_of rs_r) | ${T[up_restore]} | **$(ratio "${T[rs_r]}" "${T[up_restore]}")**$(ratio_rounds rs_r up_restore) | ≥ 1.0× $(verdict "${T[rs_r]} >= ${T[up_restore]}") |"
  out ""
  out "restic's repository after both backups (last round): $(mib_b "$RS_REPO") MiB."
  out ""
  out "Targets: backup ≥ 3× faster than the seed's commands: $(ratio "$seed_b" "${T[up_backup]}") $(verdict "$seed_b >= 3*${T[up_backup]}") (--online: $(ratio "$seed_b" "${T[up_backup_online]}") $(verdict "$seed_b >= 3*${T[up_backup_online]}"); unchanged second backup: $(ratio "$seed_b" "${T[up_backup2]}") $(verdict "$seed_b >= 3*${T[up_backup2]}")); restore ≥ 2× faster: $(ratio "$seed_r" "${T[up_restore]}") $(verdict "$seed_r >= 2*${T[up_restore]}")."
}

# ================================================================= upgrade (issue 5)
journal_downtime() { jq -r '.downtime_secs // empty' "$SITE/.upkeep/upgrades/$1.json"; }
# The phases of an upgrade's downtime as upkeep recorded them, one table row each.
journal_phases() {
  jq -r '.phases[]? | "| \(.[0]) | \(.[1] * 100 | round / 100) |"' "$SITE/.upkeep/upgrades/$1.json"
}
# One round of the upgrade benchmark: raw copy, copy upgrade (rolled back),
# dump by hand, dump upgrade (rolled back but in the last round). Instance
# names carry the round, so every round starts from fresh records.
upgrade_round() {
  local pg
  # --- raw copy of the volumes, instance stopped
  timed raw_stop "$UPKEEP" --site "$SITE" stop "$SRC"
  local key from n=0 raw=0
  for key in postgres_data postgres_backups; do
    from=$(vol_of "$SRC" "$key")
    docker volume create "${P}raw_$key" >/dev/null
    timed "raw_$key" docker run --rm --name "${P}cp$n" -v "$from:/from:ro" -v "${P}raw_$key:/to" upkeep-test/postgres:15 sh -c 'cp -a /from/. /to/'
    raw=$(calc "printf \"%.2f\", $raw + ${T[raw_$key]}")
    docker volume rm -f "${P}raw_$key" >/dev/null
    n=$((n + 1))
  done
  record raw "$raw"
  timed raw_start "$UPKEEP" --site "$SITE" up v1.0.0 --as "$SRC"

  # --- upkeep upgrade v1.0.0 -> v1.1.0 (copy)
  local u11="${P}u11s${SCALE}r$ROUND"
  ptimed upg_copy "$UPKEEP" --site "$SITE" upgrade "$SRC" --to v1.1.0 --as "$u11" --yes --strategy copy
  local dt; dt=$(journal_downtime "$SRC")
  [[ -n $dt ]] || die "no downtime_secs in the journal of $SRC"
  record dt_copy "$(calc "printf \"%.2f\", $dt")"
  PHASES_COPY=$(journal_phases "$SRC")
  local rows11; rows11=$(accounts "$(pg_of "$u11")")
  [[ $rows11 == "$ROWS" ]] || die "upgraded v1.1.0 instance has $rows11 accounts, expected $ROWS"
  timed rollback "$UPKEEP" --site "$SITE" rollback "$u11" --yes
  remove_instance "$u11"

  # --- upkeep upgrade v1.0.0 -> v2.0.0 (pg_upgrade, issue 13), rolled back
  local u17="${P}u17s${SCALE}r$ROUND"
  ptimed upg_pgup "$UPKEEP" --site "$SITE" upgrade "$SRC" --to v2.0.0 --as "$u17" --yes --strategy pg_upgrade
  dt=$(journal_downtime "$SRC")
  [[ -n $dt ]] || die "no downtime_secs in the journal of $SRC"
  record dt_pgup "$(calc "printf \"%.2f\", $dt")"
  PHASES_PGUP=$(journal_phases "$SRC")
  local rows17; rows17=$(accounts "$(pg_of "$u17")")
  [[ $rows17 == "$ROWS" ]] || die "pg_upgrade'd v2.0.0 instance has $rows17 accounts, expected $ROWS"
  up rollback "$u17" --yes >/dev/null 2>&1 || die "rollback of $u17 failed"
  remove_instance "$u17"

  # --- pg_dump -Fc | pg_restore by hand into a fresh v2.0.0 instance (the old one's app stopped)
  local hand="${P}hands${SCALE}r$ROUND"
  timed hand_up "$UPKEEP" --site "$SITE" up v2.0.0 --as "$hand"
  pg=$(pg_of "$SRC")
  local pgh; pgh=$(pg_of "$hand")
  docker stop "$(docker ps -q --filter "label=com.docker.compose.project=$SRC" --filter "label=com.docker.compose.service=app")" >/dev/null
  sh_timed hand_dump "docker exec -u postgres $pg pg_dump -Fc -U $ENVU $ENVDB | docker exec -i -u postgres $pgh pg_restore -U $ENVU -d $ENVDB"
  local rowsh; rowsh=$(accounts "$pgh")
  [[ $rowsh == "$ROWS" ]] || log "WARNING: hand restore has $rowsh accounts, expected $ROWS"
  remove_instance "$hand"
  up up v1.0.0 --as "$SRC" >/dev/null 2>&1   # the app again, for a fair upgrade

  # --- upkeep upgrade v1.0.0 -> v2.0.0 (dump)
  local u20="${P}u20s${SCALE}r$ROUND"
  ptimed upg_dump "$UPKEEP" --site "$SITE" upgrade "$SRC" --to v2.0.0 --as "$u20" --yes --strategy dump
  dt=$(journal_downtime "$SRC")
  [[ -n $dt ]] || die "no downtime_secs in the journal of $SRC"
  record dt_dump "$(calc "printf \"%.2f\", $dt")"
  PHASES_DUMP=$(journal_phases "$SRC")
  local rows20; rows20=$(accounts "$(pg_of "$u20")")
  [[ $rows20 == "$ROWS" ]] || die "upgraded v2.0.0 instance has $rows20 accounts, expected $ROWS"
  if [[ $ROUND != "$ROUNDS" ]]; then
    up rollback "$u20" --yes >/dev/null 2>&1 || die "rollback of $u20 failed"
    remove_instance "$u20"
  fi
}

# Medians of each scale's upgrade rounds, "SCALE raw copy dump pg_upgrade".
ACROSS=()
# across_scales SCALE...: how each downtime grows from the first scale to the last.
across_scales() {
  local first=${ACROSS[0]} last=${ACROSS[-1]} row
  local -a f l; read -ra f <<< "$first"; read -ra l <<< "$last"
  out ""
  out "# Downtime across scales (medians of each scale's rounds, this run)"
  out ""
  out "| scale | raw \`cp -a\`: s | \`copy\`: s | \`dump\`: s | \`pg_upgrade\`: s | pg_upgrade / raw |"
  out "| ---: | ---: | ---: | ---: | ---: | ---: |"
  for row in "${ACROSS[@]}"; do
    local -a v; read -ra v <<< "$row"
    out "| ${v[0]} | ${v[1]} | ${v[2]} | ${v[3]} | ${v[4]} | $(ratio "${v[4]}" "${v[1]}") |"
  done
  out "| **${l[0]} / ${f[0]}** | $(ratio "${l[1]}" "${f[1]}") | $(ratio "${l[2]}" "${f[2]}") | $(ratio "${l[3]}" "${f[3]}") | **$(ratio "${l[4]}" "${f[4]}")** (≤ 1.3× $(verdict "${l[4]} <= 1.3*${f[4]}")) | |"
}

bench_upgrade() {
  out ""
  out "# Upgrade benchmark (issue 5)"
  [[ -n ${MACHINE_DONE:-} ]] || { machine; MACHINE_DONE=1; }
  data_line
  out "- Downtime of \`upkeep upgrade\`: \`downtime_secs\` of its journal (from stopping the old instance's services to the new one verified: row counts equal)."
  run_rounds upgrade upgrade_round
  local raw=${T[raw]} dt_copy=${T[dt_copy]} dt_dump=${T[dt_dump]} dt_pgup=${T[dt_pgup]}
  local phases_copy=$PHASES_COPY phases_dump=$PHASES_DUMP phases_pgup=$PHASES_PGUP
  out ""
  out "| upgrade | by hand: s | upkeep downtime: s | upkeep / by hand | target | upkeep whole command: s |"
  out "| --- | ---: | ---: | ---: | --- | ---: |"
  out "| v1.0.0 → v1.1.0, \`--strategy copy\` vs raw \`cp -a\` of both volumes (postgres_data ${T[raw_postgres_data]} s + postgres_backups ${T[raw_postgres_backups]} s), instance stopped | $raw$(rounds_of raw) | $dt_copy$(rounds_of dt_copy) | **$(ratio "$dt_copy" "$raw")**$(ratio_rounds dt_copy raw) | ≤ 1.5× $(verdict "$dt_copy <= 1.5*$raw") | ${T[upg_copy]} |"
  out "| v1.0.0 → v2.0.0 (Postgres 15 → 17), \`--strategy dump\` vs \`pg_dump -Fc \| pg_restore\` by hand | ${T[hand_dump]}$(rounds_of hand_dump) | $dt_dump$(rounds_of dt_dump) | **$(ratio "$dt_dump" "${T[hand_dump]}")**$(ratio_rounds dt_dump hand_dump) | ≤ 1.2× $(verdict "$dt_dump <= 1.2*${T[hand_dump]}") | ${T[upg_dump]} |"
  out "| v1.0.0 → v2.0.0 (Postgres 15 → 17), \`--strategy pg_upgrade\` vs raw \`cp -a\` of both volumes | $raw$(rounds_of raw) | $dt_pgup$(rounds_of dt_pgup) | **$(ratio "$dt_pgup" "$raw")**$(ratio_rounds dt_pgup raw) | ≤ 1.5× $(verdict "$dt_pgup <= 1.5*$raw") | ${T[upg_pgup]} |"
  out "| *context*: \`--strategy pg_upgrade\` vs \`--strategy dump\` downtime | ${T[dt_dump]} | $dt_pgup | $(ratio "$dt_pgup" "$dt_dump") | – | |"
  local hand_copy_all hand_dump_all
  hand_copy_all=$(calc "printf \"%.2f\", ${T[raw_stop]} + $raw + ${T[raw_start]}")
  hand_dump_all=$(calc "printf \"%.2f\", ${T[raw_stop]} + ${T[hand_up]} + ${T[hand_dump]} + ${T[raw_postgres_backups]}")
  out "| *context*: copy by hand including \`upkeep stop\` and \`upkeep up\` of the stopped instance (${T[raw_stop]} + $raw + ${T[raw_start]}) | $hand_copy_all | $dt_copy | $(ratio "$dt_copy" "$hand_copy_all") | – | |"
  out "| *context*: dump by hand including \`upkeep stop\`, \`upkeep up\` of a fresh v2.0.0 instance and the postgres_backups copy (${T[raw_stop]} + ${T[hand_up]} + ${T[hand_dump]} + ${T[raw_postgres_backups]}) | $hand_dump_all | $dt_dump | $(ratio "$dt_dump" "$hand_dump_all") | – | |"
  out ""
  out "Phases of the copy upgrade's downtime (last round), as upkeep recorded them (the last one comes after it):"
  out ""
  out "| phase | s |"
  out "| --- | ---: |"
  out "$phases_copy"
  out ""
  out "Phases of the pg_upgrade upgrade's downtime (last round; the last three come after it):"
  out ""
  out "| phase | s |"
  out "| --- | ---: |"
  out "$phases_pgup"
  out ""
  out "Phases of the dump upgrade's downtime (last round):"
  out ""
  out "| phase | s |"
  out "| --- | ---: |"
  out "$phases_dump"
  out ""
  out "Not in the by-hand numbers: stopping the instance (\`upkeep stop\`: ${T[raw_stop]} s), starting it (\`upkeep up\` of the stopped instance: ${T[raw_start]} s; of a fresh v2.0.0 instance: ${T[hand_up]} s), copying \`postgres_backups\` in the dump case. The whole \`upkeep upgrade\` command also takes the safety snapshot (before the downtime). \`upkeep rollback\` after the copy upgrade: ${T[rollback]} s."
  ACROSS+=("$SCALE ${T[raw]} ${T[dt_copy]} ${T[dt_dump]} ${T[dt_pgup]}")
}

# ================================================================= physical (issue 13)
# shellcheck source=bench/physical.sh
source "$ROOT/bench/physical.sh"
# shellcheck source=bench/transport.sh
source "$ROOT/bench/transport.sh"

# ================================================================= main
need_tools
need jq jq
build
out "\`\`\`"
out "\$ $CMDLINE"
out "\`\`\`"
case "$WHAT" in
  repo)
    bench_repo "$@" ;;
  backup|upgrade|backup,upgrade|upgrade,backup|physical|transport)
    [[ $# -gt 0 ]] || set -- 70
    out "# Instance benchmarks: $WHAT, pgbench scale${2:+s} $*"
    machine; MACHINE_DONE=1
    start_monitor
    versions=(v1.0.0); [[ $WHAT == *upgrade* ]] && versions+=(v1.1.0 v2.0.0)
    install_releases "${versions[@]}"
    for SCALE in "$@"; do
      # every scale starts from fresh measurements and a fresh source instance
      T=(); R=(); M=(); C=(); TIMELINES=()
      [[ -z $SRC ]] || remove_all_instances
      out ""
      out "# pgbench scale $SCALE"
      setup_instance
      [[ $WHAT == *backup* ]] && bench_backup
      [[ $WHAT == *upgrade* ]] && bench_upgrade
      [[ $WHAT == physical ]] && bench_physical
      [[ $WHAT == transport ]] && bench_transport
      timelines_out
    done
    [[ $WHAT != *upgrade* || $# -lt 2 ]] || across_scales "$@"
    out ""
    others_note ;;
esac
log "report: $REPORT (copied to target/bench/last-${WHAT//,/+}.md)"
