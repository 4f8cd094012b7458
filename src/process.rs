//! Processes: waiting for a child (and reporting its failure once), and `exec` of a program,
//! with the parent told whether the child's `exec` worked ([`ExecCheck`]). `fork` is
//! [`crate::sys::proc::fork`].

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{pipe2, Pid};

use crate::rt::exit::{self, Exit};
use crate::rt::wait::TimedOut;
use crate::sys::proc;

pub use crate::sys::proc::fork;

/// `waitpid(2)` for `child`; fails unless it exited with status 0 (as a shell's `&&` would).
pub fn wait_child(child: Pid) -> anyhow::Result<()> {
    succeeded(child, reap(child)?)
}

/// `waitpid(2)` for `child`, until it has ended.
fn reap(child: Pid) -> anyhow::Result<WaitStatus> {
    loop {
        match proc::waitpid(child) {
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
        WaitStatus::Exited(_, code) => match Signal::try_from(code - 128) {
            // How our own programs end on a caught termination signal (quietly).
            Ok(signal) if code > 128 => {
                anyhow::bail!("child {child} was stopped by {signal} (exit status {code})")
            }
            _ => anyhow::bail!("child {child} exited with status {code}"),
        },
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
/// A child that exited with an error status has said why on stderr. A parent error that is
/// only the echo of that failure ([`Exit::echo`]: the child went away, or the stdout they share
/// failed for the parent too, `./pipe >/dev/full`) then ends the parent with status 1 but
/// without a second message. A child stopped by a signal said nothing: then the
/// parent says that (`child 4712 was stopped by SIGTERM`) instead of its echo.
pub fn wait_child_after(child: Pid, parent_part: anyhow::Result<()>) -> anyhow::Result<()> {
    if parent_part.as_ref().is_err_and(exit::caused_by::<TimedOut>) {
        // We gave up on the child (`--timeout`): it may be stuck, even stopped; end it rather
        // than wait for it for ever. (SIGCONT lets a stopped child receive the SIGTERM.)
        let _ = kill(child, Signal::SIGTERM);
        let _ = kill(child, Signal::SIGCONT);
    }
    let status = reap(child)?;
    let child_result = succeeded(child, status);
    let echo = exit::is_echo;
    match (parent_part, child_result, status) {
        // The child said why (status 1 or 127: our programs' errors come with a message).
        (Err(parent), Err(child_failed), WaitStatus::Exited(_, 1..=128)) if echo(&parent) => {
            Err(Exit::quiet(1, ChildFailed(format!("{child_failed:#}"))).into())
        }
        // The child caught a signal, cleaned up and said nothing: that is the news.
        (Err(parent), Err(child_failed), WaitStatus::Exited(_, 129..)) if echo(&parent) => {
            Err(child_failed)
        }
        (parent_part, child_result, _) => parent_part.and(child_result),
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

impl From<CannotRun> for Exit {
    /// A program that cannot be run ends ours with the shell's status for it, 127.
    fn from(cannot: CannotRun) -> Exit {
        Exit::new(127, cannot)
    }
}

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
    /// Fails with a [`CannotRun`] that ends the program with status 127.
    pub fn find(words: &[OsString]) -> Result<Program, Exit> {
        Ok(Program::look_up(words)?)
    }

    fn look_up(words: &[OsString]) -> Result<Program, CannotRun> {
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
        nix::unistd::access(&path, nix::unistd::AccessFlags::X_OK)
            .map_err(|e| cannot(&exit::reason(e)))?;
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

    /// A command line such as `$PAGER`, read as git and man read it: `sh -c LINE`
    /// (`sh -c "cat; echo done"`, `tr a-z A-Z | cat`).
    ///
    /// A line of plain words (no quotes, no shell metacharacters, not starting with a shell
    /// keyword or built-in), such as `less -R`, means to `sh` only "find this program in
    /// `$PATH` and run it with these arguments". That is done here directly, as git does: the
    /// program is looked up first, so that a typo is reported in the suite's words before
    /// anything runs, and no shell stands between (`strace` shows `execve("/usr/bin/less", …)`).
    /// Anything else is the shell's to read; if it cannot run its command it exits with 127,
    /// and so does whoever execs it.
    pub fn shell_command(line: &str) -> Result<Program, Exit> {
        let words: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        let plain = !line.contains(|c| SHELL_METACHARACTERS.contains(c));
        let shell_word = |word: &OsString| SHELL_WORDS.contains(&word.to_str().unwrap_or(""));
        if plain && !words.first().is_some_and(shell_word) {
            return Program::find(&words);
        }
        Program::find(&["/bin/sh".into(), "-c".into(), line.into()])
    }

    /// The name the user gave.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `execv(2)`: replaces this process by the program. Returns only if that failed.
    pub fn exec(&self) -> anyhow::Error {
        Exit::from(self.cannot_run(self.try_exec())).into()
    }

    /// `execv(2)`; returns why it failed.
    ///
    /// SIGPIPE goes back to its default action first: Rust ignores it, and an ignored signal
    /// stays ignored across exec, so `ls` in `ls -l | more` would print `Broken pipe` errors
    /// when the pager quits early instead of ending quietly as it does under a shell.
    fn try_exec(&self) -> Errno {
        // SAFETY: SIG_DFL installs no handler code, so no Rust code can run in a signal context.
        if let Err(errno) = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
            return errno;
        }
        proc::execv(&self.path, &self.argv)
    }

    /// The error for an `exec` of this program that failed with `errno`, in words a student can
    /// act on (as a shell says them): `ENOENT` for a file that exists means its interpreter is
    /// missing, `EACCES` for a directory means it is one.
    fn cannot_run(&self, errno: Errno) -> CannotRun {
        let path = Path::new(OsStr::from_bytes(self.path.as_bytes()));
        let reason = match errno {
            Errno::ENOENT if path.exists() => match interpreter(path) {
                Some(interpreter) => {
                    format!(
                        "bad interpreter '{interpreter}' in its #! line: {}",
                        exit::reason(errno)
                    )
                }
                None => format!("bad interpreter: {}", exit::reason(errno)),
            },
            Errno::EACCES if path.is_dir() => "Is a directory".to_string(),
            _ => exit::reason(errno),
        };
        CannotRun {
            name: self.name.clone(),
            reason,
        }
    }
}

/// The characters that make a command line more than plain words for `sh` (git's list, less
/// the blanks that separate the words).
const SHELL_METACHARACTERS: &str = "|&;<>()$`\\\"'*?[]#~=%{}!\n";

/// Names `sh` runs without looking in `$PATH`: its reserved words and the built-ins that may
/// start a pager's command line (`exec less`, `command less`).
const SHELL_WORDS: &[&str] = &[
    "case", "for", "if", "until", "while", ".", ":", "eval", "exec", "command", "builtin",
    "export", "readonly", "set", "trap", "unset", "cd", "read", "wait", "umask", "ulimit", "alias",
    "type", "hash", "true", "false",
];

/// The interpreter named in the `#!` line of the file at `path`, if it has one.
fn interpreter(path: &Path) -> Option<String> {
    let mut head = [0u8; 256];
    let length = File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let line = head[..length]
        .strip_prefix(b"#!")?
        .split(|&b| b == b'\n')
        .next()?;
    let word = line
        .split(u8::is_ascii_whitespace)
        .find(|w| !w.is_empty())?;
    Some(String::from_utf8_lossy(word).into_owned())
}

/// A close-on-exec pipe through which a forked child tells its parent whether its `exec`
/// failed, as `std::process::Command` does: the child writes its `errno` (4 bytes) into it
/// if `exec` fails; if `exec` succeeds the kernel closes the child's write end, and the parent
/// reads end-of-file. So the parent knows, before it goes on, that the child really runs the
/// program (a directory, a file that is not a program, a script whose `#!` interpreter is
/// missing all pass the lookup in [`Program::find`] and fail only in `exec`).
///
/// Make it before `fork`; the child calls [`ExecCheck::exec`], the parent
/// [`ExecCheck::wait_for_exec`].
#[derive(Debug)]
pub struct ExecCheck {
    reader: OwnedFd,
    writer: OwnedFd,
}

impl ExecCheck {
    /// `pipe2(O_CLOEXEC)`.
    pub fn new() -> anyhow::Result<ExecCheck> {
        let (reader, writer) = pipe2(OFlag::O_CLOEXEC).context("pipe2 (exec check)")?;
        Ok(ExecCheck { reader, writer })
    }

    /// The child's side: `execv` the program; if that fails, write the `errno` for the parent
    /// and `_exit(127)` (the parent reports it: one error line, not one from each process).
    pub fn exec(self, program: &Program) -> ! {
        drop(self.reader);
        let errno = program.try_exec();
        let _ = File::from(self.writer).write_all(&(errno as i32).to_ne_bytes());
        // SAFETY: _exit ends the process at once; it has no precondition. The child must not
        // return into `main`, which would report the error a second time.
        unsafe { libc::_exit(127) }
    }

    /// The parent's side: waits until the `child` has exec'd the `program`. If its `exec`
    /// failed, reaps the child and fails with [`CannotRun`]. (A child that failed *before* its
    /// `exec`, as in a `dup2` that cannot fail in practice, also closes the pipe: it reports
    /// that error itself.)
    pub fn wait_for_exec(self, program: &Program, child: Pid) -> anyhow::Result<()> {
        drop(self.writer); // else the parent's own write end keeps end-of-file away
        let mut report = Vec::new();
        File::from(self.reader)
            .read_to_end(&mut report)
            .context("read (exec check)")?;
        if report.is_empty() {
            return Ok(());
        }
        let errno = <[u8; 4]>::try_from(report.as_slice())
            .map(i32::from_ne_bytes)
            .map_err(|_| anyhow::anyhow!("read (exec check): {} bytes, not 4", report.len()))?;
        let _ = wait_child(child); // it has _exit(127)ed: no zombie left behind
        Err(Exit::from(program.cannot_run(Errno::from_raw(errno))).into())
    }
}

/// Where `execvp` would find `name`: itself if it has a `/`, else the first executable regular
/// file of that name in a `$PATH` directory (an empty entry means the current directory).
/// Failing that, the first file of that name at all, so that the error says why it cannot run.
fn search_path(name: &OsStr) -> Option<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let candidates: Vec<PathBuf> = std::env::split_paths(&path)
        .map(|dir| {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".").into()
            } else {
                dir
            };
            dir.join(name)
        })
        .collect();
    let executable = |candidate: &&PathBuf| {
        candidate.is_file()
            && nix::unistd::access(candidate.as_path(), nix::unistd::AccessFlags::X_OK).is_ok()
    };
    candidates
        .iter()
        .find(executable)
        .or_else(|| candidates.iter().find(|c| c.exists()))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn finds_programs_in_path_and_by_path() {
        assert_eq!(Program::find(&words("ls -l")).unwrap().name(), "ls");
        assert!(Program::find(&words("/bin/sh -c true")).is_ok());
    }

    #[test]
    fn a_missing_program_is_reported_with_its_name() {
        let error = Program::find(&words("no-such-program-ipclab --x")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "cannot run 'no-such-program-ipclab': command not found"
        );
        let error = Program::find(&[]).unwrap_err();
        assert_eq!(error.to_string(), "cannot run '': empty command");
    }

    #[test]
    fn a_file_that_is_not_executable_cannot_be_run() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("not-executable");
        std::fs::write(&script, "#!/bin/sh\n").unwrap();
        let error = Program::find(&[script.into_os_string()]).unwrap_err();
        // root may execute nothing without an x bit either
        assert!(error.to_string().contains("denied"), "{error}");
        assert_eq!(error.status(), 127);
    }

    #[test]
    fn a_command_line_of_plain_words_is_run_without_a_shell() {
        let error = Program::shell_command("no-such-program-ipclab -R").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("cannot run 'no-such-program-ipclab'"));
        let pager = Program::shell_command(" cat\t-u ").unwrap();
        assert_eq!((pager.name(), pager.argv.len()), ("cat", 2));
        assert_eq!(
            Program::shell_command("  ").unwrap_err().to_string(),
            "cannot run '': empty command"
        );
        // What only the shell can read is left to it (and its 127).
        for line in [
            "no-such-program-ipclab | cat",
            "no-such-program-ipclab 'quoted'",
            "LESS=R no-such-program-ipclab",
            "exec no-such-program-ipclab",
            "cat; echo done",
        ] {
            assert_eq!(
                Program::shell_command(line).unwrap().argv[2].to_str(),
                Ok(line)
            );
        }
    }

    #[test]
    fn the_interpreter_is_read_from_the_hash_bang_line() {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("script");
        std::fs::write(&script, "#! /no/such/shell -e\necho\n").unwrap();
        assert_eq!(interpreter(&script).as_deref(), Some("/no/such/shell"));
        std::fs::write(&script, "echo\n").unwrap();
        assert_eq!(interpreter(&script), None);
    }
}
