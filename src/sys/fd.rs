//! The lecture's system calls on pipes, FIFOs and files, under the slides' names and in the C
//! argument order, each said by classroom mode ([`crate::sys::trace`]) as it happens
//! (`[pipe 4712] read(3, "Hello, World!\n", 4096) = 14`). Descriptors are owned (`OwnedFd`):
//! one that is not closed by hand is closed when dropped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, RenameFlags, AT_FDCWD};
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::Whence;

use super::trace::{self, Pause};
use crate::layout::text;

/// How much of a buffer a trace line shows.
const SHOWN: usize = 40;

/// `pipe(fd)`: a read end and a write end, in that order (`fd[0]`, `fd[1]`).
pub fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    trace::call_shown(
        || "pipe(fd)".to_string(),
        nix::unistd::pipe,
        |(read_end, write_end)| format!("pipe([{}, {}]) = 0", raw(read_end), raw(write_end)),
        false,
    )
}

/// `close(fd)` (a cleanup call: see [`trace::cleanup_call`]).
pub fn close(fd: OwnedFd) -> nix::Result<()> {
    let describe = format!("close({})", raw(&fd));
    zero(|| describe, || nix::unistd::close(fd), Pause::NeverEnds)
}

/// `read(fd, buf, sizeof buf)`: the number of bytes read, 0 at end-of-file.
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> nix::Result<usize> {
    read_shown(fd, buf, as_text)
}

/// [`read()`] whose trace shows the bytes read as `show` says (a record decoded, say).
pub fn read_shown(fd: impl AsFd, buf: &mut [u8], show: fn(&[u8]) -> String) -> nix::Result<usize> {
    read_waiting(fd, buf, show, || Ok(()))
}

/// [`read_shown`] for a read that waits for its writer: `ready` waits until `fd` has something
/// to read (with [`crate::rt::wait`]: `--timeout` and a termination signal end it), as part of
/// the call, so that classroom mode says the read when the wait starts (`--step` stops before
/// it; `--trace-time` says `<unfinished …>` then), as C's blocking `read` would be said. A wait
/// that fails fails the read with its errno ([`crate::rt::wait::errno_of`]), the read not made.
pub fn read_waiting(
    fd: impl AsFd,
    buf: &mut [u8],
    show: fn(&[u8]) -> String,
    ready: impl FnOnce() -> nix::Result<()>,
) -> nix::Result<usize> {
    if !trace::enabled() {
        ready()?;
        return nix::unistd::read(fd.as_fd(), buf);
    }
    let (number, size) = (raw(&fd), buf.len());
    trace::call_shown(
        || format!("read({number}, buf, {size})"),
        || {
            ready()?;
            nix::unistd::read(fd.as_fd(), buf).map(|n| (n, show(&buf[..n])))
        },
        |(n, data)| format!("read({number}, {data}, {size}) = {n}"),
        true, // it may wait for the writer
    )
    .map(|(n, _)| n)
}

/// `write(fd, buf, count)`: the number of bytes written.
pub fn write(fd: impl AsFd, buf: &[u8]) -> nix::Result<usize> {
    write_shown(fd, buf, as_text)
}

/// [`write()`] whose trace shows the bytes as `show` says (a record decoded, say).
pub fn write_shown(fd: impl AsFd, buf: &[u8], show: fn(&[u8]) -> String) -> nix::Result<usize> {
    written(fd, buf, show, || Ok(()), Pause::EndedBySignal)
}

/// [`write_shown`] for a write that waits for room (a full FIFO): `ready` waits until `fd` can
/// be written, as part of the call (see [`read_waiting`]).
pub fn write_waiting(
    fd: impl AsFd,
    buf: &[u8],
    show: fn(&[u8]) -> String,
    ready: impl FnOnce() -> nix::Result<()>,
) -> nix::Result<usize> {
    written(fd, buf, show, ready, Pause::Blocking)
}

