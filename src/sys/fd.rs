//! The lecture's system calls on pipes, FIFOs, files and processes, under the slides' names,
//! each said by classroom mode ([`crate::trace`]) as it happens:
//!
//! ```text
//! [pipe 4711] pipe([3, 4]) = 0
//! [pipe 4712] read(3, "Hello, World!\n", 4096) = 14
//! [fifos 4700] open("./.fifo4712", O_WRONLY|O_NONBLOCK) = 5
//! ```
//!
//! Each is a thin wrapper over nix that keeps the C name and argument order; descriptors are
//! owned (`OwnedFd`), so one that is not closed by hand is closed when dropped.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, AT_FDCWD};
use nix::sys::stat::Mode;
use nix::unistd::Whence;

use super::trace;
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

/// `close(fd)`.
pub fn close(fd: OwnedFd) -> nix::Result<()> {
    let number = raw(&fd);
    trace::cleanup_call(
        || format!("close({number})"),
        || nix::unistd::close(fd),
        |()| "0".into(),
    )
}

/// `read(fd, buf, sizeof buf)`: the number of bytes read, 0 at end-of-file.
pub fn read(fd: impl AsFd, buf: &mut [u8]) -> nix::Result<usize> {
    read_shown(fd, buf, |data| text::string(data, SHOWN))
}

/// [`read()`] whose trace shows the bytes read as `show` says (a record decoded, say).
pub fn read_shown(fd: impl AsFd, buf: &mut [u8], show: fn(&[u8]) -> String) -> nix::Result<usize> {
    if !trace::enabled() {
        return nix::unistd::read(fd.as_fd(), buf);
    }
    let (number, size) = (raw(&fd), buf.len());
    trace::call_shown(
        || format!("read({number}, buf, {size})"),
        || nix::unistd::read(fd.as_fd(), buf).map(|n| (n, show(&buf[..n]))),
        |(n, data)| format!("read({number}, {data}, {size}) = {n}"),
        true, // it may wait for the writer
    )
    .map(|(n, _)| n)
}

/// `write(fd, buf, count)`: the number of bytes written.
pub fn write(fd: impl AsFd, buf: &[u8]) -> nix::Result<usize> {
    write_shown(fd, buf, |data| text::string(data, SHOWN))
}

/// [`write()`] whose trace shows the bytes as `show` says (a record decoded, say).
pub fn write_shown(fd: impl AsFd, buf: &[u8], show: fn(&[u8]) -> String) -> nix::Result<usize> {
    let number = raw(&fd);
    trace::call(
        || format!("write({number}, {}, {})", show(buf), buf.len()),
        || nix::unistd::write(fd.as_fd(), buf),
        |n| n.to_string(),
    )
}

/// `write` until all of `buf` is written (a pipe may take less than all at once).
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
    dup2_standard(fd, 1, nix::unistd::dup2_stdout)
}

/// `dup2(fd, 0)`: makes `fd` the standard input.
pub fn dup2_stdin(fd: impl AsFd) -> nix::Result<()> {
    dup2_standard(fd, 0, nix::unistd::dup2_stdin)
}

fn dup2_standard<F: AsFd>(fd: F, target: i32, dup: fn(F) -> nix::Result<()>) -> nix::Result<()> {
    let number = raw(&fd);
    trace::call(
        || format!("dup2({number}, {target})"),
        || dup(fd),
        |()| target.to_string(),
    )
}

/// `open(path, flags, mode)`: always with `O_CLOEXEC` added (not shown: it only keeps the
/// descriptor out of programs we `exec`).
pub fn open(path: &Path, flags: OFlag, mode: Mode) -> nix::Result<OwnedFd> {
    trace::call(
        || {
            let shown = open_flags(flags);
            match flags.intersects(OFlag::O_CREAT) || flags.contains(OFlag::O_TMPFILE) {
                true => format!("open({}, {shown}, {:04o})", quoted(path), mode.bits()),
                false => format!("open({}, {shown})", quoted(path)),
            }
        },
        || nix::fcntl::open(path, flags | OFlag::O_CLOEXEC, mode),
        |fd| raw(fd).to_string(),
    )
}

/// `mkfifo(path, mode)`.
pub fn mkfifo(path: &Path, mode: Mode) -> nix::Result<()> {
    trace::call(
        || format!("mkfifo({}, {:04o})", quoted(path), mode.bits()),
        || nix::unistd::mkfifo(path, mode),
        |()| "0".into(),
    )
}

/// `unlink(path)` (a cleanup call: see [`trace::cleanup_call`]).
pub fn unlink(path: &Path) -> nix::Result<()> {
    trace::cleanup_call(
        || format!("unlink({})", quoted(path)),
        || nix::unistd::unlink(path),
        |()| "0".into(),
    )
}

