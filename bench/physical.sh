# bench/physical.sh — sourced by bench/bench.sh: `bench/bench.sh physical [SCALE...]`
# (issue 13, items 2 and 4). Backup time and repository growth of the three
# kinds of snapshot (`--postgres logical`, `logical+physical`, `physical`),
# first and unchanged second, each kind into a fresh repository; then the
# same-major restore of each. Uses bench.sh's helpers (timed, ptimed, record,
# run_rounds, out, dsize, …).

# The size of a snapshot's stream of kind $2 in the manifest of backup report $1.
stream_size() { jq -r --arg k "$2" '[.manifest.items[] | select(.kind == $k) | .size] | add // 0' "$1"; }

# raw_write: what a physical restore writes, written raw into two fresh volumes:
# the base backup (the data folder) and the tar of postgres_backups (issue 13's
# "raw volume write" baseline).
raw_write() {
  local v1="${P}rawpg${SCALE}r$ROUND" v2="${P}rawbk${SCALE}r$ROUND"
  docker volume create "$v1" >/dev/null; docker volume create "$v2" >/dev/null
  sh_timed raw_w "docker run --rm -i --name ${P}rawpg -v $v1:/v upkeep-test/postgres:15 tar -C /v -xf - < $WORK/base.tar \
    && docker run --rm -i --name ${P}rawbk -v $v2:/v upkeep-test/postgres:15 tar -C /v -xf - < $WORK/vol.tar"
  docker volume rm "$v1" "$v2" >/dev/null
}

physical_round() {
  local kind flag repo
  seed_restore
  raw_write
  for kind in logical both physical; do
    case $kind in
      logical) flag="--postgres logical" ;;
      both) flag="--postgres logical+physical" ;;
      physical) flag="--postgres physical" ;;
    esac
    repo="$WORK/repo-$kind-s$SCALE-r$ROUND"
    ptimed "b1_$kind" "$UPKEEP" --site "$SITE" backup "$SRC" $flag --repo "$repo" --json > "$WORK/report-$kind.json"
    record "s1_$kind" "$(dsize "$repo")"
    ptimed "b2_$kind" "$UPKEEP" --site "$SITE" backup "$SRC" $flag --repo "$repo"
    record "s2_$kind" "$(dsize "$repo")"
    record "g2_$kind" "$(calc "printf \"%d\", ${T[s2_$kind]} - ${T[s1_$kind]}")"
    ptimed "r_$kind" "$UPKEEP" --site "$SITE" restore latest --into v1.0.0 --as "${P}r${kind}s${SCALE}r$ROUND" --repo "$repo" --json > "$WORK/restore-$kind.json"
    local from rows
    from=$(jq -r '.postgres_from' "$WORK/restore-$kind.json")
    [[ $kind != logical && $from == physical || $kind == logical && $from == logical ]] \
      || die "restore of the $kind snapshot used the $from copy"
    rows=$(accounts "$(pg_of "${P}r${kind}s${SCALE}r$ROUND")")
    [[ $rows == "$ROWS" ]] || die "restore of the $kind snapshot has $rows accounts, expected $ROWS"
    remove_instance "${P}r${kind}s${SCALE}r$ROUND"
    rm -rf "$repo"
  done
  record base_size "$(stream_size "$WORK/report-both.json" postgres_base)"
  record dump_size "$(stream_size "$WORK/report-both.json" postgres_dump)"
}

