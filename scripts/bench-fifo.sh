#!/usr/bin/env bash
# bench-fifo: wall time of the FIFO pair, `./fifos --count 1 & ./fifoc`: from the server's start
# until both have ended, the client started as soon as `.fifo` is there (the server makes it
# under another name, opens it and only then renames it, so it is served from the moment it
# appears). Median, min and max of RUNS runs (default 21), release build, in a temporary
# directory (--dir) that is removed at the end.
#
# Usage: scripts/bench-fifo.sh [RUNS]
. "$(dirname "$0")/bench-lib.sh"

runs=${1:-21}
build fifos fifoc
dir=$(mktemp -d "${TMPDIR:-/tmp}/bench-fifo.XXXXXX")
trap 'rm -rf "$dir"' EXIT

# The pair, for time_pair: the client starts as soon as .fifo is there.
server() { "$bin/fifos" --dir "$dir" --count 1 --timeout 10; }
ready() { [ -p "$dir/.fifo" ]; }
client() { "$bin/fifoc" --dir "$dir" --timeout 10; }

read -r median min max < <(repeat "$runs" time_pair)
pair_table "fifos --count 1 & fifoc" "$runs" "$median" "$min" "$max"
summary "fifos & fifoc" "wall, median of $runs" "$(ms "$median") ms" "-" "-"
