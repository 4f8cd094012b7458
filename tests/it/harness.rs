//! The lab bench: runs the real binaries the way a student would, under a deadline, and checks
//! that nothing is left behind.
//!
//! * [`Lab::new`] gives each test its own lab ID (`IPCLAB_ID`, claimed with a lock file so that
//!   concurrent `cargo test` threads and two `make test` runs never share keys; the file is
//!   removed when the lab is dropped) and its own temporary directory (the working directory of
//!   everything it starts).
//! * [`Lab::start`] spawns a binary in a process group of its own; [`Running`] waits for a line of
//!   its output, signals it, and [`Running::finish`]es it. Nothing waits without a deadline: a
//!   hang fails the test and shows what the process said so far. A process that hangs or is
//!   dropped unfinished is killed with everything it forked.
//! * Dropping the [`Lab`] asserts that no queue or segment with its keys and no `.fifo*` file in its
//!   directory remains (and removes any it finds, so one failed test does not leak into the
//!   machine).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ipclab::sys::ipc::Key;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

/// How long anything in a test may take: generous, it catches hangs, not slowness.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// How soon "at once" is ([`Running::finish_at_once`]): far more than a real wake-up takes on a
/// loaded machine, far less than a timeout or a slow polling loop would.
pub const AT_ONCE: Duration = Duration::from_secs(5);

/// The path of one of the suite's binaries, as cargo built it for this test run: the test
/// crate lists its package's binaries in `crate::PROGRAMS` (cargo gives a test crate the paths
/// of its own package's binaries only, as `CARGO_BIN_EXE_<name>`). This harness serves the
/// lecture crate's tests and, through `#[path]`, ipcbench's (`bench/tests/it/main.rs`).
pub fn exe(name: &str) -> Option<&'static str> {
    crate::PROGRAMS
        .iter()
        .find(|(program, _)| *program == name)
        .map(|(_, path)| *path)
}

/// For the packages beside the lecture crate (`bench/`, `watch/`): the exercises `names` as the
/// lecture crate builds them, next to `beside` (one of the package's own binaries). Cargo gives
/// a test crate the paths of its own package's binaries only, so the exercises are built here
/// once, with the same profile into the same directory — in a `cargo test --workspace` they are
/// up to date already, and cargo has nothing to do.
#[allow(dead_code)] // the lecture crate has its exercises already
pub fn exercises_beside(beside: &str, names: &[&'static str]) -> Vec<(&'static str, &'static str)> {
    let binaries = Path::new(beside).parent().unwrap();
    let profile = match binaries.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--package",
            "ipclab",
            "--profile",
            profile,
        ])
        .args(names.iter().flat_map(|name| ["--bin", name]))
        .arg("--target-dir")
        .arg(binaries.parent().unwrap())
        .current_dir(crate::ROOT)
        .status()
        .expect("cargo build of the exercises");
    assert!(built.success(), "cargo build of the exercises failed");
    names
        .iter()
        .map(|&name| {
            let path = binaries.join(name).to_str().unwrap().to_owned();
            (name, &*path.leak())
        })
        .collect()
}

/// The programs that are packages of their own beside the lecture crate (`bench/`, `watch/`).
pub const EXTRAS: [&str; 2] = ["ipcbench", "ipcwatch"];

/// Whether this test crate checks the commands of the labs.md section with `heading`: the
/// package that builds a section's program checks it — ipcbench's own tests its section
/// (`10. ipcbench — …`), the lecture crate's every section not named after such a program.
pub fn manual_section_is_ours(heading: &str) -> bool {
    let named = heading.split_whitespace().nth(1).unwrap_or_default();
    match EXTRAS.contains(&named) {
        true => exe(named).is_some(),
        false => exe("pipe").is_some(),
    }
}

