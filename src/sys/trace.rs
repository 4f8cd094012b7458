//! Classroom mode: each system call of the lecture, said in C notation as it happens.
//!
//! | option         | environment      | what happens around each lecture call                     |
//! |----------------|------------------|-----------------------------------------------------------|
//! | `--trace`      | `IPCLAB_TRACE=1` | one line on stderr as it returns: `[msgq1 4711] msgget(0x8000, IPC_CREAT\|0600) = 65538` |
//! | `--step`       | `IPCLAB_STEP=1`  | before it, the call is shown on the terminal and waits for Enter (`c` + Enter: run on without stopping) |
//! | `--slow SECS`  | `IPCLAB_SLOW`    | before it, a pause of SECS seconds (slow motion for a projector) |
//!
//! Every binary has these options ([`crate::cli::run`] adds them). The lines are made by the
//! wrappers of [`crate::sys`] **where the call is made** ([`call`]): they name each call as the
//! slides do, with the real
//! arguments and result, so the trace cannot disagree with what the program really did. When
//! classroom mode is off a wrapper costs one branch: no formatting, no extra system call.
//!
//! `--step` reads the terminal (`/dev/tty`), not stdin (mymore's stdin is a pipe). A parent and
//! its child on one terminal each wait for a line: each Enter releases one pending call, and the
//! prompt names the process (program and PID) whose call it is.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use nix::errno::Errno;
use nix::poll::PollFlags;

use crate::rt::out;
use crate::rt::signals;
use crate::rt::wait::{self, Deadline};

/// Whether any of the three modes is on: the one flag a wrapper reads when it is off.
static ON: AtomicBool = AtomicBool::new(false);
/// `--step`, until `c` + Enter turns it off: a flag in memory shared with the processes this one
/// forks later (a parent and its child on one terminal stop stepping together), or this
/// process's own flag if the shared page cannot be had.
static STEP: AtomicPtr<AtomicBool> = AtomicPtr::new(std::ptr::null_mut());
static STEP_HERE: AtomicBool = AtomicBool::new(false);
/// `--slow`, in microseconds (0: off).
static SLOW_MICROS: AtomicU64 = AtomicU64::new(0);
/// The terminal `--step` reads, opened at start.
static TTY: Mutex<Option<File>> = Mutex::new(None);

/// What classroom mode is asked to do (the command line's `--trace`, `--step`, `--slow`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classroom {
    /// Print each lecture call as it returns.
    pub trace: bool,
    /// Stop before each lecture call until Enter.
    pub step: bool,
    /// Pause this long before each lecture call (`None` or zero: no pause).
    pub slow: Option<Duration>,
}

impl Classroom {
    /// Turns classroom mode on as the options say. `--step` needs a terminal to read Enter
    /// from: without one it is an error (a usage error, for the caller to report).
    pub fn enable(&self) -> Result<(), String> {
        if self.step {
            // Non-blocking: when the other process of a pair takes the line first, our read
            // finds nothing (EAGAIN) instead of waiting for the next line.
            let tty = File::options()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open("/dev/tty")
                .map_err(|e| {
                    format!("--step needs a terminal to read Enter from (/dev/tty: {e})")
                })?;
            // A program started in the background (`./fifos &`) would be stopped (SIGTTIN) the
            // moment it read the terminal: say so now instead.
            let foreground = nix::unistd::tcgetpgrp(&tty) == Ok(nix::unistd::getpgrp());
            if !foreground {
                return Err(
                    "--step needs the terminal in the foreground: run the program in a \
                            terminal of its own, not in the background with &"
                        .into(),
                );
            }
            *TTY.lock().unwrap_or_else(|p| p.into_inner()) = Some(tty);
            STEP.store(shared_flag(), Ordering::Relaxed);
            stepping().store(true, Ordering::Relaxed);
        }
        // `--slow 0` (or IPCLAB_SLOW=0) is no slow motion.
        let slow = self.slow.filter(|slow| !slow.is_zero());
        if let Some(slow) = slow {
            let micros = u64::try_from(slow.as_micros()).unwrap_or(u64::MAX);
            SLOW_MICROS.store(micros.max(1), Ordering::Relaxed);
        }
        ON.store(self.trace || self.step || slow.is_some(), Ordering::Relaxed);
        Ok(())
    }
}

/// The `--step` flag: the shared one if there is one, else this process's own.
fn stepping() -> &'static AtomicBool {
    let shared = STEP.load(Ordering::Relaxed);
    // SAFETY: a non-null pointer in STEP points into a page mapped once and never unmapped
    // (shared_flag), which holds an AtomicBool (all-zero bytes are `false`).
    unsafe { shared.as_ref() }.unwrap_or(&STEP_HERE)
}

