//! Classroom mode: each system call of the lecture, said in C notation as it happens.
//!
//! | option           | environment          | what happens around each lecture call      |
//! |------------------|----------------------|--------------------------------------------|
//! | `--trace`        | `IPCLAB_TRACE=1`     | one line as it returns: `[msgq1 4711] msgget(0x8000, IPC_CREAT\|0600) = 65538` |
//! | `--trace-time`   | `IPCLAB_TRACE=time`  | the same, each line after the time of day to the microsecond; a call that waits (and sipc's spin on the flag) also says when the wait starts (`<unfinished …>`) |
//! | `--trace-to PATH`| `IPCLAB_TRACE_TO`    | the lines go to PATH (another terminal, a file) instead of stderr |
//! | `--step`         | `IPCLAB_STEP=1`      | before it, the call is shown on the terminal and waits for Enter (`c` + Enter: run to the end) |
//! | `--step-at CALLS`| `IPCLAB_STEP_AT`     | the same, only before the calls named (`msgrcv,shmctl`); the others are traced |
//! | `--slow SECS`    | `IPCLAB_SLOW`        | before it, a pause of SECS seconds (slow motion for a projector) |
//!
//! Every binary has these options ([`crate::cli::run`] adds them). The lines are made by the
//! wrappers of [`crate::sys`] **where the call is made** ([`call`]): they name each call as the
//! slides do, with the real arguments and result, so the trace cannot disagree with what the
//! program really did. Events that are no system call — the sipc flag, mipc's counter — are said
//! the same way ([`event`]). When classroom mode is off a wrapper costs one branch: no
//! formatting, no extra system call, stdout and stderr byte for byte as without it.
//!
//! A line starts at column 0 even when stdout's last line is unfinished on the same terminal
//! (`Sent a request.....`). On a terminal each process's `[NAME PID]` has a colour of its own
//! (not with `NO_COLOR`). `--step` reads the terminal (`/dev/tty`), not stdin (mymore's stdin is
//! a pipe); a parent and its child on one terminal each wait for a line, and each Enter
//! releases one pending call (one typed while no prompt was on the screen is dropped). A prompt fits 80 columns: a long call is cut (its line after the
//! call shows it whole), and the keys are said once, at a process's first prompt.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::PollFlags;
use nix::sys::stat::Mode;

use crate::rt::aside::aside;
use crate::rt::wait::{self, Deadline};
use crate::rt::{clock, out, signals};

/// Whether classroom mode is on: the one flag a wrapper reads when it is off.
static ON: AtomicBool = AtomicBool::new(false);
/// The state of `--step` (or `--step-at`) in memory shared with the processes this one forks
/// later ([`shared_page`]), or this process's own if the shared page cannot be had.
static STEP: AtomicPtr<Stepping> = AtomicPtr::new(std::ptr::null_mut());
static STEP_HERE: Stepping = Stepping {
    on: AtomicBool::new(false),
    prompts: AtomicU32::new(0),
};

/// What the processes of one program (a parent and its children, on one terminal) share about
/// stepping. All-zero bytes are a valid value: off, no prompt.
#[repr(C)]
struct Stepping {
    /// Whether they step, until `c` + Enter at any prompt turns it off for all.
    on: AtomicBool,
    /// How many of them show a prompt and wait for its Enter now.
    prompts: AtomicU32,
}
/// Whether this process has shown its first prompt (with the keys).
static PROMPTED: AtomicBool = AtomicBool::new(false);
/// `--slow`, in microseconds (0: off).
static SLOW_MICROS: AtomicU64 = AtomicU64::new(0);
/// The rest of the settings, made once at start.
static SETTINGS: OnceLock<Settings> = OnceLock::new();

struct Settings {
    /// The terminal `--step` reads and prompts on.
    tty: Option<OwnedFd>,
    /// Where trace lines go instead of stderr (`--trace-to`).
    trace_to: Option<OwnedFd>,
    /// `--step-at`: the calls to stop before; empty: all.
    step_at: Vec<String>,
    /// `--trace-time`.
    time: bool,
    /// Colours for `[NAME PID]` in trace lines, and in prompts.
    colour_lines: bool,
    colour_prompts: bool,
}