/// Whether this test crate checks `command`, a command of the labs.md section with `heading`:
/// one that builds or runs a program of another package (`make ipcwatch`, `./ipcwatch --id 5`)
/// is that package's, wherever it stands; any other is its section's.
pub fn manual_command_is_ours(heading: &str, command: &str) -> bool {
    let words: Vec<&str> = command.split_whitespace().collect();
    let built = match words.first() {
        Some(&"make") => words.get(1).copied(),
        _ => None,
    };
    let program = words.iter().find_map(|w| w.strip_prefix("./")).or(built);
    match program {
        Some(program) if EXTRAS.contains(&program) => exe(program).is_some(),
        _ => manual_section_is_ours(heading),
    }
}

/// One test's bench: a lab ID of its own and a temporary directory.
pub struct Lab {
    id: u32,
    dir: tempfile::TempDir,
    _claim: IdClaim, // dropped last: the ID stays ours until its objects are checked
}

impl Lab {
    /// A new bench with a lab ID no other test (of this or another test run) is using.
    pub fn new() -> Lab {
        let claim = claim_id();
        Lab {
            id: claim.id,
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
    /// `args`, run in [`Lab::dir`] with `IPCLAB_ID` set to this bench's ID and none of the other
    /// variables the options read (`IPCLAB_TRACE`, `IPCLAB_STEP`… exported in the tester's
    /// shell would change what the programs print): a test that wants one sets it.
    /// (`IPCLAB_LOCK_DIR` is passed on: the bench looks for lock files where the programs put
    /// them.)
    pub fn command<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Command {
        let mut command = Command::new(exe(program).unwrap_or(program));
        for variable in ipclab::cli::ENVIRONMENT {
            command.env_remove(variable);
        }
        command
            .args(args)
            .current_dir(self.dir())
            .env("IPCLAB_ID", self.id.to_string())
            .env("NO_COLOR", "1") // classroom mode's colours: a test that wants them unsets it
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

    /// The liveness lock files of this bench's keys (`ipclab::peer::lock_path`).
    fn lock_files(&self) -> [PathBuf; 2] {
        [
            ipclab::peer::lock_path(ipclab::queue::MSGQ1, Key::queue(self.id)),
            ipclab::peer::lock_path(ipclab::sipc::SIPC1, Key::segment(self.id)),
        ]
    }

    /// What this bench's runs left behind: its queue and segment, their servers' lock files,
    /// `.fifo*` files in its directory.
    pub fn leftovers(&self) -> Vec<String> {
        let mut found = Vec::new();
        let queue = Key::queue(self.id).raw() as i64;
        let segment = Key::segment(self.id).raw() as i64;
        if sysv_keys("msg").contains(&queue) {
            found.push(format!("message queue {queue:#x}"));
        }
        if sysv_keys("shm").contains(&segment) {
            found.push(format!("shared memory segment {segment:#x}"));
        }
        found.extend(
            self.lock_files()
                .iter()
                .filter(|lock| lock.exists())
                .map(|lock| format!("lock file {}", lock.display())),
        );
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
        let queue = Key::queue(self.id).to_string();
        let segment = Key::segment(self.id).to_string();
        let _ = Command::new("ipcrm")
            .args(["-Q", &queue])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ipcrm")
            .args(["-M", &segment])
            .stderr(Stdio::null())
            .status();
        for lock in self.lock_files() {
            let _ = std::fs::remove_file(lock);
        }
        if !thread::panicking() {
            panic!("the test left behind: {}", left.join(", "));
        }
    }
}

/// Claims a lab ID in 0x100..0x1000 (0 and the low IDs are left to people) by locking a file
/// named after it; the kernel drops the lock when this test process ends, however it ends.
fn claim_id() -> IdClaim {
    std::fs::create_dir_all(id_lock_file(0).parent().unwrap()).unwrap();
    let first = 0x100 + (std::process::id() * 37 + next_serial() * 7) % 0xf00;
    for offset in 0..0xf00 {
        let id = 0x100 + (first - 0x100 + offset) % 0xf00;
        let Some(claim) = IdClaim::try_lock(id) else {
            continue;
        };
        // An ID whose objects someone left behind would fail the test for nothing: skip it.
        let busy = sysv_keys("msg").contains(&(Key::queue(id).raw() as i64))
            || sysv_keys("shm").contains(&(Key::segment(id).raw() as i64));
        if !busy {
            return claim;
        }
    }
    panic!("no free lab ID");
}

/// A lab ID held by an exclusive `flock` on its file in `$TMPDIR/ipclab-test-ids`. Dropping it
/// removes the file (so that runs leave none behind) and then releases the lock.
struct IdClaim {
    id: u32,
    _lock: Flock<File>,
}

impl IdClaim {
    /// Locks the file of `id`; `None` if someone else holds it.
    ///
    /// A holder removes its file while still holding the lock. Whoever opened that file just
    /// before may lock it just after: a lock on a file that no longer has this name. So once
    /// locked, check that the name still leads to the locked file, and start again if not.
    fn try_lock(id: u32) -> Option<IdClaim> {
        let path = id_lock_file(id);
        loop {
            let file = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .unwrap();
            let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).ok()?;
            let locked = lock.metadata().unwrap();
            let named = std::fs::metadata(&path);
            if named.is_ok_and(|n| (n.dev(), n.ino()) == (locked.dev(), locked.ino())) {
                return Some(IdClaim { id, _lock: lock });
            }
        }
    }
}

impl Drop for IdClaim {
    fn drop(&mut self) {
        // Removed while locked: see try_lock for why that is safe.
        let _ = std::fs::remove_file(id_lock_file(self.id));
    }
}

/// The file whose lock claims lab ID `id`.
fn id_lock_file(id: u32) -> PathBuf {
    std::env::temp_dir()
        .join("ipclab-test-ids")
        .join(format!("{id:#x}"))
}

fn next_serial() -> u32 {
    static SERIAL: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    SERIAL.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A command for `program args…` run as user `nobody` (65534), for another user's objects (see
/// [`Lab::command`]); `None`, after saying `SKIPPED` and why, when the tests do not run as root
/// (in CI they do).
pub fn as_nobody<S: AsRef<OsStr>>(lab: &Lab, program: &str, args: &[S]) -> Option<Command> {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("SKIPPED: needs root to act as another user");
        return None;
    }
    let mut command = lab.command(
        "setpriv",
        &["--reuid=65534", "--regid=65534", "--clear-groups"],
    );
    command.arg(exe(program).unwrap_or(program)).args(args);
    Some(command)
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
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| proc_stat(Path::new(&entry.ok()?.file_name())))
        .filter(|stat| stat.ppid == parent)
        .map(|stat| stat.pid)
        .collect()
}

/// Whether process `pid` exists and has not ended (a zombie has ended: only its parent's
/// `wait` is missing).
pub fn is_running(pid: Pid) -> bool {
    proc_stat(Path::new(&pid.to_string())).is_some_and(|stat| stat.state != 'Z')
}

/// The fields of `/proc/PID/stat` the tests need.
struct ProcStat {
    pid: Pid,
    state: char,
    ppid: Pid,
}

/// Reads `/proc/<name>/stat`; `None` if there is no such process.
fn proc_stat(name: &Path) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(name).join("stat")).ok()?;
    // pid (comm) state ppid …  — comm may hold spaces, so split after its ')'.
    let (head, tail) = stat.rsplit_once(')')?;
    let mut tail = tail.split_whitespace();
    let state = tail.next()?.chars().next()?;
    let ppid = tail.next()?.parse().ok()?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    Some(ProcStat {
        pid: Pid::from_raw(pid),
        state,
        ppid: Pid::from_raw(ppid),
    })
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
    /// Spawns `command` with stdout and stderr captured, in a process group of its own, so that
    /// the processes it forks can be killed with it.
    pub fn spawn(mut command: Command) -> Running {
        let description = describe(&command);
        let mut child = command
            .process_group(0)
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

    /// Everything the process has written on stdout so far.
    pub fn stdout_so_far(&self) -> String {
        self.stdout.lossy()
    }

    /// Sends `signal` to the process (only to it, not to the processes it forked).
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
    pub fn finish_within(self, limit: Duration) -> Finished {
        let until = self.started + limit;
        self.finish_by(until, limit)
    }

    /// [`Running::finish`] for a test that says "at once": the process (and whoever holds its
    /// output) must be done within [`AT_ONCE`] from now, not merely before the [`DEADLINE`].
    pub fn finish_at_once(self) -> Finished {
        self.finish_by(Instant::now() + AT_ONCE, AT_ONCE)
    }

    /// Waits until `until` (`limit` says how long that was, for the report).
    fn finish_by(mut self, until: Instant, limit: Duration) -> Finished {
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() >= until {
                self.kill_group();
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

    /// Kills the process and everything it forked (its process group), and reaps it.
    fn kill_group(&mut self) {
        // The group outlives a reaped leader while members remain, and its ID is not reused
        // before it is empty: a late killpg hits only this test's processes, or no one.
        let _ = killpg(self.pid(), Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    /// Nothing a test started outlives it: not the process, not a child it forked (a sync
    /// child left spinning by a broken parent would run on after `cargo test`).
    fn drop(&mut self) {
        self.kill_group();
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

/// A program run with `--step` on a pseudo-terminal (`script`), stepped by writing Enter into
/// it (or any command line run there, [`Stepped::on_terminal`], and keys typed into it). What
/// appears on the terminal is also written to a file, `typescript`, to look at while it runs.
pub struct Stepped {
    pub script: Running,
    pub keys: OwnedFd,
    typescript: PathBuf,
}

impl Stepped {
    pub fn start(lab: &Lab, program: &str) -> Stepped {
        Stepped::start_with(lab, program, &[])
    }

    /// [`Stepped::start`] with more arguments (words without blanks or quotes).
    pub fn start_with(lab: &Lab, program: &str, args: &[&str]) -> Stepped {
        let mut command_line = format!("{} --step", exe(program).unwrap());
        for arg in args {
            command_line.push(' ');
            command_line.push_str(arg);
        }
        Stepped::on_terminal(lab, program, &command_line)
    }

    /// `command_line` (a shell's) run on a pseudo-terminal; its typescript is named after `name`.
    pub fn on_terminal(lab: &Lab, name: &str, command_line: &str) -> Stepped {
        // Close-on-exec: the programs other tests start meanwhile must not inherit our end.
        let (reader, keys) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let typescript = lab.dir().join(format!("typescript.{name}"));
        let mut script = lab.command("script", &["-qfec", command_line]);
        script.arg(&typescript).stdin(Stdio::from(reader));
        Stepped {
            script: Running::spawn(script),
            keys,
            typescript,
        }
    }

    /// Everything on the terminal so far, without the terminal's carriage returns.
    pub fn screen(&self) -> String {
        String::from_utf8_lossy(&self.bytes_on_screen()).replace('\r', "")
    }

    /// Every byte written to the terminal so far, carriage returns and escapes included.
    pub fn bytes_on_screen(&self) -> Vec<u8> {
        std::fs::read(&self.typescript).unwrap_or_default()
    }

    /// Waits for the `n`-th prompt (counted from 1: `[PROGRAM PID] next: CALL`, a line) and
    /// returns the PID and the call it names.
    pub fn prompt(&self, n: usize) -> (Pid, String) {
        let mut found = None;
        wait_until(&format!("prompt {n}"), || {
            let screen = self.screen();
            let mut prompts = screen.split("] next: ").skip(1);
            let before = screen
                .match_indices("] next: ")
                .nth(n - 1)
                .map(|(at, _)| at);
            found = prompts.nth(n - 1).zip(before).and_then(|(after, at)| {
                let (call, _) = after.split_once('\n')?;
                let pid = screen[..at].rsplit_once(' ')?.1.parse().ok()?;
                Some((Pid::from_raw(pid), call.to_owned()))
            });
            found.is_some()
        });
        found.unwrap()
    }

    pub fn press_enter(&self) {
        nix::unistd::write(&self.keys, b"\n").unwrap();
    }

    /// Waits for the program to end: how it ended, and everything its terminal showed.
    pub fn finish(self) -> (Finished, String) {
        let run = self.script.finish();
        let screen = String::from_utf8_lossy(&std::fs::read(&self.typescript).unwrap_or_default())
            .replace('\r', "");
        (run, screen)
    }

    /// Types `c` + Enter: the program runs on to its end without stopping.
    pub fn run_on(&self) {
        nix::unistd::write(&self.keys, b"c\n").unwrap();
    }
}

/// Steps `stepped` through its first `n - 1` calls, checking each prompt's call name, and
/// returns the PID at the `n`-th prompt (before `calls[n - 1]`).
pub fn step_to(stepped: &Stepped, calls: &[&str]) -> Pid {
    for (i, call) in calls.iter().enumerate() {
        let (pid, shown) = stepped.prompt(i + 1);
        assert!(
            shown.starts_with(call),
            "prompt {}: {shown:?}, not {call}",
            i + 1
        );
        if i + 1 == calls.len() {
            return pid;
        }
        stepped.press_enter();
    }
    unreachable!("no calls")
}

#[test]
fn a_lab_command_passes_on_no_option_variable_but_its_lab_id() {
    let lab = Lab::new();
    let command = lab.command("pipe", &[] as &[&str]);
    let envs: HashMap<&OsStr, Option<&OsStr>> = command.get_envs().collect();
    let id = lab.id().to_string();
    for variable in ipclab::cli::ENVIRONMENT {
        let expected = match variable {
            "IPCLAB_ID" => Some(OsStr::new(&id)),
            _ => None, // removed
        };
        assert_eq!(
            envs.get(OsStr::new(variable)),
            Some(&expected),
            "{variable}"
        );
    }
}

#[test]
fn a_process_that_hangs_fails_the_test_shows_its_output_and_is_killed_whole() {
    let lab = Lab::new();
    let (hanging, sleeper) = shell_with_a_sleeping_child(&lab);
    let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        hanging.finish_within(Duration::from_millis(300))
    }))
    .expect_err("a hang must fail the test");
    let message = panic.downcast_ref::<String>().unwrap();
    assert!(message.contains("did not finish within 0.3 s"), "{message}");
    assert!(message.contains("said-before-hanging"), "{message}");
    assert!(message.contains("sleep 60"), "{message}");
    wait_until("the hanging process's child to be killed", || {
        !is_running(sleeper)
    });
}

/// `sh` waiting for a `sleep 60` it started, and that sleep's PID.
fn shell_with_a_sleeping_child(lab: &Lab) -> (Running, Pid) {
    let shell = lab.start("sh", &["-c", "sleep 60 & echo said-before-hanging; wait"]);
    shell.wait_for_stdout("said-before-hanging");
    let sleeper = children_of(shell.pid());
    assert_eq!(sleeper.len(), 1, "sh should have started one sleep");
    (shell, sleeper[0])
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

#[test]
fn a_dropped_process_takes_everything_it_started_with_it() {
    let lab = Lab::new();
    let (shell, sleeper) = shell_with_a_sleeping_child(&lab);
    drop(shell);
    wait_until("the dropped process's child to be killed", || {
        !is_running(sleeper)
    });
}

#[test]
fn a_dropped_lab_removes_its_id_lock_file() {
    let lab = Lab::new();
    let lock = id_lock_file(lab.id());
    let inode = std::fs::metadata(&lock).unwrap().ino();
    drop(lab);
    // Another test may claim the same ID at once: that makes a lock file of its own.
    let left = std::fs::metadata(&lock).is_ok_and(|now| now.ino() == inode);
    assert!(!left, "{} was left behind", lock.display());
}

#[test]
fn an_id_claimed_while_its_lock_file_is_removed_has_one_holder() {
    // Threads claiming one ID (outside the range Lab uses, and this test run's own: two runs at
    // once must not share it) and removing its lock file as they let go: whoever locked a file
    // just removed must notice and not count as a holder.
    let id: u32 = 0x10_0000 + std::process::id();
    let holders = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let holders = Arc::clone(&holders);
            thread::spawn(move || {
                for _ in 0..3000 {
                    if let Some(claim) = IdClaim::try_lock(id) {
                        let before = holders.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        assert_eq!(before, 0, "two holders of one ID");
                        thread::yield_now();
                        holders.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                        drop(claim);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(!id_lock_file(id).exists());
}
