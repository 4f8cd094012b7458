//! Processes: `fork` with stdout flushed, waiting for a child, and `exec` of a program.

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{ForkResult, Pid};

use crate::error::{self, Exit};
use crate::out::StdoutFailed;
use crate::sync::PeerGone;
use crate::wait::TimedOut;

/// `fork(2)`, after flushing stdout so that the child does not print the parent's pending text
/// a second time. The child gets a signal self-pipe of its own
/// ([`crate::signals::renew_after_fork`]).
///
/// # Safety
/// As for [`nix::unistd::fork`]: the calling program must be single-threaded (all the
/// exercises are), or the child may only call async-signal-safe functions.
pub unsafe fn fork() -> anyhow::Result<ForkResult> {
    crate::out::flush()?;
    // SAFETY: the caller guarantees the conditions of nix::unistd::fork (see above).
    let forked = unsafe { crate::sys::traced_fork() }.context("fork")?;
    if let ForkResult::Child = forked {
        crate::signals::renew_after_fork()?;
    }
    Ok(forked)
}

/// `waitpid(2)` for `child`; fails unless it exited with status 0 (as a shell's `&&` would).
pub fn wait_child(child: Pid) -> anyhow::Result<()> {
    succeeded(child, reap(child)?)
}

/// `waitpid(2)` for `child`, until it has ended.
fn reap(child: Pid) -> anyhow::Result<WaitStatus> {
    loop {
        match crate::sys::waitpid(child) {
            // Even after a termination signal: the child gets the same Ctrl-C, and must still be
            // reaped.
            Err(nix::errno::Errno::EINTR) => continue,
            other => return other.with_context(|| format!("waitpid(child {child})")),
        }
    }
}

/// Whether a child that ended with `status` succeeded, as an error if not.
fn succeeded(child: Pid, status: WaitStatus) -> anyhow::Result<()> {
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        WaitStatus::Exited(_, code) => anyhow::bail!("child {child} exited with status {code}"),
        WaitStatus::Signaled(_, signal, _) => anyhow::bail!("child {child} was killed by {signal}"),
        other => anyhow::bail!("child {child} stopped unexpectedly: {other:?}"),
    }
}

/// What a parent does after its own part: waits for `child` whatever `parent_part` gave (so no
/// zombie is left behind), then returns the parent's error if there was one, else the child's.
///
/// Drop the parent's pipe ends before calling this (let `parent_part` consume them): a child
/// still waiting on one of them sees end-of-file and stops, instead of being waited for forever.
///
/// A child that exited with a failure status has said why on stderr. A parent error that is
/// only the echo of that failure — the child went away ([`PeerGone`]), or the stdout they share
/// failed for the parent too ([`StdoutFailed`]: `./pipe >/dev/full`) — then ends the parent with
/// status 1 but without a second message. (A child killed by a signal said nothing: then the
/// parent's error is shown.)
pub fn wait_child_after(child: Pid, parent_part: anyhow::Result<()>) -> anyhow::Result<()> {
    if parent_part
        .as_ref()
        .is_err_and(error::caused_by::<TimedOut>)
    {
        // We gave up on the child (`--timeout`): it may be stuck, even stopped; end it rather
        // than wait for it for ever. (SIGCONT lets a stopped child receive the SIGTERM.)
        let _ = kill(child, Signal::SIGTERM);
        let _ = kill(child, Signal::SIGCONT);
    }
    let status = reap(child)?;
    let child_result = succeeded(child, status);
    match (parent_part, child_result) {
        (Err(echo), Err(child_failed))
            if matches!(status, WaitStatus::Exited(..))
                && (error::caused_by::<PeerGone>(&echo)
                    || error::caused_by::<StdoutFailed>(&echo)) =>
        {
            Err(Exit::quiet(1, ChildFailed(format!("{child_failed:#}"))).into())
        }
        (parent_part, child_result) => parent_part.and(child_result),
    }
}