/// What classroom mode is asked to do (the command line's options, see the module docs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Classroom {
    /// Print each lecture call as it returns.
    pub trace: bool,
    /// Print the time of day before each line, and blocking calls when they start too.
    pub time: bool,
    /// Where to print the lines: `None` for stderr.
    pub trace_to: Option<PathBuf>,
    /// Stop before each lecture call until Enter.
    pub step: bool,
    /// Stop only before these calls (implies `step` and `trace`).
    pub step_at: Vec<String>,
    /// Pause this long before each lecture call (`None` or zero: no pause).
    pub slow: Option<Duration>,
}

/// Why classroom mode cannot be turned on as asked: a usage error, for the caller to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// What went wrong: `--step-at needs a terminal to read Enter from (…)`.
    pub message: String,
    /// The stepping option the error is about (`--step` or `--step-at`), if it is about
    /// stepping (the caller may say where that option came from).
    pub stepping: Option<&'static str>,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Classroom {
    /// Turns classroom mode on as the options say. Refused (a usage error for the caller to
    /// report) if stepping has no terminal to read Enter from, or `--trace-to` cannot be opened.
    pub fn enable(&self) -> Result<(), Refused> {
        let step_option = match (self.step, self.step_at.is_empty()) {
            (true, _) => Some("--step"),
            (false, false) => Some("--step-at"),
            (false, true) => None,
        };
        let step = step_option.is_some();
        let tty = match step_option {
            Some(option) => Some(open_terminal(option).map_err(|message| Refused {
                message,
                stepping: step_option,
            })?),
            None => None,
        };
        let trace_to = match &self.trace_to {
            Some(path) => Some(open_trace_to(path).map_err(|message| Refused {
                message,
                stepping: None,
            })?),
            None => None,
        };
        let slow = self.slow.filter(|slow| !slow.is_zero());
        if let Some(slow) = slow {
            let micros = u64::try_from(slow.as_micros()).unwrap_or(u64::MAX);
            SLOW_MICROS.store(micros.max(1), Ordering::Relaxed);
        }
        let on = self.trace || self.time || trace_to.is_some() || step || slow.is_some();
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let colour_lines = !no_colour
            && match &trace_to {
                Some(fd) => is_terminal(fd.as_fd()),
                None => is_terminal(std::io::stderr().as_fd()),
            };
        let settings = Settings {
            colour_prompts: !no_colour && tty.is_some(),
            colour_lines,
            tty,
            trace_to,
            step_at: self.step_at.clone(),
            time: self.time,
        };
        let _ = SETTINGS.set(settings);
        if step {
            STEP.store(shared_page(), Ordering::Relaxed);
            stepping().store(true, Ordering::Relaxed);
        }
        ON.store(on, Ordering::Relaxed);
        Ok(())
    }
}

fn is_terminal(fd: BorrowedFd<'_>) -> bool {
    nix::unistd::isatty(fd).unwrap_or(false)
}

/// `/dev/tty`, for stepping (`option`: `--step` or `--step-at`, for the error): non-blocking
/// (when the other process of a pair takes a line first, our read finds nothing instead of
/// waiting for the next one), and in the foreground (a program started with `&` would be
/// stopped, SIGTTIN, the moment it read it).
fn open_terminal(option: &str) -> Result<OwnedFd, String> {
    let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC | OFlag::O_NOCTTY;
    let tty = nix::fcntl::open("/dev/tty", flags, Mode::empty()).map_err(|e| {
        format!(
            "{option} needs a terminal to read Enter from (/dev/tty: {})",
            e.desc()
        )
    })?;
    if nix::unistd::tcgetpgrp(&tty) != Ok(nix::unistd::getpgrp()) {
        return Err(format!(
            "{option} needs the terminal in the foreground: run the program in a terminal of \
             its own, not in the background with &"
        ));
    }
    Ok(aside(tty))
}

