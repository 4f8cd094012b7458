#!/usr/bin/env bash
# make ipcclean [ID=N]: remove what a crashed or killed exercise left behind for lab ID N —
# the message queue 0x8000+N, the shared memory segment 0x9000+N and the FIFOs ./.fifo* —
# and say what was removed. (A leftover System V object survives until reboot otherwise.)
#
# ipcclean.sh --check N: remove nothing; name each leftover on stderr and exit 1 if there is any
# (make demo ends with this).
set -u
check=no
if [ "${1:-}" = --check ]; then
    check=yes
    shift
fi
id=${1:-0}
case $id in
    0[xX]*[!0-9a-fA-F]* | 0[xX]) valid=no ;;
    0[xX]*) valid=yes; n=$((16#${id#0[xX]})) ;;
    '' | *[!0-9]*) valid=no ;;
    *) valid=yes; n=$((10#$id)) ;;
esac
if [ "$valid" != yes ] || [ "$n" -ge 4096 ]; then
    echo "ipcclean: ID must be a number below 0x1000 (decimal or 0x-hex), not '$id'" >&2
    exit 2
fi

status=0
# exists TABLE KEY: whether /proc/sysvipc/TABLE lists KEY (its first column, in decimal)
exists() { awk -v key="$2" 'NR > 1 && $1 == key { found = 1 } END { exit !found }' "/proc/sysvipc/$1"; }

# handle WHAT REMOVE-COMMAND...: in --check mode report WHAT as left behind, else remove it
handle() {
    local what=$1
    shift
    if [ $check = yes ]; then
        echo "ipcclean: left behind: $what" >&2
        status=1
    elif "$@"; then
        echo "removed $what"
    else
        status=1
    fi
}

remove() { # remove TABLE KEY IPCRM-FLAG DESCRIPTION
    local hex
    hex=$(printf '0x%x' "$2")
    if exists "$1" "$2"; then
        handle "$4 $hex" ipcrm "$3" "$hex"
    elif [ $check = no ]; then
        echo "no $4 $hex"
    fi
}
remove msg $((0x8000 + n)) -Q "message queue"
remove shm $((0x9000 + n)) -M "shared memory segment"

found=no
for fifo in ./.fifo*; do
    [ -e "$fifo" ] || [ -L "$fifo" ] || continue
    found=yes
    handle "$fifo" rm -f -- "$fifo"
done
[ $found = yes ] || [ $check = yes ] || echo "no ./.fifo* files"
exit $status
