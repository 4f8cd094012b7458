#!/usr/bin/env bash
# make setup: install the system tools the tests, the demo and the lab manual use, with the
# distribution's package manager where it can (as root, or with sudo); else print the command.
# setup.sh --check: install nothing; if a tool is missing, say which and exit 1 (make test
# runs this first, so that a missing tool is one clear message, not a dozen failed tests).
#
# The tools: make; more, ipcs, ipcrm, setsid, setpriv, taskset, mount, unshare (util-linux);
# script (a terminal for the --step tests: bsdutils or util-linux); perl with its core IPC::SysV
# module (leftover objects for the ipcclean tests, C-shaped records in labs.md); bash; strace
# (labs.md's strace commands, and --trace is compared with it); a C compiler for the C peers of
# the tests (without one those tests say SKIPPED).
set -u
tools=(make more ipcs ipcrm setsid setpriv taskset mount unshare script perl bash strace)

missing=()
for tool in "${tools[@]}"; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if command -v perl >/dev/null 2>&1 && ! perl -MIPC::SysV -e 1 >/dev/null 2>&1; then
    missing+=("perl's IPC::SysV")
fi
compiler=${CC:-cc}
no_compiler=
command -v "${compiler%% *}" >/dev/null 2>&1 || no_compiler="a C compiler ($compiler)"

if [ "${1:-}" = --check ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: missing: ${missing[*]}. Run make setup (it installs them), then try again." >&2
        exit 1
    fi
    [ -z "$no_compiler" ] || echo "setup: no $no_compiler: the C-peer tests say SKIPPED (make setup installs one)" >&2
    exit 0
fi

[ -z "$no_compiler" ] || missing+=("$no_compiler")
if [ ${#missing[@]} -eq 0 ]; then
    echo "setup: every tool is there"
    exit 0
fi
echo "setup: missing: ${missing[*]}"
sudo=
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && sudo=sudo
if command -v apt-get >/dev/null 2>&1; then
    command=(apt-get install -y make util-linux bsdutils perl bash coreutils strace gcc libc6-dev)
    update=(apt-get update -qq)
elif command -v dnf >/dev/null 2>&1; then
    command=(dnf install -y make util-linux perl perl-IPC-SysV bash coreutils strace gcc)
    update=(true)
elif command -v pacman >/dev/null 2>&1; then
    command=(pacman -S --needed --noconfirm make util-linux perl bash coreutils strace gcc)
    update=(true)
else
    echo "setup: no package manager known here (apt-get, dnf, pacman): install them by hand" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then
    echo "setup: not root and no sudo; run as root: ${update[*]} && ${command[*]}" >&2
    exit 1
fi
echo "setup: ${command[*]}"
DEBIAN_FRONTEND=noninteractive $sudo "${update[@]}" && DEBIAN_FRONTEND=noninteractive $sudo "${command[@]}" \
    || { echo "setup: the installation failed; run it by hand: ${command[*]}" >&2; exit 1; }
exec "$0" --check
