#!/usr/bin/env bash
# bench-mycp3: mycp3 against cp on a file in the page cache — median wall time of alternating
# runs, and mycp3's peak memory (RSS), which must stay small however large the file.
#
#   scripts/bench-mycp3.sh              # 1 GiB, 5 runs of each (the issue's figures)
#   BENCH_SIZE_MIB=256 BENCH_RUNS=3 scripts/bench-mycp3.sh
#   MYCP3_ARGS="--window 64M" scripts/bench-mycp3.sh      # try other windows
#   MYCP3_ARGS="--reserve ftruncate" scripts/bench-mycp3.sh  # the C version's way
#   BENCH_SPARSE_GIB=0 scripts/bench-mycp3.sh              # without the sparse file
#
# Then a sparse file, ${BENCH_SPARSE_GIB:-5} GiB of hole (`truncate -s 5G`), copied once by
# each: the wall time, and the disk blocks of the copy (a sparse copy has none).
#
# The files live in a new directory under ${BENCH_DIR:-${TMPDIR:-/tmp}} (needs twice the size
# free), which is removed at the end. Each copy is removed and `sync`ed away before the next run,
# outside the timing, so that writing back one run's copy does not slow down the next.
# Not part of `make test`: timings depend on the machine and on what else runs on it.
. "$(dirname "$0")/bench-lib.sh"

size_mib=${BENCH_SIZE_MIB:-1024}
runs=${BENCH_RUNS:-5}
read -r -a mycp3_args <<<"${MYCP3_ARGS:-}"

build mycp3
mycp3=$(cd "$bin" && pwd)/mycp3

dir=$(mktemp -d "${BENCH_DIR:-${TMPDIR:-/tmp}}/bench-mycp3.XXXXXX")
trap 'rm -rf "$dir"' EXIT
head -c "$((size_mib << 20))" /dev/urandom >"$dir/source"
cat "$dir/source" >/dev/null # in the page cache
sync

# run NAME COMMAND...: one timed run; appends "wall_ms cpu_ms peak_kib" to $dir/NAME.
# Wall time from now_us; CPU time (user + system) and peak RSS from /usr/bin/time if it is
# installed, else from python3's getrusage(RUSAGE_CHILDREN), else none ("-").
run() {
    local name=$1 start end usage
    shift
    rm -f "$dir/copy"
    sync
    start=$(now_us)
    if [ -x /usr/bin/time ]; then
        /usr/bin/time -f '%U %S %M' -o "$dir/usage" "$@"
        usage=$(tail -n1 "$dir/usage")
    elif command -v python3 >/dev/null; then
        usage=$(python3 -c 'import resource, subprocess, sys
subprocess.run(sys.argv[1:], check=True)
u = resource.getrusage(resource.RUSAGE_CHILDREN)
print(u.ru_utime, u.ru_stime, u.ru_maxrss)' "$@")
    else
        "$@"
        usage="- - -"
    fi
    end=$(now_us)
    cmp -s "$dir/source" "$dir/copy" || { echo "bench-mycp3: $name made a wrong copy" >&2; exit 1; }
    echo "$(((end - start) / 1000)) $usage" |
        awk '{ cpu = ($2 == "-") ? "-" : int(($2 + $3) * 1000 + 0.5); print $1, cpu, $4 }' >>"$dir/$name"
}

# One untimed run of each first: the first copies after making a big file are slow for both.
run warm-up cp "$dir/source" "$dir/copy"
run warm-up "$mycp3" "${mycp3_args[@]}" "$dir/source" "$dir/copy"
for _ in $(seq "$runs"); do
    run cp cp "$dir/source" "$dir/copy"
    run mycp3 "$mycp3" "${mycp3_args[@]}" "$dir/source" "$dir/copy"
done
rm -f "$dir/copy"

# median NAME COLUMN: the median of a column of $dir/NAME; peak NAME: the largest peak RSS
median() { cut -d' ' -f"$2" "$dir/$1" | stats | cut -d' ' -f1; }
peak() { cut -d' ' -f3 "$dir/$1" | stats | cut -d' ' -f3; }

fs=$(df --output=fstype "$dir" 2>/dev/null | tail -n1)
echo "mycp3${MYCP3_ARGS:+ $MYCP3_ARGS} against cp: a ${size_mib} MiB file in the page cache ($fs), $runs alternating runs each"
printf '%-6s %12s %12s %12s   %s\n' "" "median wall" "median CPU" "peak RSS" "wall of each run (ms)"
for name in cp mycp3; do
    printf '%-6s %9s ms %9s ms %8s KiB   %s\n' "$name" "$(median $name 1)" "$(median $name 2)" \
        "$(peak $name)" "$(cut -d' ' -f1 "$dir/$name" | paste -sd' ')"
done
ratio=$(awk -v m="$(median mycp3 1)" -v c="$(median cp 1)" 'BEGIN { printf "%.2f", m / c }')
cpu_ratio=$(awk -v m="$(median mycp3 2)" -v c="$(median cp 2)" 'BEGIN { printf "%.2f", (c > 0 ? m / c : 0) }')
peak_mib=$(awk -v r="$(peak mycp3)" 'BEGIN { printf "%.1f", r / 1024 }')
echo "mycp3/cp: wall $ratio (goal <= 0.60), CPU $cpu_ratio; mycp3 peak RSS $peak_mib MiB (goal <= 64 MiB)"
summary "mycp3 vs cp" "wall mycp3/cp, ${size_mib} MiB, median of $runs" "$ratio" "<= 0.60" "$(verdict "$ratio" "<=" 0.60)"
summary "mycp3" "peak RSS, ${size_mib} MiB" "$peak_mib MiB" "<= 64 MiB" "$(verdict "$peak_mib" "<=" 64)"

# sparse NAME COMMAND...: one copy of $dir/sparse; prints "NAME wall_ms blocks_of_the_copy".
sparse() {
    local name=$1 start end
    shift
    rm -f "$dir/sparse.copy"
    start=$(now_us)
    "$@" "$dir/sparse" "$dir/sparse.copy"
    end=$(now_us)
    [ "$(stat -c %s "$dir/sparse.copy")" = "$(stat -c %s "$dir/sparse")" ] ||
        { echo "bench-mycp3: $name made a copy of another size" >&2; exit 1; }
    echo "$name $(((end - start) / 1000)) $(stat -c %b "$dir/sparse.copy")"
}
sparse_gib=${BENCH_SPARSE_GIB:-5}
if [ "$sparse_gib" != 0 ]; then
    truncate -s "${sparse_gib}G" "$dir/sparse"
    echo "a sparse file: ${sparse_gib} GiB of hole, copied once by each"
    printf '%-6s %12s %16s\n' "" "wall" "copy's blocks"
    for copier in cp mycp3; do
        case $copier in cp) set -- cp ;; mycp3) set -- "$mycp3" "${mycp3_args[@]}" ;; esac
        copied=$(sparse "$copier" "$@")
        read -r name wall blocks <<<"$copied"
        printf '%-6s %9s ms %16s\n' "$name" "$wall" "$blocks"
    done
    summary "mycp3" "sparse ${sparse_gib} GiB: wall, blocks of the copy" "$wall ms, $blocks blocks" \
        "0 blocks" "$(verdict "$blocks" "<=" 0)"
    rm -f "$dir/sparse" "$dir/sparse.copy"
fi
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs (other work slows both, unevenly)"
