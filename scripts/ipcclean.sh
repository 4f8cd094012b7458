#!/usr/bin/env bash
# make ipcclean [ID=N]: remove what a crashed or killed exercise left behind for lab ID N —
# the message queue 0x8000+N, the shared memory segment 0x9000+N and the FIFOs ./.fifo* —
# and say what was removed. (A leftover System V object survives until reboot otherwise.)
set -u
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

remove() { # remove TABLE KEY IPCRM-FLAG DESCRIPTION
    local hex
    hex=$(printf '0x%x' "$2")
    if ! exists "$1" "$2"; then
        echo "no $4 $hex"
    elif ipcrm "$3" "$hex"; then
        echo "removed $4 $hex"
    else
        status=1
    fi
}
remove msg $((0x8000 + n)) -Q "message queue"
remove shm $((0x9000 + n)) -M "shared memory segment"

found=no
for fifo in ./.fifo*; do
    [ -e "$fifo" ] || [ -L "$fifo" ] || continue
    found=yes
    if rm -f -- "$fifo"; then echo "removed $fifo"; else status=1; fi
done
[ $found = yes ] || echo "no ./.fifo* files"
exit $status
