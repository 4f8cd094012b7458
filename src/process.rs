//! Processes: `fork` ([`crate::sys::proc::fork`]), waiting for a child (and reporting its
//! failure once), and `exec` of a program, checked by the parent ([`ExecCheck`]).

use std::ffi::{CString, OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, signal, SigHandler, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::{access, AccessFlags, Pid};

use crate::rt::aside::aside;
use crate::rt::exit::{self, reason, Exit};
use crate::rt::wait::TimedOut;
use crate::sys::proc;

pub use crate::sys::proc::fork;

/// `waitpid(2)` for `child`; fails unless it exited with status 0 (as a shell's `&&` would).
pub fn wait_child(child: Pid) -> anyhow::Result<()> {
    succeeded(child, reap(child)?)
}

/// `waitpid(2)` for `child` until it has ended, also after a termination signal (Ctrl-C).
fn reap(child: Pid) -> anyhow::Result<WaitStatus> {
    loop {
        match proc::waitpid(child) {
            Err(Errno::EINTR) => continue,
            other => return other.with_context(|| format!("waitpid(child {child})")),
        }
    }
}

/// Ends `child` the way Ctrl-C would (SIGTERM: it cleans up and goes quietly), also when it is
/// stopped (SIGCONT lets it receive the SIGTERM). A parent that will not go on with its child
/// calls it before it closes its ends of their pipes: the child then takes their end for part
/// of the signal's path, not for a failure of its own to report.
pub fn end_child(child: Pid) {
    let _ = kill(child, Signal::SIGTERM);
    let _ = kill(child, Signal::SIGCONT);
}

/// Whether a child that ended with `status` succeeded, as an error if not.
fn succeeded(child: Pid, status: WaitStatus) -> anyhow::Result<()> {
    match status {
        WaitStatus::Exited(_, 0) => Ok(()),
        WaitStatus::Exited(_, code) => match Signal::try_from(code - 128) {
            // How our own programs end on a caught termination signal (quietly).
            Ok(signal) if code > 128 => {
                bail!("child {child} was stopped by {signal} (exit status {code})")
            }
            _ => bail!("child {child} exited with status {code}"),
        },
        WaitStatus::Signaled(_, signal, _) => bail!("child {child} was killed by {signal}"),
        other => bail!("child {child} stopped unexpectedly: {other:?}"),
    }
}

/// What a parent does after its own part (which should consume the parent's pipe ends, so
/// that a child waiting on one sees end-of-file): waits for `child`, then returns the parent's
/// error if there was one, else the child's. A child that failed has said why on stderr: a
/// parent error that only echoes it ([`Exit::echo`]) ends the parent with status 1 and no
/// second message. A child stopped by a signal said nothing: then the parent says it.
pub fn wait_child_after(child: Pid, parent_part: anyhow::Result<()>) -> anyhow::Result<()> {
    let gave_up = exit::caused_by::<TimedOut>;
    if parent_part.as_ref().is_err_and(gave_up) || crate::rt::signals::caught().is_some() {
        // We gave up on the child (`--timeout`), or a termination signal stops us (perhaps us
        // alone: `kill` of the parent): the child may be stuck, even stopped; end it rather
        // than wait for it forever.
        end_child(child);
    }
    let status = reap(child)?;
    match (parent_part, succeeded(child, status)) {
        (Err(parent), Err(failed)) if exit::is_echo(&parent) => Err(match status {
            // The child said why (status 1 or 127: our programs' errors come with a message).
            WaitStatus::Exited(_, 1..=128) => Exit::quiet(1, Said(format!("{failed:#}"))).into(),
            // The child caught a signal, cleaned up and said nothing: that is the news.
            WaitStatus::Exited(_, 129..) => failed,
            _ => parent,
        }),
        (parent_part, child_result) => parent_part.and(child_result),
    }
}

/// A failure already put in words: a child's, or that of a program that cannot be run.
#[derive(Debug)]
struct Said(String);

impl fmt::Display for Said {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Said {}

/// `cannot run 'NAME': WHY`, ending the program with the shell's status for it, 127.
fn cannot_run(name: &str, why: impl fmt::Display) -> Exit {
    Exit::new(127, Said(format!("cannot run '{name}': {why}")))
}

/// A program found on disk, with its argument vector, ready for [`Program::exec`].
#[derive(Debug)]
pub struct Program {
    path: CString,
    argv: Vec<CString>,
    name: String,
}

impl Program {
    /// Finds `words[0]` as `execvp` would (in `$PATH` unless it contains a `/`), so that a
    /// program that cannot be run is reported *before* anything is forked (status 127).
    pub fn find(words: &[OsString]) -> Result<Program, Exit> {
        let first = words.first().map(OsString::as_os_str).unwrap_or_default();
        let name = first.to_string_lossy().into_owned();
        if first.is_empty() {
            return Err(cannot_run(&name, "empty command"));
        }
        let path = search_path(first).ok_or_else(|| cannot_run(&name, "command not found"))?;
        access(&path, AccessFlags::X_OK).map_err(|e| cannot_run(&name, reason(e)))?;
        // (Neither argv nor the environment can hold a NUL byte.)
        let c_string = |s: &OsStr| CString::new(s.as_bytes()).unwrap_or_default();
        let argv = words.iter().map(|w| c_string(w)).collect();
        let path = c_string(path.as_os_str());
        Ok(Program { path, argv, name })
    }

    /// A command line such as `$PAGER`, read as git and man read it: `sh -c LINE`. Plain words
    /// (no shell metacharacter, keyword or built-in), such as `less -R`, are run directly, as
    /// git does, so that a typo is reported in the suite's words.
    pub fn shell_command(line: &str) -> Result<Program, Exit> {
        let words: Vec<OsString> = line.split_whitespace().map(OsString::from).collect();
        let plain = !line.contains(|c| SHELL_METACHARACTERS.contains(c));
        let first = words.first().and_then(|w| w.to_str()).unwrap_or("");
        match plain && !SHELL_WORDS.split(' ').any(|word| word == first) {
            true => Program::find(&words),
            false => Program::find(&["/bin/sh".into(), "-c".into(), line.into()]),
        }
    }

    /// `execv(2)`: replaces this process by the program. Returns only if that failed.
    pub fn exec(&self) -> anyhow::Error {
        self.cannot_run(self.try_exec()).into()
    }

    /// `execv(2)`, with SIGPIPE back to its default action first: Rust ignores it, and an
    /// ignored signal stays ignored across exec, so `ls` in `ls -l | more` would print `Broken
    /// pipe` errors when the pager quits early instead of ending quietly as under a shell.
    fn try_exec(&self) -> Errno {
        // SAFETY: SIG_DFL installs no handler code, so no Rust code can run in a signal context.
        match unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) } {
            Ok(_) => proc::execv(&self.path, &self.argv),
            Err(errno) => errno,
        }
    }

    /// The error of an `exec` that failed with `errno`, as a shell says it: `ENOENT` for a file
    /// that exists means a missing `#!` interpreter, `EACCES` for a directory that it is one.
    fn cannot_run(&self, errno: Errno) -> Exit {
        let path = Path::new(OsStr::from_bytes(self.path.as_bytes()));
        let why = match errno {
            Errno::ENOENT if path.exists() => match interpreter(path) {
                Some(interpreter) => format!("bad interpreter '{interpreter}' in its #! line"),
                None => "bad interpreter".into(),
            },
            Errno::EACCES if path.is_dir() => return cannot_run(&self.name, "Is a directory"),
            _ => return cannot_run(&self.name, reason(errno)),
        };
        cannot_run(&self.name, format!("{why}: {}", reason(errno)))
    }
}