/// A child failed and has said why itself (see [`wait_child_after`]).
#[derive(Debug)]
pub struct ChildFailed(pub String);

impl fmt::Display for ChildFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ChildFailed {}

/// A program that could not be started: the shell's "command not found" (exit status 127).
#[derive(Debug)]
pub struct CannotRun {
    /// The name as the user gave it.
    pub name: String,
    /// Why, in words (`command not found`, `Permission denied`, …).
    pub reason: String,
}

impl fmt::Display for CannotRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot run '{}': {}", self.name, self.reason)
    }
}

impl std::error::Error for CannotRun {}

/// A program found on disk, with its argument vector, ready for [`Program::exec`].
#[derive(Debug, Clone)]
pub struct Program {
    path: CString,
    argv: Vec<CString>,
    name: String,
}

impl Program {
    /// Finds `words[0]` as `execvp` would (in `$PATH` unless it contains a `/`), so that a
    /// program that cannot be run is reported *before* anything is forked.
    pub fn find(words: &[OsString]) -> Result<Program, CannotRun> {
        let first = words.first().map(OsString::as_os_str).unwrap_or_default();
        let name = first.to_string_lossy().into_owned();
        let cannot = |reason: &str| CannotRun {
            name: name.clone(),
            reason: reason.to_string(),
        };
        if first.is_empty() {
            return Err(cannot("empty command"));
        }
        let path = search_path(first).ok_or_else(|| cannot("command not found"))?;
        nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK).map_err(|e| cannot(e.desc()))?;
        let c_string =
            |s: &OsStr| CString::new(s.as_bytes()).map_err(|_| cannot("NUL in argument"));
        Ok(Program {
            path: c_string(path.as_os_str())?,
            argv: words
                .iter()
                .map(|w| c_string(w))
                .collect::<Result<_, _>>()?,
            name,
        })
    }

    /// Splits a command line such as `$PAGER` (`less -R`) into words and finds the program.
    pub fn find_command_line(line: &str) -> Result<Program, CannotRun> {
        let words: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        Program::find(&words)
    }

    /// The name the user gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `execv(2)`: replaces this process by the program. Returns only if that failed.
    ///
    /// SIGPIPE goes back to its default action first: Rust ignores it, and an ignored signal
    /// stays ignored across exec, so `ls` in `ls -l | more` would print `Broken pipe` errors
    /// when the pager quits early instead of ending quietly as it does under a shell.
    pub fn exec(&self) -> anyhow::Error {
        // SAFETY: SIG_DFL installs no handler code, so no Rust code can run in a signal context.
        if let Err(e) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
            return anyhow::Error::new(e).context("signal(SIGPIPE, SIG_DFL)");
        }
        let errno = crate::sys::execv(&self.path, &self.argv);
        CannotRun {
            name: self.name.clone(),
            reason: errno.desc().to_string(),
        }
        .into()
    }
}

/// Where `execvp` would find `name`: itself if it has a `/`, else the first regular file of that
/// name in a `$PATH` directory (an empty entry means the current directory).
fn search_path(name: &OsStr) -> Option<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".").into()
            } else {
                dir
            };
            dir.join(name)
        })
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_in_path_and_by_path() {
        assert_eq!(Program::find_command_line("ls -l").unwrap().name(), "ls");
        assert!(Program::find_command_line("/bin/sh -c true").is_ok());
    }

    #[test]
    fn a_missing_program_is_reported_with_its_name() {
        let error = Program::find_command_line("no-such-program-ipclab --x").unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot run 'no-such-program-ipclab': command not found"
        );
        let error = Program::find_command_line("").unwrap_err();
        assert_eq!(error.to_string(), "cannot run '': empty command");
    }

    #[test]
    fn a_file_that_is_not_executable_cannot_be_run() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let error = Program::find(&[script.into_os_string()]).unwrap_err();
        // root may execute nothing without an x bit either
        assert!(error.reason.contains("denied"), "{error}");
    }
}
