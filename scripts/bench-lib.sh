# bench-lib.sh: what the benchmark scripts share. Source it first thing:
#     . "$(dirname "$0")/bench-lib.sh"
# It stops at the first error (set -euo pipefail), moves to the repository's root and sets
# $bin, the directory of the release binaries. Timings are wall-clock microseconds; a figure is
# the median of many runs, with the fastest and slowest beside it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bin=${CARGO_TARGET_DIR:-target}/release

# build NAME...: builds these binaries (release), quietly: the exercises or ipcbench (a
# package of its own in the workspace).
build() {
    local args=() name
    for name; do args+=(--bin "$name"); done
    cargo build --release --quiet --workspace "${args[@]}"
}

# now_us: microseconds since the epoch, without starting a process (bash 5's EPOCHREALTIME), so
# that a wait loop costs no more than what it waits for.
now_us() {
    if [ -n "${EPOCHREALTIME:-}" ]; then
        local t=${EPOCHREALTIME/[.,]/}
        echo $((10#$t))
    else
        echo $(($(date +%s%N) / 1000))
    fi
}

# stats: numbers on stdin, one per line; prints "median min max".
stats() {
    sort -n | awk '{ v[NR] = $1 } END { if (NR == 0) exit 1; print v[int((NR + 1) / 2)], v[1], v[NR] }'
}

# repeat RUNS COMMAND...: runs COMMAND (which prints one number, e.g. microseconds) RUNS times;
# prints "median min max" of what it printed. Fails if one run fails.
repeat() {
    local runs=$1 i
    shift
    case $runs in '' | *[!0-9]* | 0) echo "bench: RUNS must be a positive number" >&2; return 2 ;; esac
    for ((i = 0; i < runs; i++)); do "$@" || return 1; done | stats
}

# ms MICROSECONDS: the same in milliseconds, two decimals.
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

# key_listed TABLE KEY: whether /proc/sysvipc/TABLE (msg, shm, sem) lists KEY (decimal); with
# builtins only, so that polling for it costs no process.
key_listed() {
    local listed _
    while read -r listed _; do [[ $listed == "$2" ]] && return 0; done </proc/sysvipc/"$1"
    return 1
}

# verdict VALUE <=|>= TARGET: "met" or "MISSED".
verdict() {
    awk -v v="$1" -v op="$2" -v t="$3" \
        'BEGIN { ok = (op == "<=") ? (v <= t) : (v >= t); print (ok ? "met" : "MISSED") }'
}

# summary BENCHMARK FIGURE MEASURED TARGET VERDICT: a row for the table at the end of
# `make bench` (appended to $BENCH_SUMMARY, when set).
summary() {
    if [ -n "${BENCH_SUMMARY:-}" ]; then printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$BENCH_SUMMARY"; fi
}

# time_pair: one run of a client–server pair, from functions the script defines: `server` is
# started in the background, `ready` is polled (at most 10 s) until it succeeds, then `client`
# runs, then the server is waited for. Prints the wall time in microseconds, from the server's
# start until both have ended; fails if either fails.
time_pair() {
    local start pid
    start=$(now_us)
    server >/dev/null &
    pid=$!
    until ready; do
        if (($(now_us) - start > 10000000)); then
            echo "bench: the server was not ready within 10 s" >&2
            kill "$pid" 2>/dev/null
            return 1
        fi
    done
    client >/dev/null || { echo "bench: the client failed" >&2; kill "$pid" 2>/dev/null; return 1; }
    wait "$pid" || { echo "bench: the server failed" >&2; return 1; }
    echo $(($(now_us) - start))
}

# pair_table LABEL RUNS MEDIAN MIN MAX: the table of a pair's wall times (microseconds given).
pair_table() {
    printf '%-40s %5s %11s %11s %11s\n' "pair (wall, server start to both ended)" runs median min max
    printf '%-40s %5d %8s ms %8s ms %8s ms\n' "$1" "$2" "$(ms "$3")" "$(ms "$4")" "$(ms "$5")"
}