/// `rename(from, to)`: atomically replaces `to` (if it exists) by `from`.
pub fn rename(from: &Path, to: &Path) -> nix::Result<()> {
    trace::call(
        || format!("rename({}, {})", quoted(from), quoted(to)),
        || nix::fcntl::renameat(AT_FDCWD, from, AT_FDCWD, to),
        |()| "0".into(),
    )
}

/// `renameat2(from, to, RENAME_NOREPLACE)`: `rename`, but failing with `EEXIST` instead of
/// replacing a file already at `to`.
pub fn rename_noreplace(from: &Path, to: &Path) -> nix::Result<()> {
    trace::call(
        || {
            format!(
                "renameat2({}, {}, RENAME_NOREPLACE)",
                quoted(from),
                quoted(to)
            )
        },
        || {
            let noreplace = nix::fcntl::RenameFlags::RENAME_NOREPLACE;
            nix::fcntl::renameat2(AT_FDCWD, from, AT_FDCWD, to, noreplace)
        },
        |()| "0".into(),
    )
}

/// `lseek(fd, offset, SEEK_DATA or SEEK_HOLE)`: where the next data, or hole, of a sparse file
/// starts at or after `offset` (`ENXIO`: none, `offset` is at or past the end).
pub fn lseek(fd: BorrowedFd<'_>, offset: i64, whence: Whence) -> nix::Result<i64> {
    let name = match whence {
        Whence::SeekData => "SEEK_DATA",
        Whence::SeekHole => "SEEK_HOLE",
        Whence::SeekCur => "SEEK_CUR",
        Whence::SeekEnd => "SEEK_END",
        _ => "SEEK_SET",
    };
    trace::call(
        || format!("lseek({}, {offset}, {name})", fd.as_raw_fd()),
        || nix::unistd::lseek(fd, offset, whence),
        |at| at.to_string(),
    )
}

/// `fchmod(fd, mode)`.
pub fn fchmod(fd: BorrowedFd<'_>, mode: Mode) -> nix::Result<()> {
    trace::call(
        || format!("fchmod({}, 0{:o})", fd.as_raw_fd(), mode.bits()),
        || nix::sys::stat::fchmod(fd, mode),
        |()| "0".into(),
    )
}

/// `linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, path, AT_SYMLINK_FOLLOW)`: gives the file
/// without a name open as `fd` (`O_TMPFILE`) the name `path` (`EEXIST` if it is taken).
pub fn link_unnamed(fd: BorrowedFd<'_>, path: &Path) -> nix::Result<()> {
    let open_file = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    trace::call(
        || {
            let (from, to) = (quoted(&open_file), quoted(path));
            format!("linkat(AT_FDCWD, {from}, AT_FDCWD, {to}, AT_SYMLINK_FOLLOW)")
        },
        || {
            let follow = AtFlags::AT_SYMLINK_FOLLOW;
            nix::unistd::linkat(AT_FDCWD, &open_file, AT_FDCWD, path, follow)
        },
        |()| "0".into(),
    )
}

/// `rename(from, to)` at once after the call before it, with no classroom pause of its own (see
/// [`trace::call_unpaused`]).
pub fn rename_at_once(from: &Path, to: &Path) -> nix::Result<()> {
    trace::call_unpaused(
        || format!("rename({}, {})", quoted(from), quoted(to)),
        || nix::fcntl::renameat(AT_FDCWD, from, AT_FDCWD, to),
        |()| "0".into(),
    )
}

pub(crate) fn raw(fd: &impl AsFd) -> i32 {
    fd.as_fd().as_raw_fd()
}

pub(crate) fn quoted(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    text::string(path.as_os_str().as_bytes(), SHOWN * 2)
}

/// `O_WRONLY|O_NONBLOCK`: the access mode, then the flags the lecture talks about.
fn open_flags(flags: OFlag) -> String {
    let access = match flags & OFlag::O_ACCMODE {
        OFlag::O_WRONLY => "O_WRONLY",
        OFlag::O_RDWR => "O_RDWR",
        _ => "O_RDONLY",
    };
    let names = [
        (OFlag::O_CREAT, "O_CREAT"),
        (OFlag::O_EXCL, "O_EXCL"),
        (OFlag::O_TRUNC, "O_TRUNC"),
        (OFlag::O_APPEND, "O_APPEND"),
        (OFlag::O_NONBLOCK, "O_NONBLOCK"),
        (OFlag::O_NOFOLLOW, "O_NOFOLLOW"),
        (OFlag::O_NOCTTY, "O_NOCTTY"),
        (OFlag::O_TMPFILE, "O_TMPFILE"),
    ];
    let mut shown = access.to_string();
    for (flag, name) in names {
        if flags.contains(flag) {
            shown.push('|');
            shown.push_str(name);
        }
    }
    shown
}
