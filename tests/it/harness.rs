//! The lab bench: runs the real binaries the way a student would, under a deadline, and checks
//! that nothing is left behind.
//!
//! * [`Lab::new`] gives each test its own lab ID (`IPCLAB_ID`, claimed with a lock file so that
//!   concurrent `cargo test` threads and two `make test` runs never share keys) and its own
//!   temporary directory (the working directory of everything it starts).
//! * [`Lab::start`] spawns a binary; [`Running`] waits for a line of its output, signals it, and
//!   [`Running::finish`]es it. Nothing waits without a deadline: a hang fails the test and shows
//!   what the process said so far.
//! * Dropping the [`Lab`] asserts that no queue or segment with its keys and no `.fifo*` file in its
//!   directory remains (and removes any it finds, so one failed test does not leak into the
//!   machine).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// How long anything in a test may take: generous, it catches hangs, not slowness.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The path of one of the suite's binaries, as cargo built it for this test run.
pub fn exe(name: &str) -> Option<&'static str> {
    Some(match name {
        "pipe" => env!("CARGO_BIN_EXE_pipe"),
        "sync" => env!("CARGO_BIN_EXE_sync"),
        "mymore" => env!("CARGO_BIN_EXE_mymore"),
        "fifos" => env!("CARGO_BIN_EXE_fifos"),
        "fifoc" => env!("CARGO_BIN_EXE_fifoc"),
        "msgq1" => env!("CARGO_BIN_EXE_msgq1"),
        "msgq2" => env!("CARGO_BIN_EXE_msgq2"),
        _ => return None,
    })
}

/// One test's bench: a lab ID of its own and a temporary directory.
pub struct Lab {
    id: u32,
    dir: tempfile::TempDir,
    _claim: nix::fcntl::Flock<File>,
}

impl Lab {
    /// A new bench with a lab ID no other test (of this or another test run) is using.
    pub fn new() -> Lab {
        let (id, claim) = claim_id();
        Lab {
            id,
            dir: tempfile::Builder::new()
                .prefix("ipclab-test")
                .tempdir()
                .unwrap(),
            _claim: claim,
        }
    }

    /// This bench's lab ID (what `--id` and `IPCLAB_ID` say).
    pub fn id(&self) -> u32 {
        self.id
    }

    /// This bench's directory: the working directory of every process it starts.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A command for `program` (one of the suite's binaries, or any program on `$PATH`) with
    /// `args`, run in [`Lab::dir`] with `IPCLAB_ID` set to this bench's ID.
    pub fn command<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Command {
        let mut command = Command::new(exe(program).unwrap_or(program));
        command
            .args(args)
            .current_dir(self.dir())
            .env("IPCLAB_ID", self.id.to_string())
            .env_remove("PAGER")
            .stdin(Stdio::null());
        command
    }

    /// Starts `program args…` (see [`Lab::command`]).
    pub fn start<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Running {
        Running::spawn(self.command(program, args))
    }

    /// Runs `program args…` to its end (see [`Lab::command`]).
    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Finished {
        self.start(program, args).finish()
    }

    /// What this bench's runs left behind: its queue and segment, `.fifo*` files in its directory.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let queue = 0x8000 + self.id as i64;
        let segment = 0x9000 + self.id as i64;
        if sysv_keys("msg").contains(&queue) {
            found.push(format!("message queue {queue:#x}"));
        }
        if sysv_keys("shm").contains(&segment) {
            found.push(format!("shared memory segment {segment:#x}"));
        }
        found.extend(
            fifo_files(self.dir())
                .iter()
                .map(|p| p.display().to_string()),
        );
        found
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        let left = self.leftovers();
        if left.is_empty() {
            return;
        }
        // Remove them whatever happens, so that a failed test does not leak into the machine.
        let queue = format!("{:#x}", 0x8000 + self.id);
        let segment = format!("{:#x}", 0x9000 + self.id);
        let _ = Command::new("ipcrm")
            .args(["-Q", &queue])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ipcrm")
            .args(["-M", &segment])
            .stderr(Stdio::null())
            .status();
        if !thread::panicking() {
            panic!("the test left behind: {}", left.join(", "));
        }
    }
}