/// `--trace-to PATH`: a terminal (another pane's `/dev/pts/N`) or a file, appended to (a
/// parent and its child write their lines into one file), made 0600 if new. A FIFO must have
/// a reader already: the open does not wait for one (`O_NONBLOCK`, then cleared, so that the
/// lines are written whole). On a terminal the lines start at column 0, though its cursor may
/// stand after its shell's prompt (the line is cleared first, once: no blank line comes of it
/// when the other program of a pair traces there too); a file gets no such bytes.
fn open_trace_to(path: &std::path::Path) -> Result<OwnedFd, String> {
    use std::os::unix::ffi::OsStrExt;
    let shown = crate::layout::text::printable(path.as_os_str().as_bytes());
    let failed = |e: Errno| format!("--trace-to {shown}: {}", crate::rt::exit::reason(e));
    let flags = OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NOCTTY;
    let opened = nix::fcntl::open(
        path,
        flags | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
        Mode::S_IRUSR | Mode::S_IWUSR,
    );
    let fd = opened.map_err(|e| match e {
        Errno::ENXIO => format!("--trace-to {shown}: a FIFO nobody reads (start its reader first)"),
        other => failed(other),
    })?;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_APPEND)).map_err(failed)?;
    if is_terminal(fd.as_fd()) {
        let _ = out::write_to(fd.as_fd(), b"\r\x1b[K"); // to column 0, the line cleared
    }
    Ok(aside(fd))
}

/// The `--step` state: the shared one if there is one, else this process's own.
fn shared() -> &'static Stepping {
    let shared = STEP.load(Ordering::Relaxed);
    // SAFETY: a non-null pointer in STEP points into a page mapped once and never unmapped
    // (shared_page), which holds a Stepping (all-zero bytes are a valid one).
    unsafe { shared.as_ref() }.unwrap_or(&STEP_HERE)
}

/// The `--step` flag (see [`Stepping::on`]).
fn stepping() -> &'static AtomicBool {
    &shared().on
}

/// A [`Stepping`] in a shared page, shared with children forked later; null if the page cannot
/// be had (then each process steps on its own). The page is a memfd named `ipclab-step`, so
/// that `/proc/PID/maps` names it (`/memfd:ipclab-step (deleted)`) instead of showing a second
/// `/dev/zero` beside mipc's counter.
fn shared_page() -> *mut Stepping {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    use nix::sys::mman::{mmap, MapFlags, ProtFlags};
    let size = std::num::NonZeroUsize::new(std::mem::size_of::<Stepping>())
        .unwrap_or(std::num::NonZeroUsize::MIN);
    let Ok(memfd) = memfd_create(c"ipclab-step", MFdFlags::MFD_CLOEXEC) else {
        return std::ptr::null_mut();
    };
    if nix::unistd::ftruncate(&memfd, size.get() as i64).is_err() {
        return std::ptr::null_mut();
    }
    let prot = ProtFlags::PROT_READ | ProtFlags::PROT_WRITE;
    // SAFETY: a new mapping of the memfd, at an address the kernel chooses: it overlaps
    // nothing. It is never unmapped, so the pointer stays valid for the life of the process
    // (and of the children that inherit it); the memfd is zero-filled, a valid `Stepping`, and
    // the mapping is page-aligned, aligned enough for it.
    match unsafe { mmap(None, size, prot, MapFlags::MAP_SHARED, &memfd, 0) } {
        Ok(page) => page.as_ptr().cast(), // the memfd closes here; the mapping stays
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
/// `[PROGRAM PID] CALL = RESULT`, or `= -1 ENOENT (No such file or directory)`.
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

/// Like [`call`], for a call that may wait for a peer (a `read`, a `msgrcv`, a `waitpid`): with
/// `--trace-time` it is also said when it starts, `CALL <unfinished …>`, and then again with
/// its result, `<… resumed> CALL = RESULT`, so that the lines of two processes read in the
/// order things happened. Where the suite waits before such a call (`poll` first, or tries
/// with `IPC_NOWAIT`, so that `--timeout` and a termination signal end the wait), that wait
/// belongs in `make`: the start is said when the wait starts, not once it is over.
#[inline]
pub fn blocking_call<T>(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<T>,
    show: impl FnOnce(&T) -> String,
) -> nix::Result<T> {
    traced(describe, make, show, Pause::Blocking)
}

/// Like [`blocking_call`], for a parent's `waitpid`: made whatever happens during the pause
/// ([`Pause::Reap`]).
#[inline]
pub fn reap_call<T>(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<T>,
    show: impl FnOnce(&T) -> String,
) -> nix::Result<T> {
    traced(describe, make, show, Pause::Reap)
}

/// The pause before a call, and whether a termination signal during it stops the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pause {
    /// A lecture call ([`call`]): a signal during the pause stops it.
    EndedBySignal,
    /// A lecture call that may wait ([`blocking_call`]).
    Blocking,
    /// A cleanup call ([`cleanup_call`]): made whatever happens during the pause.
    NeverEnds,
    /// A parent's wait for its child ([`reap_call`]): said as a blocking call, made whatever
    /// happens during the pause — children are waited for on the signal's path too.
    Reap,
    /// No pause ([`call_unpaused`]).
    None,
}

/// [`call`], [`blocking_call`], [`cleanup_call`] or [`call_unpaused`], as `pause` says.
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
    made(
        &text,
        make,
        |value| format!("{text} = {}", show(value)),
        pause,
    )
}

