//! Printing that a person watching two processes can follow.
//!
//! Every line is flushed the moment it is printed, also when stdout is a pipe (where Rust, like C,
//! would otherwise hold it back), so the lines of a parent and its child, or of a server and its
//! client, interleave in real time. A line printed in two parts ([`out!`](crate::out!) then
//! [`outln!`](crate::outln!), as in `Sent a request.....` … `Received reply: …`) shows its first
//! part while the program waits.
//!
//! When whoever reads stdout has gone (`./sync | head -1`), printing fails with [`StdoutClosed`],
//! a quiet exit with status 0 instead of the panic of `println!`. A write that blocks (stdout a
//! full pipe that nobody reads) ends on a termination signal, unlike std's `write_all`, and
//! stderr is written by [`error_line`], which never panics (`eprintln!` does when stderr fails).

use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::exit::Exit;
use super::signals;

/// Prints a partial line and flushes it: `out!("Sent a request.....")?;`
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::rt::out::print(format_args!($($arg)*), false)
    };
}

/// Prints a whole line and flushes it: `outln!("Replied.")?;`
#[macro_export]
macro_rules! outln {
    () => {
        $crate::rt::out::print(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::rt::out::print(format_args!($($arg)*), true)
    };
}

/// The reader of stdout has gone: printing more is pointless, and not an error.
#[derive(Debug)]
pub struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Whether the last thing printed was a partial line (see [`end_partial_line`]).
static PARTIAL_LINE: AtomicBool = AtomicBool::new(false);
/// Whether stdout's partial line is still the last thing on the output stdout shares with
/// stderr (see [`stderr_bytes`]).
static MID_LINE: AtomicBool = AtomicBool::new(false);
/// The running program's name, for error lines and traces.
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// Sets the program's name (once, at start; [`crate::cli::run`] does it).
pub fn set_program(name: &'static str) {
    let _ = PROGRAM.set(name);
}

/// The running binary's name, as errors, warnings and traces show it.
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("ipclab")
}

/// Writes `text` (and a newline if `newline`) to stdout and flushes.
/// Use [`out!`](crate::out!) and [`outln!`](crate::outln!).
pub fn print(text: fmt::Arguments<'_>, newline: bool) -> anyhow::Result<()> {
    PARTIAL_LINE.store(!newline, Ordering::Relaxed);
    MID_LINE.store(!newline, Ordering::Relaxed);
    let mut line = match text.as_str() {
        Some(plain) => plain.to_owned(),
        None => text.to_string(),
    };
    if newline {
        line.push('\n');
    }
    write_bytes(line.as_bytes())
}

/// Writes raw bytes to stdout (data received from a peer, printed as it came).
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    write_to(io::stdout().as_fd(), bytes).map_err(|e| match e {
        WriteError::Interrupted(exit) => exit.into(),
        WriteError::Failed(Errno::EPIPE) => Exit::quiet(0, StdoutClosed).into(),
        // A parent and its child share their stdout: it failed for both.
        WriteError::Failed(errno) => Exit::echo(StdoutFailed(errno)).into(),
    })
}

/// Writing to stdout failed (`./pipe >/dev/full`, `./pipe >&-`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StdoutFailed(pub Errno);

impl fmt::Display for StdoutFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writing to stdout: {}", super::exit::reason(self.0))
    }
}

impl std::error::Error for StdoutFailed {}

/// Prints `NAME: message` on stderr, for a warning or an error. Never fails and never panics:
/// if stderr cannot be written (closed, full, a pipe nobody reads), the message is lost, which
/// is all one can do — but a termination signal still ends a write that blocks.
pub fn error_line(message: fmt::Arguments<'_>) {
    end_partial_line();
    let line = format!("{}: {message}\n", program());
    let _ = write_to(io::stderr().as_fd(), line.as_bytes());
}

/// Prints a warning that does not stop the program: `NAME: message` on stderr (see
/// [`error_line`]).
pub fn warn(message: impl fmt::Display) {
    error_line(format_args!("{message}"));
}

/// Writes a trace line or a note to stderr (see [`line_to`]), ignoring failures.
pub fn stderr_bytes(bytes: &[u8]) {
    line_to(io::stderr().as_fd(), bytes);
}

