# bench/physical.sh — sourced by bench/bench.sh: `bench/bench.sh physical [SCALE]`
# (issue 13, item 2). Backup time and repository growth of a logical snapshot
# (the dumps) and of one with the physical copy too (`backup --physical`:
# pg_basebackup beside the dumps), first and unchanged second, each kind into
# a fresh repository; then the same-major restore of each. Uses bench.sh's
# helpers (timed, ptimed, record, run_rounds, out, dsize, …).

# The size of a snapshot's stream of kind $2 in the manifest of backup report $1.
stream_size() { jq -r --arg k "$2" '[.manifest.items[] | select(.kind == $k) | .size] | add // 0' "$1"; }

physical_round() {
  local kind flag repo
  for kind in logical physical; do
    flag=""; [[ $kind == physical ]] && flag=--physical
    repo="$WORK/repo-$kind-s$SCALE-r$ROUND"
    ptimed "b1_$kind" "$UPKEEP" --site "$SITE" backup "$SRC" $flag --repo "$repo" --json > "$WORK/report-$kind.json"
    record "s1_$kind" "$(dsize "$repo")"
    ptimed "b2_$kind" "$UPKEEP" --site "$SITE" backup "$SRC" $flag --repo "$repo"
    record "s2_$kind" "$(dsize "$repo")"
    record "g2_$kind" "$(calc "printf \"%d\", ${T[s2_$kind]} - ${T[s1_$kind]}")"
    ptimed "r_$kind" "$UPKEEP" --site "$SITE" restore latest --into v1.0.0 --as "${P}r${kind}s${SCALE}r$ROUND" --repo "$repo" --json > "$WORK/restore-$kind.json"
    local from rows
    from=$(jq -r '.postgres_from' "$WORK/restore-$kind.json")
    [[ $kind == physical && $from == physical || $kind == logical && $from == logical ]] \
      || die "restore of the $kind snapshot used the $from copy"
    rows=$(accounts "$(pg_of "${P}r${kind}s${SCALE}r$ROUND")")
    [[ $rows == "$ROWS" ]] || die "restore of the $kind snapshot has $rows accounts, expected $ROWS"
    remove_instance "${P}r${kind}s${SCALE}r$ROUND"
    rm -rf "$repo"
  done
  record base_size "$(stream_size "$WORK/report-physical.json" postgres_base)"
  record dump_size "$(stream_size "$WORK/report-physical.json" postgres_dump)"
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
  run_rounds physical physical_round
  local s1l s1p g2l g2p base dump
  s1l=$(median s1_logical); s1p=$(median s1_physical); g2l=$(median g2_logical); g2p=$(median g2_physical)
  base=$(median base_size); dump=$(median dump_size)
  out ""
  out "| snapshot | first backup: s | repository after it: MiB | unchanged second backup: s | growth of the second: MiB | same-major restore: s |"
  out "| --- | ---: | ---: | ---: | ---: | ---: |"
  out "| logical (\`upkeep backup NAME\`: the dumps) | ${T[b1_logical]}$(rounds_of b1_logical) | $(mib_b "$s1l") | ${T[b2_logical]}$(rounds_of b2_logical) | $(mib_b "$g2l") | ${T[r_logical]}$(rounds_of r_logical) (pg_restore) |"
  out "| logical + physical (\`upkeep backup NAME --physical\`: the dumps, then pg_basebackup) | ${T[b1_physical]}$(rounds_of b1_physical) | $(mib_b "$s1p") | ${T[b2_physical]}$(rounds_of b2_physical) | $(mib_b "$g2p") | ${T[r_physical]}$(rounds_of r_physical) (physical copy) |"
  out "| the physical part alone (difference of the two rows) | $(calc "printf \"%.2f\", ${T[b1_physical]} - ${T[b1_logical]}") | $(mib_b "$((s1p - s1l))") | $(calc "printf \"%.2f\", ${T[b2_physical]} - ${T[b2_logical]}") | $(mib_b "$((g2p - g2l))") | |"
  out ""
  out "Streams (median): postgres/base.tar $(mib_b "$base") MiB before the repository's compression, the dumps $(mib_b "$dump") MiB (pg_dump -Fc -Z1)."
}
