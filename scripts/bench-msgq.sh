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
. "$(dirname "$0")/bench-lib.sh"

runs=${1:-31}
id=${IPCLAB_ID:-0}
build msgq1 msgq2 ipcclean
read -r key _ < <("$bin/ipcclean" --keys) || exit 1 # the one parser of a lab ID

if key_listed msg $key; then
    echo "bench-msgq: queue $(printf '%#x' $key) exists already; make ipcclean ID=$id, or set IPCLAB_ID" >&2
    exit 1
fi

# The pair, for time_pair: the client starts as soon as the queue exists.
server() { "$bin/msgq1" --id "$id" --timeout 10; }
ready() { key_listed msg $key; }
client() { "$bin/msgq2" --id "$id" --timeout 10; }

read -r median min max < <(repeat "$runs" time_pair)
verdict=$(verdict "$(ms "$median")" "<=" 10)
pair_table "msgq1 & msgq2 (this suite)" "$runs" "$median" "$min" "$max"
printf '%-40s %5s %11s\n' "C msgq1 & msgq2 (sleep(1))" "-" "~1050 ms"
printf 'ratio: the C pair takes about %d times as long; target <= 10 ms: %s\n' \
    $((1050000 / median)) "$verdict"
summary "msgq1 & msgq2" "wall, median of $runs" "$(ms "$median") ms" "<= 10 ms" "$verdict"