# median KEY: the median of the values record() kept for KEY (sizes too).
median() { tr ' ' '\n' <<< "${R[$1]}" | sort -g | awk '{v[NR]=$1} END{printf "%d", NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

# add_noise MIB: a table of random md5 hex text (about 2:1 compressible), so the
# repository's growth is not that of pgbench's blank-padded rows alone.
add_noise() {
  local rows=$(( $1 * 1048576 / 160 )) pg; pg=$(pg_of "$SRC")
  [[ $rows -gt 0 ]] || return 0
  sh_timed fill_noise "docker exec -u postgres $pg psql -X -q -v ON_ERROR_STOP=1 -U $ENVU -d $ENVDB -c \"CREATE TABLE bench_noise AS SELECT g AS id, md5(random()::text) || md5(random()::text) || md5(random()::text) || md5(random()::text) AS t FROM generate_series(1, $rows) g; CHECKPOINT\""
  DB_BYTES=$(psql_in "$pg" "select pg_database_size(current_database())")
}

bench_physical() {
  add_noise "${BENCH_NOISE_MIB:-256}"
  out ""
  out "# Physical snapshots of a running server (issue 13, item 2)"
  data_line
  [[ -z ${T[fill_noise]:-} ]] || out "- Plus table bench_noise: $(psql_in "$(pg_of "$SRC")" "select count(*) from bench_noise") rows of 128 random hex characters (${BENCH_NOISE_MIB:-256} MiB asked, in ${T[fill_noise]} s), included in the database size above."
  local pg; pg=$(pg_of "$SRC")
  seed_backup "$pg" "$(vol_of "$SRC" postgres_backups)"
  sh_timed base_tar "docker exec -u postgres $pg pg_basebackup -U $ENVU -D - -Ft -X fetch --checkpoint=fast > $WORK/base.tar"
  run_rounds physical physical_round
  local s1l s1b s1p g2l g2b g2p base dump
  s1l=$(median s1_logical); s1b=$(median s1_both); s1p=$(median s1_physical)
  g2l=$(median g2_logical); g2b=$(median g2_both); g2p=$(median g2_physical)
  base=$(median base_size); dump=$(median dump_size)
  out ""
  out "| snapshot | first backup: s | repository after it: MiB | unchanged second backup: s | growth of the second: MiB | same-major restore: s |"
  out "| --- | ---: | ---: | ---: | ---: | ---: |"
  out "| logical (\`--postgres logical\`, the default: the dumps) | ${T[b1_logical]}$(rounds_of b1_logical) | $(mib_b "$s1l") | ${T[b2_logical]}$(rounds_of b2_logical) | $(mib_b "$g2l") | ${T[r_logical]}$(rounds_of r_logical) (pg_restore) |"
  out "| logical + physical (\`--postgres logical+physical\` = \`--physical\`: the dumps, then pg_basebackup) | ${T[b1_both]}$(rounds_of b1_both) | $(mib_b "$s1b") | ${T[b2_both]}$(rounds_of b2_both) | $(mib_b "$g2b") | ${T[r_both]}$(rounds_of r_both) (physical copy) |"
  out "| physical only (\`--postgres physical\`: pg_basebackup, row counts on the server) | ${T[b1_physical]}$(rounds_of b1_physical) | $(mib_b "$s1p") | ${T[b2_physical]}$(rounds_of b2_physical) | $(mib_b "$g2p") | ${T[r_physical]}$(rounds_of r_physical) (physical copy) |"
  out ""
  out "Streams (median): postgres/base.tar $(mib_b "$base") MiB before the repository's compression, the dumps $(mib_b "$dump") MiB (pg_dump -Fc -Z1)."
  out ""
  out "Baselines, each round: the reference page's restore (\`upkeep up\` of a fresh instance ${T[seed_up]} s, \`gunzip | psql\` ${T[seed_psql]} s, untar of postgres_backups ${T[seed_untar]} s): ${T[seed_r]} s$(rounds_of seed_r); a raw write of what the physical restore writes (\`tar -x\` of a \`pg_basebackup\` tar, $(mib_b "$(stat -c %s "$WORK/base.tar")") MiB, and of postgres_backups' tar, $(mib_b "$(stat -c %s "$WORK/vol.tar")") MiB, each into a fresh volume by \`docker run -i\`): ${T[raw_w]} s$(rounds_of raw_w)."
  out ""
  out "| same-major restore | s | / raw write | reference page / it | targets |"
  out "| --- | ---: | ---: | ---: | --- |"
  local k
  for k in r_both r_physical r_logical; do
    out "| ${k#r_} | ${T[$k]} | $(ratio "${T[$k]}" "${T[raw_w]}")$(ratio_rounds "$k" raw_w) | $(ratio "${T[seed_r]}" "${T[$k]}")$(ratio_rounds seed_r "$k") | $([[ $k == r_logical ]] && echo "–" || echo "≤ 1.5× raw: $(verdict "${T[$k]} <= 1.5*${T[raw_w]}"), ≥ 3× faster than the page: $(verdict "${T[seed_r]} >= 3*${T[$k]}")") |"
  done
}
