#!/usr/bin/env bash
# make demo: run every exercise once, in lecture order, each under a heading — pairs as in class,
# the server in the background and the client after it. Leaves no IPC object or .fifo* behind.
set -u
cd "$(dirname "$0")/.."

failed=()
heading() { printf '\n===== %s =====\n' "$*"; }
# show COMMAND...: print a heading, run the command, remember if it failed
show() {
    heading "$*"
    "$@" || failed+=("$*")
}

show ./pipe
show ./sync
show ./mymore --pager "${DEMO_PAGER:-more}" -- ls -l src/bin

echo
if [ ${#failed[@]} -gt 0 ]; then
    printf 'demo: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "demo: every exercise ran; nothing was left behind."