/// A flag in an anonymous `MAP_SHARED` page, shared with children forked later; null if the page
/// cannot be had (then each process steps on its own).
fn shared_flag() -> *mut AtomicBool {
    use nix::sys::mman::{mmap_anonymous, MapFlags, ProtFlags};
    let size = std::num::NonZeroUsize::new(std::mem::size_of::<AtomicBool>())
        .unwrap_or(std::num::NonZeroUsize::MIN);
    // SAFETY: a new anonymous mapping, at an address the kernel chooses: it overlaps nothing.
    // It is never unmapped, so the pointer stays valid for the life of the process (and of the
    // children that inherit it); the kernel fills it with zeros, a valid `AtomicBool` (false).
    match unsafe {
        mmap_anonymous(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    } {
        Ok(page) => page.as_ptr().cast(),
        Err(_) => std::ptr::null_mut(),
    }
}

/// Whether classroom mode is on (a wrapper's one branch).
#[inline]
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Makes the lecture call `make`, said as `describe()` (the call in C notation, e.g.
/// `msgget(0x8000, IPC_CREAT|0600)`), with its result said by `show` (e.g. the queue ID).
///
/// When classroom mode is on: pauses first (`--step`, `--slow`), then prints
/// `[PROGRAM PID] CALL = RESULT` on stderr, or `= -1 ENOENT (No such file or directory)`.
#[inline]
pub fn call<T>(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<T>,
    show: impl FnOnce(&T) -> String,
) -> nix::Result<T> {
    traced(describe, make, show, Pause::EndedBySignal)
}

/// Like [`call`], for a cleanup call (an `unlink`, `close`, `munmap`, `shmdt` or `IPC_RMID` that
/// an owner makes when it is dropped): a termination signal during the pause does not stop it,
/// since cleaning up is what the signal's path needs.
#[inline]
pub fn cleanup_call<T>(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<T>,
    show: impl FnOnce(&T) -> String,
) -> nix::Result<T> {
    traced(describe, make, show, Pause::NeverEnds)
}

/// Like [`call`], with no `--step` or `--slow` pause of its own: for the second of two calls
/// that must follow each other at once (mycp3's `linkat` and `rename`, between which a
/// `kill -9` would leave a name behind): the pause before the first serves both.
#[inline]
pub fn call_unpaused<T>(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<T>,
    show: impl FnOnce(&T) -> String,
) -> nix::Result<T> {
    traced(describe, make, show, Pause::None)
}

/// The pause before a call, and whether a termination signal during it stops the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// A lecture call ([`call`]): a signal during the pause stops it.
    EndedBySignal,
    /// A cleanup call ([`cleanup_call`]): made whatever happens during the pause.
    NeverEnds,
    /// No pause ([`call_unpaused`]).
    None,
}

/// [`call`], [`cleanup_call`] or [`call_unpaused`], as `pause` says.
#[inline]
pub fn traced<T>(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<T>,
    show: impl FnOnce(&T) -> String,
    pause: Pause,
) -> nix::Result<T> {
    if !enabled() {
        return make();
    }
    let text = describe();
    if pause != Pause::None {
        let paused = pause_before(&text);
        if pause == Pause::EndedBySignal {
            paused?;
        }
    }
    let result = make();
    let shown = match &result {
        Ok(value) => show(value),
        Err(errno) => errno_text(*errno),
    };
    line(&format!("{text} = {shown}"));
    result
}

/// Like [`call`], for a call whose line is best written once its result is known: `after`
/// gives the whole line (`pipe([3, 4]) = 0`, `read(3, "Hello", 4096) = 5`); `describe` is
/// what `--step` shows before the call and what a failure is printed with.
pub fn call_shown<T>(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<T>,
    after: impl FnOnce(&T) -> String,
) -> nix::Result<T> {
    if !enabled() {
        return make();
    }
    let text = describe();
    pause_before(&text)?;
    let result = make();
    match &result {
        Ok(value) => line(&after(value)),
        Err(errno) => line(&format!("{text} = {}", errno_text(*errno))),
    }
    result
}

/// Like [`call`], for a call that does not return when it succeeds (`execv`): the line is
/// printed before the call, and its failure after it.
pub fn call_no_return(describe: impl FnOnce() -> String, make: impl FnOnce() -> Errno) -> Errno {
    if !enabled() {
        return make();
    }
    let text = describe();
    if let Err(errno) = pause_before(&text) {
        return errno;
    }
    line(&text);
    let errno = make();
    line(&format!("{text} = {}", errno_text(errno)));
    errno
}

/// Prints one trace line, `[PROGRAM PID] text`, on stderr.
pub fn line(text: &str) {
    out::stderr_bytes(format!("[{}] {text}\n", whose()).as_bytes());
}

/// `PROGRAM PID`: whose call a line or prompt is.
fn whose() -> String {
    format!("{} {}", out::program(), std::process::id())
}

/// `-1 ENOENT (No such file or directory)`, as strace and the slides show a failed call.
pub fn errno_text(errno: Errno) -> String {
    format!("-1 {errno:?} ({})", errno.desc())
}

/// `--slow` and `--step` before a call.
///
/// A termination signal that arrives during the pause ends it and fails the call with `EINTR`
/// without making it: the pause is a wait like any other, and the program stops. Once a signal
/// has been caught there is no pause at all, and the call is made: it is the cleanup on the
/// signal's path (an `unlink`, an `IPC_RMID` when an owner is dropped).
fn pause_before(text: &str) -> nix::Result<()> {
    if signals::caught().is_some() {
        return Ok(());
    }
    let slow = SLOW_MICROS.load(Ordering::Relaxed);
    if slow > 0 {
        let _ = wait::poll(&[], Deadline::within(Some(Duration::from_micros(slow))));
    }
    if stepping().load(Ordering::Relaxed) && signals::caught().is_none() {
        wait_for_enter(text);
    }
    match signals::caught() {
        Some(_) => Err(Errno::EINTR),
        None => Ok(()),
    }
}

/// Shows the call about to be made on the terminal and waits for a line typed there (or a
/// termination signal).
fn wait_for_enter(text: &str) {
    let mut tty = TTY.lock().unwrap_or_else(|p| p.into_inner());
    let Some(tty) = tty.as_mut() else {
        return;
    };
    // A line of its own, so that two processes' prompts on one terminal never share one.
    let prompt = format!(
        "[{}] next: {text}   [Enter: run it, c Enter: run to the end]\n",
        whose()
    );
    if out::write_to(tty.as_fd(), prompt.as_bytes()).is_err() {
        return;
    }
    let mut answer = [0u8; 256];
    loop {
        // Look again now and then: `c` typed to the other process of a parent and child on one
        // terminal ends the stepping of both (the flag is shared).
        let a_while = Deadline::within(Some(Duration::from_millis(100)));
        match wait::poll(&[(tty.as_fd(), PollFlags::POLLIN)], a_while) {
            Ok(_) => {}
            Err(e) if e.is::<wait::TimedOut>() => match stepping().load(Ordering::Relaxed) {
                true => continue,
                false => return,
            },
            Err(_) => {
                // A signal (see pause_before): end the prompt's line before anything else.
                let _ = out::write_to(tty.as_fd(), b"\n");
                return;
            }
        }
        match tty.read(&mut answer) {
            // Another process on this terminal took the line: wait for the next one.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) | Ok(0) => {
                stepping().store(false, Ordering::Relaxed); // the terminal is gone: run on
                return;
            }
            Ok(n) => {
                if answer[..n].trim_ascii().eq_ignore_ascii_case(b"c") {
                    stepping().store(false, Ordering::Relaxed);
                }
                return;
            }
        }
    }
}

