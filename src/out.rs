//! Printing that a person watching two processes can follow.
//!
//! Every line is flushed the moment it is printed, also when stdout is a pipe (where Rust, like C,
//! would otherwise hold it back), so the lines of a parent and its child, or of a server and its
//! client, interleave in real time. A line printed in two parts ([`out!`](crate::out!) then
//! [`outln!`](crate::outln!), as in `Sent a request.....` … `Received reply: …`) shows its first
//! part while the program waits.
//!
//! When whoever reads stdout has gone (`./sync | head -1`), printing fails with [`StdoutClosed`],
//! which [`crate::cli::run`] turns into a quiet exit instead of the panic of `println!`.

use std::fmt;
use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::poll::{PollFd, PollFlags, PollTimeout};

/// Prints a partial line and flushes it: `out!("Sent a request.....")?;`
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::print(format_args!($($arg)*), false)
    };
}

/// Prints a whole line and flushes it: `outln!("Replied.")?;`
#[macro_export]
macro_rules! outln {
    () => {
        $crate::out::print(format_args!(""), true)
    };
    ($($arg:tt)*) => {
        $crate::out::print(format_args!($($arg)*), true)
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

/// Writes `text` (and a newline if `newline`) to stdout and flushes.
/// Use [`out!`](crate::out!) and [`outln!`](crate::outln!).
pub fn print(text: fmt::Arguments<'_>, newline: bool) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    PARTIAL_LINE.store(!newline, Ordering::Relaxed);
    let written = stdout
        .write_fmt(text)
        .and_then(|()| {
            if newline {
                stdout.write_all(b"\n")
            } else {
                Ok(())
            }
        })
        .and_then(|()| stdout.flush());
    checked(written)
}

/// Writes raw bytes to stdout (data received from a peer, printed as it came) and flushes.
pub fn write_bytes(bytes: &[u8]) -> anyhow::Result<()> {
    let mut stdout = io::stdout().lock();
    checked(stdout.write_all(bytes).and_then(|()| stdout.flush()))
}

/// Ends a partial line left by [`out!`](crate::out!) (`Sent a request.....`), so that an error
/// message that follows on the terminal starts on a line of its own. Does nothing otherwise.
pub fn end_partial_line() {
    if PARTIAL_LINE.swap(false, Ordering::Relaxed) {
        let _ = print(format_args!(""), true);
    }
}

/// Flushes stdout, e.g. before `fork`, so that the child does not inherit unprinted text.
pub fn flush() -> anyhow::Result<()> {
    checked(io::stdout().flush())
}

fn checked(result: io::Result<()>) -> anyhow::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        other => Ok(other.map_err(|e| anyhow::anyhow!("writing to stdout: {e}"))?),
    }
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
