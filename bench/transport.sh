# bench/transport.sh — sourced by bench.sh: `bench/bench.sh transport [SCALE]`.
# The first backup with whole volumes through the engine's archive endpoint
# (UPKEEP_VOLUME_TRANSPORT=archive) and through the FIFO (the default on a
# local engine, src/docker/pipe.rs), interleaved round by round on the same
# instance, each into a fresh repository, beside the restic path's first
# backup (`pg_dump -Fc | restic backup --stdin` + `restic backup` of the
# folder), so the three see the same machine at the same time.

transport_round() {
  local pg vol mnt rr="$WORK/restic-t-s$SCALE-r$ROUND" t
  pg=$(pg_of "$SRC"); vol=$(vol_of "$SRC" postgres_backups)
  mnt=$(docker volume inspect -f '{{.Mountpoint}}' "$vol")
  for t in archive pipe; do
    UPKEEP_VOLUME_TRANSPORT=$t ptimed "b1_$t" "$UPKEEP" --site "$SITE" backup "$SRC" --repo "$WORK/repo-$t-r$ROUND" >/dev/null
    rm -rf "$WORK/repo-$t-r$ROUND"
  done
  RESTIC_PASSWORD=bench restic -q -r "$rr" init >/dev/null
  restic_backup "" "$pg" "$mnt" "$rr"
  rm -rf "$rr"
}

bench_transport() {
  out ""
  out "# First backup: archive endpoint vs FIFO, interleaved (issue 13, item 3)"
  data_line
  run_rounds transport transport_round
  out ""
  out "| first backup, medians of $ROUNDS | s | restic path / it | target |"
  out "| --- | ---: | ---: | --- |"
  out "| restic path (\`pg_dump -Fc \| restic backup --stdin\` ${T[rs_dump]} s + \`restic backup\` of the folder ${T[rs_vol]} s) | ${T[rs_b]}$(rounds_of rs_b) | | |"
  local t
  for t in archive pipe; do
    out "| \`UPKEEP_VOLUME_TRANSPORT=$t upkeep backup\` | ${T[b1_$t]}$(rounds_of "b1_$t") | **$(ratio "${T[rs_b]}" "${T[b1_$t]}")**$(ratio_rounds rs_b "b1_$t") | ≥ 1.2× $(verdict "${T[rs_b]} >= 1.2*${T[b1_$t]}") |"
  done
  out ""
  out "archive / pipe: $(ratio "${T[b1_archive]}" "${T[b1_pipe]}")$(ratio_rounds b1_archive b1_pipe)"
}
