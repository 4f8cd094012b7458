#!/usr/bin/env bash
# bench-mycp3: mycp3 against cp on a file in the page cache — median wall time of alternating
# runs, and mycp3's peak memory (RSS), which must stay small however large the file.
#
#   scripts/bench-mycp3.sh              # 1 GiB, 5 runs of each (the issue's figures)
#   BENCH_SIZE_MIB=256 BENCH_RUNS=3 scripts/bench-mycp3.sh
#   MYCP3_ARGS="--window 64M" scripts/bench-mycp3.sh      # try other windows
#   MYCP3_ARGS="--reserve ftruncate" scripts/bench-mycp3.sh  # the C version's way
#
# The files live in a new directory under ${BENCH_DIR:-${TMPDIR:-/tmp}} (needs twice the size
# free), which is removed at the end. Each copy is removed and `sync`ed away before the next run,
# outside the timing, so that writing back one run's copy does not slow down the next.
# Not part of `make test`: timings depend on the machine and on what else runs on it.
set -euo pipefail
cd "$(dirname "$0")/.."

size_mib=${BENCH_SIZE_MIB:-1024}
runs=${BENCH_RUNS:-5}
read -r -a mycp3_args <<<"${MYCP3_ARGS:-}"

cargo build --release --quiet --bin mycp3
mycp3=$(pwd)/${CARGO_TARGET_DIR:-target}/release/mycp3

dir=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bench-mycp3.XXXXXX")
trap 'rm -rf "$dir"' EXIT
head -c "$((size_mib << 20))" /dev/urandom >"$dir/source"
cat "$dir/source" >/dev/null # in the page cache
sync

# run NAME COMMAND...: one timed run; appends "seconds peak_kib" to $dir/NAME.
# Peak RSS: /usr/bin/time's maximum resident set size if it is installed, else python3's
# getrusage(RUSAGE_CHILDREN), else none.
run() {
    local name=$1 start end peak
    shift
    rm -f "$dir/copy"
    sync
    start=$(date +%s%N)
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f %M -o "$dir/rss" "$@"
        peak=$(tail -n1 "$dir/rss")
    elif command -v python3 >/dev/null; then
        peak=$(python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)' "$@")
    else
        "$@"
        peak=-
    fi
    end=$(date +%s%N)
    cmp -s "$dir/source" "$dir/copy" || { echo "bench-mycp3: $name made a wrong copy" >&2; exit 1; }
    echo "$(((end - start) / 1000000)) $peak" >>"$dir/$name"
}

for _ in $(seq "$runs"); do
    run cp cp "$dir/source" "$dir/copy"
    run mycp3 "$mycp3" "${mycp3_args[@]}" "$dir/source" "$dir/copy"
done
rm -f "$dir/copy"

# median FILE COLUMN: the median of a column of numbers
median() { sort -n -k"$2" "$1" | awk -v c="$2" '{ v[NR] = $c } END { print v[int((NR + 1) / 2)] }'; }
cp_ms=$(median "$dir/cp" 1)
mycp3_ms=$(median "$dir/mycp3" 1)
mycp3_rss=$(sort -n -k2 "$dir/mycp3" | tail -n1 | cut -d' ' -f2)
cp_rss=$(sort -n -k2 "$dir/cp" | tail -n1 | cut -d' ' -f2)

fs=$(df --output=fstype "$dir" 2>/dev/null | tail -n1)
echo "mycp3 ${mycp3_args[*]} against cp: a ${size_mib} MiB file in the page cache ($fs), $runs alternating runs each"
printf '%-8s %12s %24s %14s\n' "" "median wall" "all runs (ms)" "peak RSS"
for name in cp mycp3; do
    all=$(cut -d' ' -f1 "$dir/$name" | paste -sd' ')
    peak=$([ "$name" = cp ] && echo "$cp_rss" || echo "$mycp3_rss")
    printf '%-8s %9s ms %24s %10s KiB\n' "$name" "$([ "$name" = cp ] && echo "$cp_ms" || echo "$mycp3_ms")" "$all" "$peak"
done
awk -v m="$mycp3_ms" -v c="$cp_ms" -v r="$mycp3_rss" 'BEGIN {
    printf "ratio mycp3/cp: %.2f (goal <= 0.60); mycp3 peak RSS %.1f MiB (goal <= 64 MiB)\n", m / c, r / 1024 }'
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