/// Claims a lab ID in 0x100..0x1000 (0 and the low IDs are left to people) by locking a file
/// named after it; the kernel drops the lock when this test process ends, however it ends.
fn claim_id() -> (u32, nix::fcntl::Flock<File>) {
    use nix::fcntl::{Flock, FlockArg};
    let locks = std::env::temp_dir().join("ipclab-test-ids");
    std::fs::create_dir_all(&locks).unwrap();
    let first = 0x100 + (std::process::id() * 37 + next_serial() * 7) % 0xf00;
    for offset in 0..0xf00 {
        let id = 0x100 + (first - 0x100 + offset) % 0xf00;
        let file = File::create(locks.join(format!("{id:#x}"))).unwrap();
        let Ok(claim) = Flock::lock(file, FlockArg::LockExclusiveNonblock) else {
            continue;
        };
        // An ID whose objects someone left behind would fail the test for nothing: skip it.
        let busy = sysv_keys("msg").contains(&(0x8000 + id as i64))
            || sysv_keys("shm").contains(&(0x9000 + id as i64));
        if !busy {
            return (id, claim);
        }
    }
    panic!("no free lab ID");
}

fn next_serial() -> u32 {
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// The keys listed in `/proc/sysvipc/TABLE` (`msg`, `shm`): its first column, in decimal.
pub fn sysv_keys(table: &str) -> Vec<i64> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{table}")).unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect()
}

/// The `.fifo*` files in `dir`.
pub fn fifo_files(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with(".fifo"))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// The processes whose parent is `parent` (read from `/proc/*/stat`).
pub fn children_of(parent: Pid) -> Vec<Pid> {
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().filter_map(Result::ok) {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …  — comm may hold spaces, so split after its ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid: Option<i32> = tail.split_whitespace().nth(1).and_then(|p| p.parse().ok());
        let pid: Option<i32> = head.split_whitespace().next().and_then(|p| p.parse().ok());
        if let (Some(pid), Some(ppid)) = (pid, ppid) {
            if ppid == parent.as_raw() {
                children.push(Pid::from_raw(pid));
            }
        }
    }
    children
}

/// Polls `condition` until it holds; panics with `what` at the [`DEADLINE`].
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let started = Instant::now();
    while !condition() {
        assert!(started.elapsed() < DEADLINE, "gave up waiting for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// Everything one stream of a process said, filled in by a reader thread.
#[derive(Default)]
struct Captured {
    text: Mutex<(Vec<u8>, bool)>, // (bytes so far, reached end-of-file)
    grew: Condvar,
}

impl Captured {
    fn collect(stream: impl Read + Send + 'static) -> Arc<Captured> {
        let captured = Arc::new(Captured::default());
        let filler = Arc::clone(&captured);
        thread::spawn(move || {
            let mut stream = stream;
            let mut chunk = [0u8; 4096];
            loop {
                let n = stream.read(&mut chunk).unwrap_or(0);
                let mut text = filler.text.lock().unwrap();
                text.0.extend_from_slice(&chunk[..n]);
                text.1 = n == 0;
                filler.grew.notify_all();
                if n == 0 {
                    return;
                }
            }
        });
        captured
    }

    /// Waits until `done(bytes, at_eof)` holds or `until` passes; returns whether it held.
    fn wait(&self, until: Instant, done: impl Fn(&[u8], bool) -> bool) -> bool {
        let mut text = self.text.lock().unwrap();
        loop {
            if done(&text.0, text.1) {
                return true;
            }
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            text = self.grew.wait_timeout(text, left).unwrap().0;
        }
    }

    fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap().0).into_owned()
    }

    fn bytes(&self) -> Vec<u8> {
        self.text.lock().unwrap().0.clone()
    }
}

/// A process started by a test. Killed (and reaped) if the test drops it unfinished.
pub struct Running {
    command: String,
    child: Child,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    started: Instant,
}

impl Running {
    /// Spawns `command` with stdout and stderr captured.
    pub fn spawn(mut command: Command) -> Running {
        let description = describe(&command);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {description}: {e}"));
        Running {
            stdout: Captured::collect(child.stdout.take().unwrap()),
            stderr: Captured::collect(child.stderr.take().unwrap()),
            child,
            command: description,
            started: Instant::now(),
        }
    }

    /// The process ID.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    /// Waits until stdout contains `text`; panics with everything said at the deadline.
    pub fn wait_for_stdout(&self, text: &str) {
        self.wait_for(&self.stdout, "stdout", text);
    }

    /// Waits until stderr contains `text`; panics with everything said at the deadline.
    pub fn wait_for_stderr(&self, text: &str) {
        self.wait_for(&self.stderr, "stderr", text);
    }

    fn wait_for(&self, stream: &Captured, name: &str, text: &str) {
        let found = stream.wait(self.started + DEADLINE, |bytes, _| {
            String::from_utf8_lossy(bytes).contains(text)
        });
        if !found {
            panic!(
                "{name} never showed {text:?}\n{}",
                self.report("still running")
            );
        }
    }