/// What makes a command line more than plain words for `sh` (git's list); the keywords and
/// built-ins `sh` runs without looking in `$PATH` (`exec less`, `command less`).
const SHELL_METACHARACTERS: &str = "|&;<>()$`\\\"'*?[]#~=%{}!\n";
const SHELL_WORDS: &str = "case for if until while . : eval exec command builtin export readonly \
                           set trap unset cd read wait umask ulimit alias type hash true false";

/// The interpreter named in the `#!` line of the file at `path`, if it has one.
fn interpreter(path: &Path) -> Option<String> {
    let mut head = [0u8; 256];
    let length = File::open(path).and_then(|mut f| f.read(&mut head)).ok()?;
    let line = head[..length].strip_prefix(b"#!")?;
    let line = line.split(|&b| b == b'\n').next()?;
    let word = line
        .split(u8::is_ascii_whitespace)
        .find(|w| !w.is_empty())?;
    Some(String::from_utf8_lossy(word).into_owned())
}

/// Where `execvp` would find `name`: itself if it has a `/`, else the first executable regular
/// file of that name in `$PATH` (`""`: the current directory), else the first file of that
/// name at all (the error says why it cannot run).
fn search_path(name: &OsStr) -> Option<PathBuf> {
    if name.as_bytes().contains(&b'/') {
        return Some(name.into());
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    let candidates: Vec<PathBuf> = std::env::split_paths(&path).map(|d| d.join(name)).collect();
    let runnable = |c: &&PathBuf| c.is_file() && access(c.as_path(), AccessFlags::X_OK).is_ok();
    let found = candidates.iter().find(runnable);
    found.or(candidates.iter().find(|c| c.exists())).cloned()
}

/// A close-on-exec pipe, made before `fork`, through which a child tells its parent whether
/// its `exec` failed, as `std::process::Command` does: a successful `exec` closes the child's
/// write end (the parent reads end-of-file); a failed one writes its `errno` there. So the
/// parent knows that the child runs the program (a directory, a file that is no program, a
/// missing `#!` interpreter fail only in `exec`).
#[derive(Debug)]
pub struct ExecCheck(OwnedFd, OwnedFd);

impl ExecCheck {
    /// `pipe2(O_CLOEXEC)`, at descriptors 100 and up (`rt::aside`): the suite's own, away from
    /// the lecture's pipe, which `/proc/PID/fd` shows at 3 and 4 as in C.
    pub fn new() -> anyhow::Result<ExecCheck> {
        let (reader, writer) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).context("pipe2 (exec check)")?;
        Ok(ExecCheck(aside(reader), aside(writer)))
    }

    /// The child's side: `execv` the program; if that fails, write the `errno` for the parent
    /// and `_exit(127)` (the parent reports it: one error line, not one from each process).
    pub fn exec(self, program: &Program) -> ! {
        let errno = program.try_exec() as i32;
        let _ = nix::unistd::write(&self.1, &errno.to_ne_bytes());
        // SAFETY: _exit ends the process at once; it has no precondition. The child must not
        // return into `main`, which would report the error a second time.
        unsafe { libc::_exit(127) }
    }

    /// The parent's side: waits until the `child` has exec'd the `program`; if that failed,
    /// reaps the child and fails with status 127. (A child that fails before its `exec` also
    /// closes the pipe, and reports its error itself.)
    pub fn wait_for_exec(self, program: &Program, child: Pid) -> anyhow::Result<()> {
        drop(self.1); // else the parent's own write end keeps end-of-file away
        let mut errno = [0u8; 4];
        // Four bytes, written at once (less than PIPE_BUF): a read gets all of them or none.
        // (mymore catches no signal: nothing interrupts the read.)
        if nix::unistd::read(&self.0, &mut errno).context("read (exec check)")? == 0 {
            return Ok(());
        }
        let _ = wait_child(child); // it has _exit(127)ed: no zombie left behind
        let errno = Errno::from_raw(i32::from_ne_bytes(errno));
        Err(program.cannot_run(errno).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Vec<OsString> {
        line.split_whitespace().map(OsString::from).collect()
    }

    #[test]
    fn finds_programs_in_path_and_by_path() {
        assert_eq!(Program::find(&words("ls -l")).unwrap().name, "ls");
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
        assert!(
            error.to_string().ends_with("EACCES: Permission denied"),
            "{error}"
        );
        assert_eq!(error.status(), 127);
    }

    #[test]
    fn a_command_line_of_plain_words_is_run_without_a_shell() {
        let error = Program::shell_command("no-such-program-ipclab -R").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("cannot run 'no-such-program-ipclab'"));
        let pager = Program::shell_command(" cat\t-u ").unwrap();
        assert_eq!((pager.name.as_str(), pager.argv.len()), ("cat", 2));
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
