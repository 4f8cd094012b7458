//! Ending a wait on SIGINT or SIGTERM, so that cleanup runs.
//!
//! A program that owns an IPC object (a FIFO file, a queue, a segment) calls
//! [`catch_termination`] before it creates the object. From then on, SIGINT (Ctrl-C) and SIGTERM
//! no longer kill it on the spot: the handler only records the signal, and every wait of the
//! suite ([`crate::wait::poll`]) then fails with [`Interrupted`]. That error travels up through
//! `?` like any other, the owners of the objects are dropped on the way and remove them, and
//! [`crate::cli::run`] exits with status 128+signal.
//!
//! Two details make sure a wait really ends:
//! * The handler is installed **without `SA_RESTART`**, so a system call blocked when the signal
//!   arrives fails with `EINTR` instead of being restarted by the kernel (see `signal(7)`;
//!   `poll` and `msgrcv` are never restarted anyway).
//! * A signal may also arrive just *before* a wait starts, after the last check. The handler
//!   therefore also writes a byte into a pipe (the "self-pipe trick"), and every `poll` watches
//!   that pipe too, so the wait wakes up at once instead of sleeping through it.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::OnceLock;

use anyhow::Context;
use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

/// The wait was ended by a signal; cleanup runs as this error propagates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted(pub Signal);

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "interrupted by {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// The last termination signal caught, 0 while none.
static CAUGHT: AtomicI32 = AtomicI32::new(0);
/// The write end of the self-pipe, for the handler (which may only use plain integers).
static WAKE_WRITER: AtomicI32 = AtomicI32::new(-1);
/// Both ends of the self-pipe, kept open for the life of the process.
static WAKE_PIPE: OnceLock<(OwnedFd, OwnedFd)> = OnceLock::new();

extern "C" fn on_termination(signal: libc::c_int) {
    CAUGHT.store(signal, Ordering::SeqCst);
    let writer = WAKE_WRITER.load(Ordering::SeqCst);
    if writer >= 0 {
        // Only async-signal-safe calls here: write(2), and errno saved around it so the
        // interrupted code sees its own errno.
        let saved = nix::errno::Errno::last_raw();
        // SAFETY: `writer` is the write end of the self-pipe, open for the life of the process
        // (WAKE_PIPE is never dropped); the buffer is one valid byte. The pipe is non-blocking,
        // so a full pipe (already enough wake-ups) makes write fail instead of blocking.
        unsafe { libc::write(writer, b"!".as_ptr().cast(), 1) };
        nix::errno::Errno::set_raw(saved);
    }
}

/// Catches SIGINT and SIGTERM for the rest of the process (see the module docs). Idempotent.
pub fn catch_termination() -> anyhow::Result<()> {
    if WAKE_PIPE.get().is_none() {
        let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
            .context("pipe (for signal wake-ups)")?;
        WAKE_WRITER.store(writer.as_raw_fd(), Ordering::SeqCst);
        let _ = WAKE_PIPE.set((reader, writer));
    }
    // No SA_RESTART: a blocked system call must fail with EINTR so that its wait ends.
    let action = SigAction::new(
        SigHandler::Handler(on_termination),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls write(2), both async-signal-safe,
        // and it stays valid for the life of the process (a plain `fn`).
        unsafe { sigaction(signal, &action) }.with_context(|| format!("sigaction({signal})"))?;
    }
    Ok(())
}

/// The termination signal caught so far, if any.
pub fn caught() -> Option<Signal> {
    Signal::try_from(CAUGHT.load(Ordering::SeqCst)).ok()
}

/// Fails with [`Interrupted`] if a termination signal has been caught. Call it in any loop that
/// waits without [`crate::wait::poll`] (a spin on shared memory, a retry loop).
pub fn check() -> Result<(), Interrupted> {
    caught().map_or(Ok(()), |signal| Err(Interrupted(signal)))
}

/// Whether `error` is (or was caused by) a caught termination signal — for a program whose
/// normal way to stop is Ctrl-C, such as a server.
pub fn is_interruption(error: &anyhow::Error) -> bool {
    crate::cli::caused_by::<Interrupted>(error)
}

/// The read end of the self-pipe, readable once a signal was caught; `None` before
/// [`catch_termination`].
pub fn wake_fd() -> Option<BorrowedFd<'static>> {
    use std::os::fd::AsFd;
    WAKE_PIPE.get().map(|(reader, _)| reader.as_fd())
}

/// Empties the self-pipe after a wake-up (the signal itself stays recorded in [`caught`]).
pub fn drain_wake_fd() {
    if let Some(reader) = wake_fd() {
        let mut sink = [0u8; 64];
        while matches!(nix::unistd::read(reader, &mut sink), Ok(n) if n > 0) {}
    }
}