/// Writes a whole line (a trace line, a `--step` prompt, a note) to `fd`, ignoring failures
/// (see [`error_line`]). When `fd` reaches the same terminal or file as stdout, and stdout's
/// last line is not finished (`Sent a request.....`), the line starts on a line of its own
/// there — without a byte added to stdout, which stays what the program prints.
pub fn line_to(fd: BorrowedFd<'_>, bytes: &[u8]) {
    let mut line = Vec::with_capacity(bytes.len() + 1);
    if MID_LINE.load(Ordering::Relaxed) && same_place(fd, io::stdout().as_fd()) {
        MID_LINE.store(false, Ordering::Relaxed);
        line.push(b'\n');
    }
    line.extend_from_slice(bytes);
    let _ = write_to(fd, &line);
}

/// Prints `NAME: message` on stderr, on a line of its own, without ending a partial line of
/// stdout (see [`line_to`]): a note on what the program does, such as a long wait.
pub fn notice(message: fmt::Arguments<'_>) {
    stderr_bytes(format!("{}: {message}\n", program()).as_bytes());
}

/// Whether `a` and `b` are the same terminal, pipe or file (the same inode).
pub fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let inode =
        |fd: BorrowedFd<'_>| nix::sys::stat::fstat(fd).map(|s| (s.st_dev, s.st_rdev, s.st_ino));
    matches!((inode(a), inode(b)), (Ok(a), Ok(b)) if a == b)
}

/// Whether `a` and `b` reach the same terminal, pipe or file: the same inode, or both the
/// controlling terminal (`/dev/tty`, which `--step` opens, is the terminal stdout may be).
fn same_place(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let controlling = |fd| nix::unistd::tcgetpgrp(fd).is_ok();
    same_file(a, b) || (controlling(a) && controlling(b))
}

/// Whether stdout and stderr are the same terminal, pipe or file.
fn same_output() -> bool {
    static SAME: OnceLock<bool> = OnceLock::new();
    *SAME.get_or_init(|| same_place(io::stdout().as_fd(), io::stderr().as_fd()))
}

/// Ends a partial line left by [`out!`](crate::out!) (`Sent a request.....`), so that an error
/// message that follows on the terminal starts on a line of its own. Does nothing otherwise.
pub fn end_partial_line() {
    let mid_line = MID_LINE.swap(false, Ordering::Relaxed);
    // Where stdout is stderr's file, a line written on stderr since has ended it already.
    if PARTIAL_LINE.swap(false, Ordering::Relaxed) && (mid_line || !same_output()) {
        let _ = write_to(io::stdout().as_fd(), b"\n");
    }
}

/// Why [`write_to`] stopped.
pub(crate) enum WriteError {
    /// A termination signal was caught while the write waited (see [`crate::signals`]).
    Interrupted(Exit),
    /// The write failed.
    Failed(Errno),
}

/// Writes all of `bytes` to `fd`, waiting while it is full — but, unlike std's `write_all`,
/// which retries after `EINTR` for ever, a caught termination signal ends the wait, so a
/// program blocked on a full stdout (a pipe nobody reads) can still clean up and exit.
pub(crate) fn write_to(fd: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<(), WriteError> {
    while !bytes.is_empty() {
        // The write itself blocks while the output is full; a caught signal then ends it with
        // EINTR (handlers are installed without SA_RESTART) and the check below ends the loop.
        // (Waiting with poll first would be no better: poll says "full" while a pipe still has
        // room in its last page, and would hang a program whose output a one-page pipe is.)
        // Once a signal is caught, what can be written without waiting still is (the end of a
        // partial line, a warning on the way out), but nothing waits any more.
        if let Err(exit) = signals::check() {
            if !ready_for_writing(fd) {
                return Err(WriteError::Interrupted(exit));
            }
        }
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR | Errno::EAGAIN) => continue,
            Err(errno) => return Err(WriteError::Failed(errno)),
        }
    }
    Ok(())
}

/// Whether `fd` can be written now without waiting (or would fail at once, which `write` says).
fn ready_for_writing(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
}

/// Whether stdout is a pipe or socket whose reader has gone (poll reports `POLLERR` on it).
/// A terminal or a file is never closed in this sense.
pub fn stdout_is_closed() -> bool {
    let stdout = io::stdout();
    let mut fds = [PollFd::new(stdout.as_fd(), PollFlags::empty())];
    matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLERR))
}