/// A set of flags as C writes it: the names of the bits set in `value`, joined by `|`
/// (`IPC_CREAT|IPC_EXCL`), then any bits left over in octal (`|0600`); `zero` if none.
pub fn flags(value: i64, names: &[(i64, &str)], zero: &str) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut left = value;
    for &(bit, name) in names {
        if bit != 0 && value & bit == bit {
            parts.push(name.to_string());
            left &= !bit;
        }
    }
    if left != 0 {
        parts.push(format!("0{left:o}"));
    }
    if parts.is_empty() {
        zero.to_string()
    } else {
        parts.join("|")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_named_then_octal() {
        let names = [(0o1000, "IPC_CREAT"), (0o2000, "IPC_EXCL")];
        assert_eq!(flags(0o1600, &names, "0"), "IPC_CREAT|0600");
        assert_eq!(flags(0o3600, &names, "0"), "IPC_CREAT|IPC_EXCL|0600");
        assert_eq!(flags(0, &names, "0"), "0");
    }

    #[test]
    fn a_call_when_off_is_just_the_call() {
        let result = call(|| unreachable!(), || Ok(5), |_| unreachable!());
        assert_eq!(result, Ok(5));
        assert_eq!(
            errno_text(Errno::ENOENT),
            "-1 ENOENT (No such file or directory)"
        );
    }
}
