#!/usr/bin/env bash
# bench-shm.sh [RUNS]: the wall time of one sipc1/sipc2 exchange (both programs started together,
# until both have ended), median of RUNS runs (default 21), on all CPUs and with both pinned to
# one CPU (taskset -c 0). On one CPU a busy wait that never yields stalls for a scheduler tick per
# hand-off; the C pair takes 1.05 s because of its sleep(1). Target: median <= 10 ms in both.
# Uses lab ID $IPCLAB_ID (default 0). Exit status 1 if a median misses the target.
. "$(dirname "$0")/bench-lib.sh"
set +e # a missed target is reported, and the other figures still measured

runs=${1:-21}
target_ms=10
build sipc1 sipc2 || exit 1

# one_pair PREFIX...: runs the pair once (each under PREFIX, e.g. taskset -c 0) and prints its
# wall time in microseconds. With $args=--version: the cost of starting the two programs alone.
args=(--timeout 10)
one_pair() {
    local start server
    start=$(now_us)
    "$@" "$bin/sipc1" "${args[@]}" >/dev/null &
    server=$!
    "$@" "$bin/sipc2" "${args[@]}" >/dev/null || { echo "bench-shm: sipc2 failed" >&2; return 1; }
    wait $server || { echo "bench-shm: sipc1 failed" >&2; return 1; }
    echo $(($(now_us) - start))
}

status=0
printf '%-26s %10s %10s %10s  %s\n' "sipc1 + sipc2 ($runs runs)" "median ms" "min ms" "max ms" "target <= $target_ms ms"
for mode in "all CPUs" "one CPU (taskset -c 0)"; do
    if [ "$mode" = "all CPUs" ]; then prefix=(env); else prefix=(taskset -c 0); fi
    read -r median min max < <(repeat "$runs" one_pair "${prefix[@]}") || { status=1; continue; }
    verdict=$(verdict "$(ms "$median")" "<=" "$target_ms")
    [ "$verdict" = met ] || status=1
    printf '%-26s %10s %10s %10s  %s\n' "$mode" "$(ms "$median")" "$(ms "$min")" "$(ms "$max")" "$verdict"
    summary "sipc1 + sipc2" "wall, median of $runs, $mode" "$(ms "$median") ms" "<= $target_ms ms" "$verdict"
done
args=(--version)
read -r median min max < <(repeat "$runs" one_pair taskset -c 0) &&
    printf '%-26s %10s %10s %10s  %s\n' "start-up alone, one CPU" "$(ms "$median")" "$(ms "$min")" "$(ms "$max")" "(--version: no exchange)"
build ipcclean && "$bin/ipcclean" --check || status=1
exit $status
