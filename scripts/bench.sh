#!/usr/bin/env bash
# bench.sh (`make bench`): every benchmark of the suite in one go, each printing its own table as
# it runs, then one table of all their figures, with each target and whether it was met:
#   scripts/bench-msgq.sh    the message queue pair's wall time (if present)
#   scripts/bench-shm.sh     the shared memory pair's wall time, on all CPUs and on one
#   scripts/bench-fifo.sh    the FIFO pair's wall time (fifos --count 1 & fifoc, median of 21)
#   scripts/bench-mycp3.sh   mycp3 against cp (BENCH_SIZE_MIB, default 1024)
#   ipcbench                 every mechanism's latency and throughput, then --bare: the
#                            simplest ping-pong loop of pipe, msgq, unix-socket and shm-spin
#                            next to ipcbench's own, and the simplest ring of 1 MiB chunks next
#                            to shm-spin's throughput, so the cost of the measuring shows
# Timings depend on the machine and on what else runs on it: not part of `make test`.
# Exit status 1 if a benchmark failed (a missed target is reported, not a failure).
. "$(dirname "$0")/bench-lib.sh"

BENCH_SUMMARY=$(mktemp "${TMPDIR:-/tmp}/bench-summary.XXXXXX")
export BENCH_SUMMARY
out=$(mktemp -d "${TMPDIR:-/tmp}/bench.XXXXXX")
trap 'rm -rf "$BENCH_SUMMARY" "$out"' EXIT
status=0

section() { printf '\n===== %s =====\n' "$*"; }

# part NAME COMMAND...: one benchmark; its failure is noted and the others still run.
part() {
    local name=$1
    shift
    section "$name: $*"
    if ! "$@"; then
        summary "$name" "(the benchmark failed, see above)" "-" "-" "FAILED"
        status=1
    fi
}

[ -x scripts/bench-msgq.sh ] && part "message queue pair" scripts/bench-msgq.sh
part "shared memory pair" scripts/bench-shm.sh
part "FIFO pair" scripts/bench-fifo.sh
part "mycp3 against cp" scripts/bench-mycp3.sh

# ipcbench's rows: each mechanism's p50 and its throughput at 1 MiB (with its fraction of
# memcpy), from the table (the last two columns are the largest chunk size).
ipcbench_rows() {
    awk -v OFS='\t' '
        $1 ~ /^(pipe|fifo|unix-socket|msgq|shm-spin|shm-sem|mmap-devzero|memcpy)$/ && NF >= 5 && !seen[$1]++ {
            print "ipcbench " $1, "64 B p50; 1 MiB throughput", $2 " µs; " $(NF - 1) " GB/s = " $NF " of memcpy", "-", "-"
            if ($1 == "shm-spin") {
                fraction = $NF; sub(/%/, "", fraction)
                print "ipcbench shm-spin", "1 MiB throughput vs memcpy", $NF, ">= 50%", (fraction + 0 >= 50 ? "met" : "MISSED")
            }
        }' "$1" >>"$BENCH_SUMMARY"
}

# The bare loops' rows: ipcbench's p50 over the bare loop's, and shm-spin's throughput over
# the bare ring's, against the target.
bare_rows() {
    awk -v OFS='\t' '
        $5 == "<=" { print "ipcbench " $1, "64 B p50 vs bare loop", $2 " / " $3 " µs = " $4 "x", "<= " $6 "x", $7 }
        $5 == ">=" { print "ipcbench " $1, "1 MiB throughput vs bare ring", $2 " / " $3 " GB/s = " $4 "x", ">= " $6 "x", $7 }
    ' "$1" >>"$BENCH_SUMMARY"
}

section "ipcbench: every mechanism (about 10 s)"
build ipcbench
svg=${BENCH_SVG:-${CARGO_TARGET_DIR:-target}/ipcbench.svg}
if "$bin/ipcbench" --svg "$svg" | tee "$out/ipcbench.txt"; then
    echo "(the chart as a picture: $svg)"
    ipcbench_rows "$out/ipcbench.txt"
else
    summary "ipcbench" "(failed, see above)" "-" "-" "FAILED"
    status=1
fi
section "ipcbench --bare: the simplest loops next to ipcbench's"
if "$bin/ipcbench" --bare | tee "$out/bare.txt"; then
    bare_rows "$out/bare.txt"
else
    summary "ipcbench --bare" "(failed, see above)" "-" "-" "FAILED"
    status=1
fi

section "make bench: all figures ($(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg))"
awk -F'\t' '
    { for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > width[i]) width[i] = length($i) } }
    END {
        split("benchmark|figure|measured|target|verdict", head, "|")
        for (i = 1; i <= 5; i++) if (length(head[i]) > width[i]) width[i] = length(head[i])
        for (i = 1; i <= 5; i++) printf "%-*s  ", width[i], head[i]; print ""
        for (r = 1; r <= NR; r++) { for (i = 1; i <= 5; i++) printf "%-*s  ", width[i], cell[r, i]; print "" }
    }' "$BENCH_SUMMARY"
exit $status