/// Like [`call`], for a call whose line is best written once its result is known: `after`
/// gives the whole line (`pipe([3, 4]) = 0`, `read(3, "Hello", 4096) = 5`); `describe` is
/// what `--step` shows before the call and what a failure is printed with. A `blocking` call
/// also says when it starts, with `--trace-time` (see [`blocking_call`]).
pub fn call_shown<T>(
    describe: impl FnOnce() -> String,
    make: impl FnOnce() -> nix::Result<T>,
    after: impl FnOnce(&T) -> String,
    blocking: bool,
) -> nix::Result<T> {
    if !enabled() {
        return make();
    }
    let pause = if blocking {
        Pause::Blocking
    } else {
        Pause::EndedBySignal
    };
    made(&describe(), make, after, pause)
}

/// The one way a traced call is made: the pause (`--slow`, `--step`, as `pause` says), the
/// start of a call that may wait (`--trace-time`), the call, its line (`line_of` for a result,
/// `CALL = -1 ENOENT (…)` for a failure).
fn made<T>(
    text: &str,
    make: impl FnOnce() -> nix::Result<T>,
    line_of: impl FnOnce(&T) -> String,
    pause: Pause,
) -> nix::Result<T> {
    let text = said(text);
    let paused = match pause {
        Pause::None => Ok(()),
        _ => pause_before(text),
    };
    if !matches!(pause, Pause::NeverEnds | Pause::Reap) {
        paused?;
    }
    let blocking = matches!(pause, Pause::Blocking | Pause::Reap);
    around(blocking.then_some(text), make, |result| match result {
        Ok(value) => line_of(value),
        Err(errno) => format!("{text} = {}", errno_text(*errno)),
    })
}

/// Makes `make` and says what came of it (`said`). With `--trace-time`, a `waiting` one (a
/// call that may wait, a wait that is no call) is also said as it starts, `TEXT <unfinished
/// …>`, and then `<… resumed> SAID`, so that the lines of two processes read in the order
/// things happened: the start of a wait before the peer's line that ends it.
fn around<T>(
    waiting: Option<&str>,
    make: impl FnOnce() -> T,
    said: impl FnOnce(&T) -> String,
) -> T {
    let unfinished = waiting.filter(|_| settings().is_some_and(|s| s.time));
    if let Some(text) = unfinished {
        line(&format!("{text} <unfinished …>"));
    }
    let result = make();
    let said = said(&result);
    match unfinished {
        Some(_) => line(&format!("<… resumed> {said}")),
        None => line(&said),
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
    if let Err(errno) = pause_before(said(&text)) {
        return errno;
    }
    line(&text);
    let errno = make();
    line(&format!("{text} = {}", errno_text(errno)));
    errno
}

/// An event of the lecture that is no system call — `strcpy(shm + 4, "…")` and `*flag = 1` in
/// the sipc segment, mipc's `(*counter)++` — made by `act`, said and stepped like a call
/// (`--step-at` names it by its first word: `strcpy`, `*flag`, `(*counter)++`), its result said
/// by `show` (nothing if it says nothing). A termination signal during the pause fails it with
/// `EINTR`, the event not made.
pub fn event<T>(
    describe: impl FnOnce() -> String,
    act: impl FnOnce() -> T,
    show: impl FnOnce(&T) -> String,
) -> nix::Result<T> {
    if !enabled() {
        return Ok(act());
    }
    let text = describe();
    pause_before(said(&text))?;
    let done = act();
    match show(&done) {
        shown if shown.is_empty() => line(&text),
        shown => line(&format!("{text} = {shown}")),
    }
    Ok(done)
}

/// A wait that is no call — sipc's `while (*flag == 0)` — made by `wait`, with no pause (it
/// only looks), and said by `seen` when it ends: `*flag == 1 seen after 1502 looks`. With
/// `--trace-time` it is also said as it starts, as `describe()` (`while (*flag == 0)
/// <unfinished …>`), like a call that waits ([`blocking_call`]).
pub fn waited<T>(
    describe: impl FnOnce() -> String,
    wait: impl FnOnce() -> T,
    seen: impl FnOnce(&T) -> String,
) -> T {
    if !enabled() {
        return wait();
    }
    around(Some(&describe()), wait, seen)
}

fn settings() -> Option<&'static Settings> {
    SETTINGS.get()
}

