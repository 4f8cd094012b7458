//! The suite's own descriptors — the signal self-pipe, the terminal `--step` reads, a
//! `--trace-to` file, a server's lock file — are kept aside, at 100 and above, so that the
//! lecture's objects get the numbers the C programs get (`/proc/PID/fd` shows the FIFOs at 3 and
//! 4, as in C, not after the suite's own).

use std::os::fd::{AsFd, FromRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg};

/// The lowest number the suite's own descriptors take.
pub const LOWEST: i32 = 100;

/// `fd` moved to a number of [`LOWEST`] or more (`fcntl(F_DUPFD_CLOEXEC, 100)`), close-on-exec;
/// `fd` itself if that fails (it only looks tidier).
pub fn aside(fd: OwnedFd) -> OwnedFd {
    duplicate_aside(fd.as_fd()).unwrap_or(fd)
}

/// A duplicate of `fd` at [`LOWEST`] or more, close-on-exec.
pub fn duplicate_aside(fd: impl AsFd) -> Option<OwnedFd> {
    let new = fcntl(fd.as_fd(), FcntlArg::F_DUPFD_CLOEXEC(LOWEST)).ok()?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor, open, that nothing else owns.
    Some(unsafe { OwnedFd::from_raw_fd(new) })
}
