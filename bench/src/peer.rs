//! The two processes of a measurement: a child that dies with its parent, and a parent that
//! never waits for a child that has gone.
//!
//! * The **child** owns nothing (every object is the parent's) and leaves the termination
//!   signals to the parent ([`leave_signals_to_parent`]): on Ctrl-C the parent stops,
//!   removes the objects and kills the child; the child keeps answering meanwhile, so the
//!   parent is never left waiting for an answer that will not come. If the parent is killed
//!   outright (SIGKILL), the kernel kills the child too ([`die_with_parent`],
//!   `PR_SET_PDEATHSIG`).
//! * The **parent** learns at once that the child has ended: a `SIGCHLD` handler, installed
//!   without `SA_RESTART`, interrupts any blocking call (`read`, `msgrcv`, `semop`) with
//!   `EINTR` and sets the flag [`child_ended`], which spinning waits look at. [`ChildGuard`]
//!   kills and reaps the child on every path that does not end with it exiting by itself.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;
use ipclab::rt::signals::TERMINATION_SIGNALS;
use nix::sys::signal::{kill, sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::unistd::Pid;

/// Set by the `SIGCHLD` handler.
static CHILD_ENDED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_child_exit(_: libc::c_int) {
    CHILD_ENDED.store(true, Ordering::SeqCst);
}

/// Whether the child of the current measurement has ended (always false in the child).
#[inline]
pub fn child_ended() -> bool {
    CHILD_ENDED.load(Ordering::Relaxed)
}

/// Waits until `ready()` holds, the way the simplest C loop waits for memory that another
/// process writes: a few rounds of the CPU's spin hint, then a `sched_yield` each round, never a
/// sleep (its timer slack, 50 µs by default, is longer than a 1 MiB chunk takes to copy) — or
/// until the child has ended or a termination signal was caught (in the parent: the child
/// ignores them, and dies with its parent). Returns whether `ready()` holds.
pub fn spin_then_yield(mut ready: impl FnMut() -> bool) -> bool {
    let mut spins = 0u32;
    while !ready() {
        if spins < 100 {
            std::hint::spin_loop();
            spins += 1;
        } else {
            std::thread::yield_now();
            if child_ended() || ipclab::rt::signals::caught().is_some() {
                return ready();
            }
        }
    }
    true
}

/// Installs the `SIGCHLD` handler (see the module docs) and forgets an earlier child: call it
/// before each `fork`.
pub fn watch_next_child() -> anyhow::Result<()> {
    CHILD_ENDED.store(false, Ordering::SeqCst);
    // No SA_RESTART: a blocking call must fail with EINTR when the child ends.
    let action = SigAction::new(
        SigHandler::Handler(on_child_exit),
        SaFlags::SA_NOCLDSTOP,
        SigSet::empty(),
    );
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe, and it stays
    // valid for the life of the process (a plain `fn`).
    unsafe { sigaction(Signal::SIGCHLD, &action) }.context("sigaction(SIGCHLD)")?;
    Ok(())
}

/// In the child: the kernel kills us when `parent` ends (`prctl(PR_SET_PDEATHSIG, SIGKILL)`),
/// also if it ended before we asked. Returns false if it has ended already.
pub fn die_with_parent(parent: Pid) -> anyhow::Result<bool> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).context("prctl(PR_SET_PDEATHSIG)")?;
    Ok(nix::unistd::getppid() == parent)
}

/// In the child: ignores the termination signals, which the parent handles for both (see the
/// module docs), and the parent's `SIGCHLD` handler, which is not ours.
pub fn leave_signals_to_parent() -> anyhow::Result<()> {
    let ignore = SigAction::new(SigHandler::SigIgn, SaFlags::empty(), SigSet::empty());
    for signal in TERMINATION_SIGNALS {
        // SAFETY: ignoring a signal installs no handler.
        unsafe { sigaction(signal, &ignore) }.with_context(|| format!("sigaction({signal})"))?;
    }
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    // SAFETY: the default action installs no handler.
    unsafe { sigaction(Signal::SIGCHLD, &default) }.context("sigaction(SIGCHLD)")?;
    Ok(())
}

/// The parent's hold on its child: killed (SIGKILL: it owns nothing) and reaped when dropped,
/// unless [`ChildGuard::finish`] saw it exit by itself.
#[derive(Debug)]
pub struct ChildGuard {
    pid: Option<Pid>,
}

impl ChildGuard {
    /// Holds `pid`.
    pub fn new(pid: Pid) -> ChildGuard {
        ChildGuard { pid: Some(pid) }
    }

    /// Waits for the child to exit by itself (it has been told to) and fails unless it
    /// exited with status 0.
    pub fn finish(mut self) -> anyhow::Result<()> {
        match self.pid.take() {
            Some(pid) => ipclab::process::wait_child(pid),
            None => Ok(()),
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.pid.take() {
            let _ = kill(pid, Signal::SIGKILL);
            while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(pid, None) {}
        }
    }
}
