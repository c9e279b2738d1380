# Docker events (one JSON object per line, slurped) -> a compact timeline of the
# objects whose name or labels carry $p: execs and helper containers as spans
# (start–end, duration), the instances' containers as points. Healthcheck execs
# (pg_isready, busybox wget) are left out. $t0: the command's start, ns.
def secs: ((. - $t0) / 1e6 | floor) / 1e3;
def fmt: tostring | if test("\\.") then . else . + ".0" end;
# One-off helper containers (label org.upkeep.helper=run: `cp -a` between volumes,
# `postgres --version`) name no volume in their attributes; they are shown too, so
# run this only when no other upkeep runs on the engine (the harness notes it).
[ .[] | select(.Type == "container"
               and ((.Actor.Attributes | tostring | contains($p))
                    or .Actor.Attributes["org.upkeep.helper"] == "run")) ] as $ev
| ($ev | map(select(.Action | startswith("exec_start: ")))
       | map(select(.Action | test("pg_isready|busybox wget") | not))
       | map(. as $s
             | ($ev | map(select(.Action == "exec_die" and .Actor.Attributes.execID == $s.Actor.Attributes.execID)) | first) as $d
             | { t: $s.timeNano,
                 line: "\($s.timeNano | secs | fmt)–\(if $d then ($d.timeNano | secs | fmt) else "?" end) s (\(if $d then (($d.timeNano - $s.timeNano) / 1e7 | floor) / 100 | fmt else "?" end) s)  exec \($s.Action | sub("^exec_start: "; "") | sub(" --no-password"; "") | gsub("\t"; "\\t")) in \($s.Actor.Attributes.name)" })) as $execs
| ($ev | map(select(.Action == "create" and .Actor.Attributes["org.upkeep.helper"]))
       | map(. as $c
             | ($ev | map(select(.Action == "destroy" and .id == $c.id)) | first) as $d
             | { t: $c.timeNano,
                 line: "\($c.timeNano | secs | fmt)–\(if $d then ($d.timeNano | secs | fmt) else "?" end) s (\(if $d then (($d.timeNano - $c.timeNano) / 1e7 | floor) / 100 | fmt else "?" end) s)  \(if $c.Actor.Attributes["org.upkeep.helper"] == "run" then "helper container run once (image \($c.Actor.Attributes.image): e.g. cp -a between volumes)" else "helper container (archive endpoint, or tar on a pipe) for volume \($c.Actor.Attributes["org.upkeep.helper"])" end)" })) as $helpers
| ($ev | map(select((.Actor.Attributes["org.upkeep.helper"] | not)
                    and (.Action | test("^(create|start|stop|die|health_status)"))))
       | map({ t: .timeNano, line: "\(.timeNano | secs | fmt) s  \(.Action) \(.Actor.Attributes.name)" })) as $points
| ($execs + $helpers + $points) | sort_by(.t) | .[].line
