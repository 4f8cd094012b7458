#!/usr/bin/env bash
# bench-msgq: wall time of the message queue pair, `./msgq1 & ./msgq2`: from the server's start
# until both have ended, the client started as soon as the queue exists (as in class). Median,
# min and max of RUNS runs (default 31), release build, lab ID $IPCLAB_ID (default 0).
#
# The C pair needs about 1.05 s: its msgq1 sleep(1)s before removing the queue, hoping the
# client has read the reply by then. msgq1 here removes the queue as soon as the reply has been
# taken (IPC_STAT polling), so the pair costs two process starts and a hand-off.
#
# Usage: scripts/bench-msgq.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."

runs=${1:-31}
id=${IPCLAB_ID:-0}
case $runs in '' | *[!0-9]* | 0) echo "bench-msgq: RUNS must be a positive number" >&2; exit 2 ;; esac
key=$((0x8000 + id))
bin=${CARGO_TARGET_DIR:-target}/release
cargo build --release --quiet --bin msgq1 --bin msgq2

# queue_exists: whether /proc/sysvipc/msg lists the key (read with builtins only: no fork, so
# the wait for the server costs no more than the server needs).
queue_exists() {
    local listed _
    while read -r listed _; do [[ $listed == "$key" ]] && return 0; done </proc/sysvipc/msg
    return 1
}
if queue_exists; then
    echo "bench-msgq: queue $(printf '%#x' $key) exists already; make ipcclean ID=$id, or set IPCLAB_ID" >&2
    exit 1
fi

server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null' EXIT
micros=()
for ((run = 0; run < runs; run++)); do
    start=${EPOCHREALTIME/./}
    "$bin/msgq1" --id "$id" --timeout 10 >/dev/null &
    server=$!
    until queue_exists; do
        if ((${EPOCHREALTIME/./} - start > 10000000)); then
            echo "bench-msgq: msgq1 made no queue within 10 s" >&2
            exit 1
        fi
    done
    "$bin/msgq2" --id "$id" --timeout 10 >/dev/null
    wait "$server"
    server=
    micros+=($((${EPOCHREALTIME/./} - start)))
done

mapfile -t sorted < <(printf '%s\n' "${micros[@]}" | sort -n)
ms() { printf '%d.%02d ms' $(($1 / 1000)) $(($1 % 1000 / 10)); }
median=${sorted[$((runs / 2))]}
printf '%-36s %5s %11s %11s %11s\n' "pair (wall, server start to both ended)" runs median min max
printf '%-36s %5d %11s %11s %11s\n' "msgq1 & msgq2 (this suite)" "$runs" \
    "$(ms "$median")" "$(ms "${sorted[0]}")" "$(ms "${sorted[$((runs - 1))]}")"
printf '%-36s %5s %11s\n' "C msgq1 & msgq2 (sleep(1))" "-" "~1050 ms"
printf 'ratio: the C pair takes about %d times as long; target <= 10 ms: %s\n' \
    $((1050000 / median)) "$( ((median <= 10000)) && echo met || echo MISSED)"
