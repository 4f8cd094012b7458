#!/usr/bin/env bash
# bench-shm.sh [RUNS]: the wall time of one sipc1/sipc2 exchange (both programs started together,
# until both have ended), median of RUNS runs (default 21), on all CPUs and with both pinned to
# one CPU (taskset -c 0). On one CPU a busy wait that never yields stalls for a scheduler tick per
# hand-off; the C pair takes 1.05 s because of its sleep(1). Target: median <= 10 ms in both.
# Uses lab ID $IPCLAB_ID (default 0). Exit status 1 if a median misses the target.
set -u -o pipefail
cd "$(dirname "$0")/.."

runs=${1:-21}
target_ms=10
bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release --quiet --bin sipc1 --bin sipc2 || exit 1

# now_us: microseconds since the epoch, without starting a process (bash 5's EPOCHREALTIME).
now_us() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local t=${EPOCHREALTIME/[.,]/}
        echo $((10#$t))
    else
        echo $(($(date +%s%N) / 1000))
    fi
}

# one_pair PREFIX...: runs the pair once (each under PREFIX, e.g. taskset -c 0) and prints its
# wall time in microseconds. With $args=--version: the cost of starting the two programs alone.
args=(--timeout 10)
one_pair() {
    local start end server
    start=$(now_us)
    "$@" "$bin/sipc1" "${args[@]}" >/dev/null &
    server=$!
    "$@" "$bin/sipc2" "${args[@]}" >/dev/null || { echo "bench-shm: sipc2 failed" >&2; return 1; }
    wait $server || { echo "bench-shm: sipc1 failed" >&2; return 1; }
    end=$(now_us)
    echo $((end - start))
}

# stats PREFIX...: "median min max" in ms over $runs runs
stats() {
    local times=() i t
    for ((i = 0; i < runs; i++)); do
        t=$(one_pair "$@") || return 1
        times+=("$t")
    done
    printf '%s\n' "${times[@]}" | sort -n |
        awk '{ v[NR] = $1 } END { printf "%.2f %.2f %.2f\n", v[int((NR + 1) / 2)] / 1000, v[1] / 1000, v[NR] / 1000 }'
}

status=0
printf '%-26s %10s %10s %10s  %s\n' "sipc1 + sipc2 ($runs runs)" "median ms" "min ms" "max ms" "target <= $target_ms ms"
for mode in "all CPUs" "one CPU (taskset -c 0)"; do
    if [ "$mode" = "all CPUs" ]; then prefix=(env); else prefix=(taskset -c 0); fi
    read -r median min max < <(stats "${prefix[@]}") || { status=1; continue; }
    verdict=ok
    awk -v m="$median" -v t="$target_ms" 'BEGIN { exit !(m > t) }' && { verdict=MISSED; status=1; }
    printf '%-26s %10s %10s %10s  %s\n' "$mode" "$median" "$min" "$max" "$verdict"
done
args=(--version)
read -r median min max < <(stats taskset -c 0) &&
    printf '%-26s %10s %10s %10s  %s\n' "start-up alone, one CPU" "$median" "$min" "$max" "(--version: no exchange)"
./scripts/ipcclean.sh --check "${IPCLAB_ID:-0}" || status=1
exit $status