    /// Sends `signal` to the process.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("kill({signal}): {e}"));
    }

    /// Waits for the process to end and for everyone holding its stdout and stderr (children
    /// it forked) to close them. Past the [`DEADLINE`] the process is killed and the test fails,
    /// showing what it said.
    pub fn finish(self) -> Finished {
        self.finish_within(DEADLINE)
    }

    /// [`Running::finish`] with another limit (counted from the start of the process).
    pub fn finish_within(mut self, limit: Duration) -> Finished {
        let until = self.started + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "did not finish within {} s: killed\n{}",
                    limit.as_secs_f64(),
                    self.report("killed")
                );
            }
            thread::sleep(Duration::from_millis(2));
        };
        for (name, stream) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            if !stream.wait(until, |_, eof| eof) {
                panic!(
                    "exited ({status}) but something it started still holds its {name}\n{}",
                    self.report(&status.to_string())
                );
            }
        }
        Finished {
            command: self.command.clone(),
            status,
            stdout: self.stdout.bytes(),
            stderr: self.stderr.lossy(),
        }
    }

    fn report(&self, status: &str) -> String {
        report(
            &self.command,
            status,
            &self.stdout.lossy(),
            &self.stderr.lossy(),
        )
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process that has ended, with everything it said. Its `Display` is the failure report.
#[derive(Debug)]
pub struct Finished {
    pub command: String,
    pub status: ExitStatus,
    /// Raw bytes, to check for stray NULs; see [`Finished::stdout`].
    pub stdout: Vec<u8>,
    pub stderr: String,
}

impl Finished {
    /// stdout as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// stdout's lines.
    pub fn lines(&self) -> Vec<String> {
        self.stdout().lines().map(str::to_owned).collect()
    }

    /// The exit code (`None` if killed by a signal).
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Asserts exit status 0 and an empty stderr.
    pub fn assert_success(&self) -> &Finished {
        assert!(
            self.status.success() && self.stderr.is_empty(),
            "expected success\n{self}"
        );
        self
    }

    /// Asserts the exit code and that stderr contains `message`.
    pub fn assert_failure(&self, code: i32, message: &str) -> &Finished {
        assert_eq!(self.code(), Some(code), "wrong exit status\n{self}");
        assert!(
            self.stderr.contains(message),
            "stderr lacks {message:?}\n{self}"
        );
        self
    }
}

impl fmt::Display for Finished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = self.status.to_string();
        f.write_str(&report(
            &self.command,
            &status,
            &self.stdout(),
            &self.stderr,
        ))
    }
}

fn report(command: &str, status: &str, stdout: &str, stderr: &str) -> String {
    format!("--- command: {command}\n--- status: {status}\n--- stdout:\n{stdout}\n--- stderr:\n{stderr}\n---")
}

fn describe(command: &Command) -> String {
    let envs: HashMap<_, _> = command.get_envs().collect();
    let id = envs
        .get(OsStr::new("IPCLAB_ID"))
        .and_then(|v| v.as_ref())
        .map(|v| format!("IPCLAB_ID={} ", v.to_string_lossy()))
        .unwrap_or_default();
    let args: Vec<_> = command
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let dir = command
        .get_current_dir()
        .map(|d| format!(" (in {})", d.display()));
    format!(
        "{id}{} {}{}",
        command.get_program().to_string_lossy(),
        args.join(" "),
        dir.unwrap_or_default()
    )
}

#[test]
fn a_process_that_hangs_fails_the_test_and_shows_its_output() {
    let lab = Lab::new();
    let hanging = lab.start("sh", &["-c", "echo said-before-hanging; exec sleep 60"]);
    hanging.wait_for_stdout("said-before-hanging");
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hanging.finish_within(Duration::from_millis(300))
    }))
    .expect_err("a hang must fail the test");
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("did not finish within 0.3 s"), "{message}");
    assert!(message.contains("said-before-hanging"), "{message}");
    assert!(message.contains("sleep 60"), "{message}");
}

#[test]
fn a_leftover_fails_the_test_and_is_removed() {
    let lab = Lab::new();
    let fifo = lab.dir().join(".fifo42");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    assert_eq!(lab.leftovers(), vec![fifo.display().to_string()]);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drop(lab)));
    let message = panic.expect_err("a leftover must fail the test");
    assert!(message
        .downcast_ref::<String>()
        .unwrap()
        .contains(".fifo42"));
}