fn written(
    fd: impl AsFd,
    buf: &[u8],
    show: fn(&[u8]) -> String,
    ready: impl FnOnce() -> nix::Result<()>,
    pause: Pause,
) -> nix::Result<usize> {
    let describe = || format!("write({}, {}, {})", raw(&fd), show(buf), buf.len());
    let make = || {
        ready()?;
        nix::unistd::write(fd.as_fd(), buf)
    };
    trace::traced(describe, make, usize::to_string, pause)
}

/// How a trace shows bytes read or written: a C string, its first 40 bytes.
pub fn as_text(bytes: &[u8]) -> String {
    text::string(bytes, SHOWN)
}

/// `write` until all of `buf` is written; `EINTR` once a termination signal is caught.
pub fn write_all(fd: impl AsFd, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match write(fd.as_fd(), buf) {
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => crate::rt::signals::check().map_err(|_| Errno::EINTR)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `dup2(fd, 1)`: makes `fd` the standard output.
pub fn dup2_stdout(fd: impl AsFd) -> nix::Result<()> {
    let describe = || format!("dup2({}, 1)", raw(&fd));
    trace::call(describe, || nix::unistd::dup2_stdout(&fd), |()| "1".into())
}

/// `dup2(fd, 0)`: makes `fd` the standard input.
pub fn dup2_stdin(fd: impl AsFd) -> nix::Result<()> {
    let describe = || format!("dup2({}, 0)", raw(&fd));
    trace::call(describe, || nix::unistd::dup2_stdin(&fd), |()| "0".into())
}

/// `open(path, flags, mode)`: always with `O_CLOEXEC` added (not shown: it only keeps the
/// descriptor out of programs we `exec`).
pub fn open(path: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    let describe = || {
        let (path, shown) = (quoted(path), open_flags(flags));
        match flags.intersects(OFlag::O_CREAT) || flags.contains(OFlag::O_TMPFILE) {
            true => format!("open({path}, {shown}, {:04o})", mode.bits()),
            false => format!("open({path}, {shown})"),
        }
    };
    let make = || nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, mode);
    trace::call(describe, make, |fd| raw(fd).to_string())
}

/// `mkfifo(path, mode)`.
pub fn mkfifo(path: &Path, mode: Mode) -> nix::Result<()> {
    let describe = || format!("mkfifo({}, {:04o})", quoted(path), mode.bits());
    let make = || nix::unistd::mkfifo(path, mode);
    zero(describe, make, Pause::EndedBySignal)
}

/// `unlink(path)` (a cleanup call: see [`trace::cleanup_call`]).
pub fn unlink(path: &Path) -> nix::Result<()> {
    let describe = || format!("unlink({})", quoted(path));
    zero(describe, || nix::unistd::unlink(path), Pause::NeverEnds)
}

/// `rename(from, to)`: atomically replaces `to` (if it exists) by `from`.
pub fn rename(from: &Path, to: &Path) -> nix::Result<()> {
    renameat(from, to, RenameFlags::empty(), Pause::EndedBySignal)
}

/// `rename(from, to)` with no classroom pause of its own ([`trace::call_unpaused`]).
pub fn rename_at_once(from: &Path, to: &Path) -> nix::Result<()> {
    renameat(from, to, RenameFlags::empty(), Pause::None)
}

/// `renameat2(from, to, RENAME_NOREPLACE)`: `rename`, but failing with `EEXIST` instead of
/// replacing a file already at `to`.
pub fn rename_noreplace(from: &Path, to: &Path) -> nix::Result<()> {
    renameat(
        from,
        to,
        RenameFlags::RENAME_NOREPLACE,
        Pause::EndedBySignal,
    )
}

fn renameat(from: &Path, to: &Path, flags: RenameFlags, pause: Pause) -> nix::Result<()> {
    let describe = || {
        let (from, to) = (quoted(from), quoted(to));
        match flags.is_empty() {
            true => format!("rename({from}, {to})"),
            false => format!("renameat2({from}, {to}, RENAME_NOREPLACE)"),
        }
    };
    let make = || match flags.is_empty() {
        true => nix::fcntl::renameat(AT_FDCWD, from, AT_FDCWD, to),
        false => nix::fcntl::renameat2(AT_FDCWD, from, AT_FDCWD, to, flags),
    };
    zero(describe, make, pause)
}

/// `lseek(fd, offset, whence)`; with `SEEK_DATA` or `SEEK_HOLE`: where the next data or hole
/// starts at or after `offset` (`ENXIO`: past the end).
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: Whence) -> nix::Result<i64> {
    let names = ["SEEK_SET", "SEEK_CUR", "SEEK_END", "SEEK_DATA", "SEEK_HOLE"]; // Linux's values
    let name = names.get(whence as usize).unwrap_or(&"SEEK_?");
    let describe = || format!("lseek({}, {offset}, {name})", raw(&fd));
    let make = || nix::unistd::lseek(fd, offset, whence);
    trace::call(describe, make, i64::to_string)
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: Mode) -> nix::Result<()> {
    let describe = || format!("fchmod({}, 0{:o})", raw(&fd), mode.bits());
    let make = || nix::sys::stat::fchmod(fd, mode);
    zero(describe, make, Pause::EndedBySignal)
}