/// The names of the calls and events of the suite as the trace says them (the first word of a
/// line: `msgrcv`, `*flag`), which `--step-at` takes. Every call and event said is one of them
/// (a debug build checks each as it is said), so a name given that is not here is a typo,
/// never a call.
pub const CALLS: [&str; 37] = [
    // pipes, FIFOs and files (crate::sys::fd)
    "pipe",
    "read",
    "write",
    "close",
    "dup2",
    "open",
    "mkfifo",
    "unlink",
    "rename",
    "renameat2",
    "lseek",
    "fchmod",
    "linkat",
    // processes (crate::sys::proc)
    "fork",
    "execv",
    "waitpid",
    // message queues (crate::sys::msg)
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    // shared memory and mappings (crate::sys::shm, crate::sys::mman)
    "shmget",
    "shmat",
    "shmdt",
    "shmctl",
    "mmap",
    "munmap",
    "madvise",
    "ftruncate",
    "posix_fallocate",
    "memcpy",
    // events, no system call (event): sipc's hand-off, mipc's counter
    "strcpy",
    "*flag",
    "(*counter)++",
    // beside the lecture's: ipcbench's semaphores and Unix sockets
    "semget",
    "semop",
    "semctl",
    "socketpair",
];

/// A name given to `--step-at`, trimmed (`shmat, shmdt` as one types it), if it is one of
/// [`CALLS`]; else why not, with the names it could be.
pub fn step_at_name(given: &str) -> Result<String, String> {
    let name = given.trim();
    if CALLS.contains(&name) {
        return Ok(name.to_string());
    }
    let lower = name.to_lowercase();
    let why = match name {
        "" => "an empty name".to_string(),
        _ if CALLS.contains(&lower.as_str()) => {
            format!("not a call of the suite (C's names are lower case: {lower})")
        }
        _ => "not a call or event of the suite".to_string(),
    };
    Err(format!("{why}; its calls and events: {}", CALLS.join(", ")))
}

/// `text`, a call or event about to be said, whose name is one of [`CALLS`] (checked in debug
/// builds: the tests run every call the suite makes).
fn said(text: &str) -> &str {
    debug_assert!(
        CALLS.contains(&name_of(text)),
        "{text}: its name is missing from trace::CALLS"
    );
    text
}

/// The name of the call in `text`: `msgrcv` for `msgrcv(65538, …)`, `*flag` for `*flag = 1`,
/// `(*counter)++` for itself.
fn name_of(text: &str) -> &str {
    let end = match text.starts_with('(') {
        true => text.find(' '),
        false => text.find(['(', ' ']),
    };
    &text[..end.unwrap_or(text.len())]
}

/// Prints one trace line, `[PROGRAM PID] text` (after the time of day with `--trace-time`), on
/// stderr or where `--trace-to` says.
pub fn line(text: &str) {
    let settings = settings();
    let colour = settings.is_some_and(|s| s.colour_lines);
    let time = match settings.is_some_and(|s| s.time) {
        true => format!("{} ", clock::now()),
        false => String::new(),
    };
    let line = format!("{time}{} {text}\n", whose(colour));
    match settings.and_then(|s| s.trace_to.as_ref()) {
        Some(fd) => out::line_to(fd.as_fd(), line.as_bytes()),
        None => out::stderr_bytes(line.as_bytes()),
    }
}

