#!/usr/bin/env bash
# make demo: run every exercise once, in lecture order, each under a heading — pairs as in class,
# the server in the background and the client after it. Leaves no IPC object or .fifo* behind,
# and checks that at the end.
set -u -o pipefail
cd "$(dirname "$0")/.."

failed=()
heading() { printf '\n===== %s =====\n' "$*"; }
# show COMMAND...: print a heading, run the command, remember if it failed
show() {
    heading "$*"
    "$@" || failed+=("$*")
}
# wait_for_file PATH: until PATH exists (a server is ready), for at most 10 s
wait_for_file() {
    for _ in $(seq 200); do [ -e "$1" ] && return 0; sleep 0.05; done
    echo "demo: $1 did not appear" >&2
    return 1
}

show ./pipe
show ./sync
show ./mymore --pager "${DEMO_PAGER:-more}" -- ls -l src/bin

# In class the two sides run in two terminals; here they share one, so each line says whose it is
# (`sed -u` passes each line on as soon as it is complete).
label() { sed -u "s/^/$1 | /"; }

heading "./fifos & ./fifoc; ./fifoc; kill -INT (server in the background, stopped with Ctrl-C)"
./fifos --timeout 30 > >(label "fifos") &
server=$!
trap 'kill $server 2>/dev/null' EXIT
if wait_for_file .fifo; then
    ls -l .fifo | label "ls -l"
    ./fifoc --timeout 10 | label "fifoc" || failed+=("./fifoc")
    ./fifoc --timeout 10 | label "fifoc" || failed+=("./fifoc")
fi
kill -INT $server
wait $server || failed+=("./fifos")
trap - EXIT

# wait_for_queue KEY: until the System V queue with KEY (e.g. 0x8000) exists, for at most 10 s
wait_for_queue() {
    for _ in $(seq 200); do
        awk -v key=$(($1)) 'NR > 1 && $1 == key { found = 1 } END { exit !found }' \
            /proc/sysvipc/msg && return 0
        sleep 0.05
    done
    echo "demo: queue $1 did not appear" >&2
    return 1
}

# The lab's keys, from the one parser of a lab ID (IPCLAB_ID=010 is ten, not octal eight).
read -r queue_key segment_key < <(./ipcclean --keys) || exit 1
heading "./msgq1 & ./msgq2 (server in the background; ipcs -q while it waits)"
./msgq1 --timeout 30 > >(label "msgq1") &
server=$!
trap 'kill $server 2>/dev/null' EXIT
if wait_for_queue "$queue_key"; then
    ipcs -q | grep -i -e '^key' -e "$(printf '0x%08x' "$queue_key")" | label "ipcs -q"
    ./msgq2 --timeout 10 | label "msgq2" || failed+=("./msgq2")
fi
wait $server || failed+=("./msgq1")
trap - EXIT

show ./shm --maps

# wait_for_server KEY: until segment KEY exists with a process attached (sipc1 waits), for 10 s
wait_for_server() {
    for _ in $(seq 200); do
        awk -v key="$(($1))" 'NR > 1 && $1 == key && $7 > 0 { found = 1 } END { exit !found }' \
            /proc/sysvipc/shm && return 0
        sleep 0.05
    done
    echo "demo: no sipc1 attached to segment $1" >&2
    return 1
}

heading "./sipc1 & ./sipc2 (server in the background; ipcs -m while it waits)"
key=$segment_key
./sipc1 --timeout 30 > >(label "sipc1") &
server=$!
trap 'kill $server 2>/dev/null' EXIT
if wait_for_server $key; then
    ipcs -m | awk -v key="$(printf '0x%08x' $key)" 'NR <= 3 || $1 == key' | label "ipcs -m"
    ./sipc2 --timeout 10 | label "sipc2" || failed+=("./sipc2")
fi
wait $server || failed+=("./sipc1")
trap - EXIT

# mycp3 copies into a directory of its own (removed at the end): ls -l before and after.
copies=$(mktemp -d)
trap 'rm -rf "$copies"' EXIT
heading "./mycp3 labs.md $copies/labs.md (ls -l before and after; cmp)"
ls -l labs.md "$copies" | label "before the copy"
./mycp3 labs.md "$copies/labs.md" || failed+=("./mycp3")
ls -l labs.md "$copies" | label "after the copy"
cmp labs.md "$copies/labs.md" && echo "cmp: the copy is identical" || failed+=("cmp after ./mycp3")
rm -rf "$copies"
trap - EXIT

show ./mipc

# Nothing may be left behind: no .fifo*, no queue or segment of this lab ID.
echo
./ipcclean --check || failed+=("cleanup")

if [ ${#failed[@]} -gt 0 ]; then
    printf 'demo: failed: %s\n' "${failed[@]}" >&2
    exit 1
fi
echo "demo: every exercise ran; nothing was left behind."