/// `linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, path, AT_SYMLINK_FOLLOW)`: names the file
/// without a name (`O_TMPFILE`) open as `fd` (`EEXIST` if `path` is taken).
pub fn link_unnamed(fd: BorrowedFd<'_>, path: &Path) -> nix::Result<()> {
    let open_file = format!("/proc/self/fd/{}", raw(&fd));
    let open_file = Path::new(&open_file);
    let describe = || {
        let (from, to) = (quoted(open_file), quoted(path));
        format!("linkat(AT_FDCWD, {from}, AT_FDCWD, {to}, AT_SYMLINK_FOLLOW)")
    };
    let follow = AtFlags::AT_SYMLINK_FOLLOW;
    let make = || nix::unistd::linkat(AT_FDCWD, open_file, AT_FDCWD, path, follow);
    zero(describe, make, Pause::EndedBySignal)
}

/// A call that returns 0 when it succeeds, traced with the pause `pause` ([`trace::traced`]).
pub(super) fn zero(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<()>,
    pause: Pause,
) -> nix::Result<()> {
    trace::traced(describe, make, |()| "0".into(), pause)
}

pub(super) fn raw(fd: &impl AsFd) -> i32 {
    fd.as_fd().as_raw_fd()
}

fn quoted(path: &Path) -> String {
    text::string(path.as_os_str().as_bytes(), SHOWN * 2)
}

/// `O_WRONLY|O_NONBLOCK`: the access mode, then the flags the lecture talks about.
fn open_flags(flags: OFlag) -> String {
    let access = match flags & OFlag::O_ACCMODE {
        OFlag::O_WRONLY => "O_WRONLY",
        OFlag::O_RDWR => "O_RDWR",
        _ => "O_RDONLY",
    };
    let names = "O_CREAT O_EXCL O_TRUNC O_APPEND O_NONBLOCK O_NOFOLLOW O_NOCTTY O_TMPFILE";
    let set = |name: &&str| OFlag::from_name(name).is_some_and(|flag| flags.contains(flag));
    let set = names.split(' ').filter(set);
    set.fold(access.to_string(), |shown, name| shown + "|" + name)
}

/// What kind of file `stat` is, in words (`a directory`), unless it is of the kind `wanted`
/// (`S_IFREG`, `S_IFCHR`).
pub(crate) fn other_kind(stat: &FileStat, wanted: SFlag) -> Option<&'static str> {
    let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    let name = match kind {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        _ => "of an unknown kind",
    };
    (kind != wanted).then_some(name)
}

/// The size of the terminal `fd` is, as (rows, columns) (`ioctl(TIOCGWINSZ)`, untraced: the
/// suite's own look, no lecture call); `None` if it is none or will not say its width (a
/// terminal may not know its rows: then 0).
pub fn window_size(fd: BorrowedFd<'_>) -> Option<(usize, usize)> {
    // SAFETY: winsize is plain integers; all-zero bytes are a valid value.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into `size`, a live local; `fd` is open for the
    // call.
    let done = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut size) };
    (done == 0 && size.ws_col > 0).then(|| (usize::from(size.ws_row), usize::from(size.ws_col)))
}