/// Six colours that read on dark and light backgrounds.
const COLOURS: [u8; 6] = [36, 33, 35, 32, 34, 31];
/// This process's colour, an index into [`COLOURS`] (`usize::MAX`: not chosen yet).
static COLOUR: AtomicUsize = AtomicUsize::new(usize::MAX);

/// This process's colour: chosen from its PID, or the one after its parent's ([`after_fork`]).
fn colour() -> u8 {
    let index = match COLOUR.load(Ordering::Relaxed) {
        usize::MAX => std::process::id() as usize % COLOURS.len(),
        index => index,
    };
    COLOUR.store(index, Ordering::Relaxed);
    COLOURS[index]
}

/// In a child just forked: a colour other than its parent's, and the keys said again at its
/// first prompt.
pub fn after_fork() {
    let parents = COLOURS.iter().position(|&c| c == colour()).unwrap_or(0);
    COLOUR.store((parents + 1) % COLOURS.len(), Ordering::Relaxed);
    PROMPTED.store(false, Ordering::Relaxed);
}

/// `[PROGRAM PID]`: whose call a line or prompt is, in its process's colour if `colour_on`.
fn whose(colour_on: bool) -> String {
    let (program, pid) = (out::program(), std::process::id());
    match colour_on {
        true => format!("\x1b[{}m[{program} {pid}]\x1b[0m", colour()),
        false => format!("[{program} {pid}]"),
    }
}

/// `-1 ENOENT (No such file or directory)`, as strace and the slides show a failed call.
pub fn errno_text(errno: Errno) -> String {
    format!("-1 {errno:?} ({})", errno.desc())
}

/// `--slow` and `--step` before a call.
///
/// A termination signal that arrives during the pause ends it and fails the call with `EINTR`
/// without making it: the pause is a wait like any other, and the program stops. Once a signal
/// has been caught there is no pause at all, and the call fails the same way: a lecture call
/// (`(*counter)++`, a `write`) is not made on the way out. A cleanup call ([`cleanup_call`]: an
/// `unlink`, an `IPC_RMID` when an owner is dropped) and a parent's `waitpid` are made all the
/// same ([`Pause::NeverEnds`], [`Pause::Reap`]): they are the signal's path.
fn pause_before(text: &str) -> nix::Result<()> {
    if signals::caught().is_some() {
        return Err(Errno::EINTR);
    }
    let slow = SLOW_MICROS.load(Ordering::Relaxed);
    if slow > 0 {
        let _ = wait::poll(&[], Deadline::within(Some(Duration::from_micros(slow))));
    }
    let stop_here = settings().is_some_and(|s| {
        s.step_at.is_empty() || s.step_at.iter().any(|name| name == name_of(text))
    });
    if stop_here && stepping().load(Ordering::Relaxed) && signals::caught().is_none() {
        wait_for_enter(text);
    }
    match signals::caught() {
        Some(_) => Err(Errno::EINTR),
        None => Ok(()),
    }
}

/// The widest a prompt line is: a pane of a projector's screen.
const PROMPT_WIDTH: usize = 80;

/// `[msgq2 4711] next: msgsnd(65538, {type 1, "This is a request…`: the prompt for `text`, cut
/// to [`PROMPT_WIDTH`] columns.
fn prompt(text: &str, colour: bool, width: usize) -> String {
    let head = format!("[{} {}] next: ", out::program(), std::process::id());
    let room = width.saturating_sub(head.chars().count()).max(10);
    let call = match text.chars().count() > room {
        true => text.chars().take(room - 1).collect::<String>() + "…",
        false => text.to_string(),
    };
    format!("{} next: {call}\n", whose(colour))
}

/// A prompt on the terminal, counted in [`Stepping::prompts`] while it waits for its Enter.
struct Prompt;

