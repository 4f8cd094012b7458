//! Ending a wait on a termination signal, so that cleanup runs.
//!
//! A program that owns an IPC object (a FIFO file, a queue, a segment) calls
//! [`catch_termination`] before it creates the object. From then on the signals a person sends
//! by accident or on purpose ([`TERMINATION_SIGNALS`]: SIGHUP when the terminal is closed,
//! SIGINT for Ctrl-C, SIGQUIT for Ctrl-\\, SIGTERM from `kill`, and SIGUSR1, SIGUSR2, SIGALRM)
//! no longer kill it on the spot: the handler only records the signal, and every wait of the
//! suite ([`crate::rt::wait::Wait::poll`], every write of [`crate::rt::out`](mod@crate::rt::out)) then fails with [`Interrupted`].
//! That error travels up through `?` like any other, the owners of the objects are dropped on
//! the way and remove them, and [`crate::cli::run`] exits with status 128+signal.
//!
//! Two details make sure a wait really ends:
//! * The handler is installed **without `SA_RESTART`**, so a system call blocked when the signal
//!   arrives fails with `EINTR` instead of being restarted by the kernel (see `signal(7)`;
//!   `poll` and `msgrcv` are never restarted anyway).
//! * A signal may also arrive just *before* a wait starts, after the last check. The handler
//!   therefore also writes a byte into a pipe (the "self-pipe trick"), and every `poll` watches
//!   that pipe too, so the wait wakes up at once instead of sleeping through it.
//!
//! After `fork` the child must not share the parent's self-pipe (a wake-up meant for one could be
//! drained by the other): [`crate::sys::proc::fork`] calls [`renew_after_fork`] in the child.

use std::fmt;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;

use anyhow::Context;
use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

use super::aside::{aside, duplicate_aside};
use super::exit::Exit;

/// The signals that end a wait and run the cleanup (see the module docs).
pub const TERMINATION_SIGNALS: [Signal; 7] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

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
/// Both ends of the self-pipe, kept open for the life of the process (replaced in a forked
/// child by [`renew_after_fork`]).
static WAKE_PIPE: Mutex<Option<(OwnedFd, OwnedFd)>> = Mutex::new(None);

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

/// Catches the [`TERMINATION_SIGNALS`] for the rest of the process (see the module docs).
/// Idempotent.
pub fn catch_termination() -> anyhow::Result<()> {
    make_wake_pipe(false)?;
    // No SA_RESTART: a blocked system call must fail with EINTR so that its wait ends.
    let action = SigAction::new(
        SigHandler::Handler(on_termination),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for signal in TERMINATION_SIGNALS {
        // SAFETY: the handler only touches atomics and calls write(2), both async-signal-safe,
        // and it stays valid for the life of the process (a plain `fn`).
        unsafe { sigaction(signal, &action) }.with_context(|| format!("sigaction({signal})"))?;
    }
    Ok(())
}

/// Gives a forked child a self-pipe of its own, if its parent had one: otherwise a signal to one
/// process could wake the other, or one could drain the other's wake-up. Called by
/// [`crate::sys::proc::fork`] in the child.
pub fn renew_after_fork() -> anyhow::Result<()> {
    make_wake_pipe(true)
}

/// Makes the self-pipe (again, if `renew` and there is one). The new pipe is published to the
/// handler (`WAKE_WRITER`) only once it is fully made, and the old one closed only after that,
/// so the handler never writes into a descriptor that is being closed or reused.
fn make_wake_pipe(renew: bool) -> anyhow::Result<()> {
    let mut pipe = WAKE_PIPE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if pipe.is_some() != renew {
        return Ok(()); // already made, or nothing to renew
    }
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)
        .context("pipe (for signal wake-ups)")?;
    let (reader, writer) = (aside(reader), aside(writer)); // not among the lecture's numbers
    WAKE_WRITER.store(writer.as_raw_fd(), Ordering::SeqCst);
    let old = pipe.replace((reader, writer));
    drop(old);
    // A signal caught before the new pipe existed must still wake the next wait.
    if caught().is_some() {
        on_termination(CAUGHT.load(Ordering::SeqCst));
    }
    Ok(())
}

/// The termination signal caught so far, if any.
pub fn caught() -> Option<Signal> {
    Signal::try_from(CAUGHT.load(Ordering::SeqCst)).ok()
}

/// Fails with [`Interrupted`] (exit status 128+signal, no message) if a termination signal has
/// been caught. Call it in any loop that waits without [`crate::rt::wait::Wait::poll`] (a spin on shared
/// memory, a retry loop).
pub fn check() -> Result<(), Exit> {
    caught().map_or(Ok(()), |signal| Err(interrupted(signal)))
}

/// The error of a wait ended by `signal`: [`Interrupted`], ending the program with status
/// 128+signal and no message (the shell knows why).
pub fn interrupted(signal: Signal) -> Exit {
    Exit::quiet(128 + signal as i32 as u8, Interrupted(signal))
}

/// Whether `error` is (or was caused by) a caught termination signal — for a program whose
/// normal way to stop is Ctrl-C, such as a server.
pub fn is_interruption(error: &anyhow::Error) -> bool {
    super::exit::caused_by::<Interrupted>(error)
}

/// For a server whose normal way to stop is SIGINT (Ctrl-C) or SIGTERM (`kill`): a result ended
/// by one of these becomes a quiet exit with status 0, as the C servers do. Other signals (a
/// closed terminal, Ctrl-\\) still end it with 128+signal after its cleanup.
pub fn stop_on_ctrl_c(result: anyhow::Result<()>) -> anyhow::Result<()> {
    match (result, caught()) {
        (Err(_), Some(signal @ (Signal::SIGINT | Signal::SIGTERM))) => {
            Err(Exit::quiet(0, Interrupted(signal)).into())
        }
        (result, _) => result,
    }
}

/// A descriptor of its own for the read end of the self-pipe (readable once a signal was
/// caught), for one wait to watch; `None` before [`catch_termination`]. A duplicate, so that
/// [`renew_after_fork`] may replace the pipe whatever a caller still holds.
pub fn wake_fd() -> Option<OwnedFd> {
    let pipe = WAKE_PIPE.lock().unwrap_or_else(|p| p.into_inner());
    pipe.as_ref()
        .and_then(|(reader, _)| duplicate_aside(reader))
}

/// Empties the self-pipe after a wake-up (the signal itself stays recorded in [`caught`]).
pub fn drain(reader: BorrowedFd<'_>) {
    let mut sink = [0u8; 64];
    while matches!(nix::unistd::read(reader, &mut sink), Ok(n) if n > 0) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_forked_child_gets_a_self_pipe_of_its_own() {
        // (Global state: the test leaves no signal marked as caught, which would end the waits
        // of the unit tests running beside it.)
        catch_termination().unwrap();
        let inode = |fd: &OwnedFd| nix::sys::stat::fstat(fd).unwrap().st_ino;
        let parents = inode(&wake_fd().unwrap());
        renew_after_fork().unwrap();
        let childs = wake_fd().unwrap();
        assert_ne!(inode(&childs), parents, "the child must not share the pipe");
        let mut byte = [0u8; 1];
        assert_eq!(
            nix::unistd::read(&childs, &mut byte),
            Err(nix::errno::Errno::EAGAIN)
        );
    }
}
