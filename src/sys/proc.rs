//! The lecture's calls on processes: `fork`, `execv`, `waitpid`, each traced in classroom mode.

use std::ffi::{CStr, CString};

use anyhow::Context;
use nix::errno::Errno;
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};

use super::trace;
use crate::layout::text;
use crate::rt::signals;

/// `fork()`, traced in both processes: the parent sees the child's PID, the child 0. Safe: it
/// checks first that this process has one thread (in the child, a lock another thread held
/// would stay locked forever). The child gets a signal self-pipe of its own
/// ([`signals::renew_after_fork`]); no output needs flushing: the suite's buffers nothing.
pub fn fork() -> anyhow::Result<ForkResult> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    anyhow::ensure!(
        threads == 1,
        "fork: this process has {threads} threads (in /proc/self/task), not one"
    );
    let forked = trace::call(
        || "fork()".into(),
        || {
            // SAFETY: this process has a single thread (checked above), the one calling.
            let forked = unsafe { nix::unistd::fork() };
            if let Ok(ForkResult::Child) = forked {
                trace::after_fork(); // before its first line: a colour of its own
            }
            forked
        },
        |forked| match forked {
            ForkResult::Parent { child } => child.to_string(),
            ForkResult::Child => "0".into(),
        },
    )
    .context("fork")?;
    if let ForkResult::Child = forked {
        signals::renew_after_fork()?;
    }
    Ok(forked)
}

/// `waitpid(pid, &status, 0)`: made also on a termination signal's path ([`trace::reap_call`]).
pub fn waitpid(pid: Pid) -> nix::Result<WaitStatus> {
    trace::reap_call(
        || format!("waitpid({pid}, &status, 0)"),
        || nix::sys::wait::waitpid(pid, None),
        |status| match status {
            WaitStatus::Exited(_, code) => format!("{pid} (exited with {code})"),
            WaitStatus::Signaled(_, signal, _) => format!("{pid} (killed by {signal})"),
            other => format!("{pid} ({other:?})"),
        },
    )
}

/// `execv(path, argv)`: returns only if it failed.
pub fn execv(path: &CStr, argv: &[CString]) -> Errno {
    trace::call_no_return(
        || {
            let args: Vec<String> = argv
                .iter()
                .map(|a| text::string(a.as_bytes(), 40))
                .collect();
            let path = text::string(path.to_bytes(), 80);
            format!("execv({path}, [{}])", args.join(", "))
        },
        || match nix::unistd::execv(path, argv) {
            Err(errno) => errno,
            Ok(never) => match never {},
        },
    )
}