impl Prompt {
    /// Counts a prompt about to be shown on `tty`. What was typed while no prompt of the
    /// program was on the screen — an Enter pressed while a call waited for a peer — is
    /// dropped first: the terminal would keep it, and the prompt would take it for its answer
    /// (a step nobody saw). Not while the other process of a pair shows a prompt: it may be
    /// that one's answer.
    fn shown(tty: BorrowedFd<'_>) -> Prompt {
        if shared().prompts.fetch_add(1, Ordering::SeqCst) == 0 {
            let _ = nix::sys::termios::tcflush(tty, nix::sys::termios::FlushArg::TCIFLUSH);
        }
        Prompt
    }
}

impl Drop for Prompt {
    fn drop(&mut self) {
        shared().prompts.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Shows the call about to be made on the terminal and waits for a line typed there (or a
/// termination signal).
fn wait_for_enter(text: &str) {
    let Some(settings) = settings() else { return };
    let Some(tty) = settings.tty.as_ref().map(OwnedFd::as_fd) else {
        return;
    };
    let colour = settings.colour_prompts;
    // Each on a line of its own, so that two processes' prompts on one terminal never share one.
    if !PROMPTED.swap(true, Ordering::Relaxed) {
        let keys = format!(
            "{} Enter: run the call shown. c Enter: run to the end.\n",
            whose(colour)
        );
        out::line_to(tty, keys.as_bytes());
    }
    let _shown = Prompt::shown(tty);
    // A pane narrower than 80 columns (three side by side on a projector's screen) cuts the
    // prompt shorter, so that its `…` never wraps onto a line of its own.
    let width =
        super::fd::window_size(tty).map_or(PROMPT_WIDTH, |(_, cols)| cols.min(PROMPT_WIDTH));
    out::line_to(tty, prompt(text, colour, width).as_bytes());
    let mut answer = [0u8; 256];
    loop {
        // Look again now and then: `c` typed to the other process of a parent and child on one
        // terminal ends the stepping of both (the flag is shared).
        let a_while = Deadline::within(Some(Duration::from_millis(100)));
        match wait::poll(&[(tty, PollFlags::POLLIN)], a_while) {
            Ok(_) => {}
            Err(e) if e.is::<wait::TimedOut>() => match stepping().load(Ordering::Relaxed) {
                true => continue,
                false => return,
            },
            Err(_) => {
                // A signal (see pause_before): end the prompt's line before anything else.
                let _ = out::write_to(tty, b"\n");
                return;
            }
        }
        match nix::unistd::read(tty, &mut answer) {
            // Another process on this terminal took the line: wait for the next one.
            Err(Errno::EAGAIN | Errno::EINTR) => continue,
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

    #[test]
    fn a_prompt_fits_80_columns_and_a_call_has_a_name() {
        let long = format!("msgsnd(65538, {{type 1, \"{}\"}}, 128, 0)", "x".repeat(100));
        let shown = prompt(&long, false, PROMPT_WIDTH);
        assert!(shown.trim_end().chars().count() <= 80, "{shown}");
        assert!(shown.trim_end().ends_with('…'), "{shown}");
        assert_eq!(
            prompt("pipe(fd)", false, PROMPT_WIDTH)
                .trim_end()
                .rsplit_once(' ')
                .unwrap()
                .1,
            "pipe(fd)"
        );
        assert_eq!(name_of("msgrcv(1, &msg, 128, 2, 0)"), "msgrcv");
        assert_eq!(name_of("*flag = 1"), "*flag");
        assert_eq!(name_of("(*counter)++ = 3"), "(*counter)++");
    }

    #[test]
    fn step_at_takes_the_trace_s_names_trimmed() {
        assert_eq!(step_at_name(" shmdt "), Ok("shmdt".to_string()));
        assert_eq!(step_at_name("*flag"), Ok("*flag".to_string()));
        for name in CALLS {
            assert_eq!(name_of(name), name, "a name as name_of finds it");
        }
        assert!(step_at_name("").unwrap_err().starts_with("an empty name"));
        assert!(step_at_name("  ").unwrap_err().starts_with("an empty name"));
        assert!(step_at_name("MSGRCV")
            .unwrap_err()
            .contains("lower case: msgrcv"));
        let unknown = step_at_name("nosuchcall").unwrap_err();
        assert!(
            unknown.contains("msgrcv, msgctl") && unknown.contains("*flag"),
            "{unknown}"
        );
    }
}
