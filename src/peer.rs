//! Who is alive, and what is a leftover: the one liveness model of the suite.
//!
//! Every server and client (FIFO, queue, segment) decides three things the same way, from facts
//! the kernel keeps — never from a timer, and never from a PID written in a peer's text:
//!
//! 1. **Is my peer alive?** A server of this suite holds a lock for as long as it lives
//!    ([`ServerLock`]; the kernel drops it however the process ends, even on `kill -9`), and a
//!    client watches it ([`ServerWatch`]). A FIFO's owner holds a `flock` on it. Beyond that the
//!    objects themselves say who uses them: `msg_lspid`/`msg_lrpid` of a queue, the processes
//!    blocked in `msgrcv`/`msgsnd` on it ([`queue_users`]), the processes that have a segment
//!    attached ([`attached`]), the processes that hold a FIFO open ([`holders`]). A PID alone
//!    proves only that a process with that number exists now ([`Process::alive`]): PIDs are
//!    reused, so "alive" may be a stranger, and the suite then errs on the side of waiting or
//!    refusing, never of removing.
//! 2. **Is this object a leftover?** Only when proven: nobody holds its server's lock, and no
//!    process that used it is alive (for a queue never used, its creator — known only when a
//!    server of this suite recorded it in its lock file). Then it is removed, with a message.
//! 3. **Otherwise refuse.** What is in use or ambiguous is left alone, with a message naming the
//!    PID and program in the way (`pid 4711 (msgq1)`) and what to do (stop it, or another `--id`).
//!
//! A program talking to the course's C programs only ever shows them values the C protocol has:
//! what this suite needs beyond it (a server's claim on a request, its liveness lock) lives
//! outside the C layout's fields.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::rt::aside::aside;
use crate::sys::ipc::{Key, OTHER_ID_HINT};

// ---- processes ------------------------------------------------------------------------------

/// A process that exists now, with the name the kernel gives it (`/proc/PID/comm`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Process {
    /// Its PID.
    pub pid: Pid,
    /// Its program's name (`msgq1`), or `?` if the kernel would not say.
    pub name: String,
}

impl Process {
    /// The process `pid`, if one exists (`kill(pid, 0)`: a process of another user counts).
    /// One that `/proc` lists counts too, though `kill` cannot reach it: run in a PID namespace
    /// of its own (a container) beside a `/proc` of the outer one, this process sees there, by
    /// their outer PIDs, processes it cannot signal — and they may well use our objects.
    pub fn alive(pid: Pid) -> Option<Process> {
        if pid.as_raw() <= 0 {
            return None;
        }
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm"));
        if kill(pid, None) == Err(Errno::ESRCH) && comm.is_err() {
            return None;
        }
        let name = comm
            .map(|name| name.trim_end().to_owned())
            .unwrap_or_else(|_| "?".into());
        Some(Process { pid, name })
    }

    /// Whether it runs this very program (the same executable file): another instance of us,
    /// which takes the same locks.
    pub fn runs_this_program(&self) -> bool {
        let inode = |path: String| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
        let theirs = inode(format!("/proc/{}/exe", self.pid));
        theirs.is_some() && theirs == inode("/proc/self/exe".into())
    }

    /// Whether it started before this process (`starttime` of `/proc/PID/stat`, in clock ticks
    /// since boot; the lower PID first within one tick): of two servers that meet, the older
    /// one stays.
    pub fn started_before_me(&self) -> bool {
        let start = |pid: Pid| -> Option<u64> {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // pid (comm) state ppid … : field 22, counted after comm's ')'.
            stat.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(19)?
                .parse()
                .ok()
        };
        let me = nix::unistd::getpid();
        match (start(self.pid), start(me)) {
            (Some(theirs), Some(mine)) => (theirs, self.pid.as_raw()) < (mine, me.as_raw()),
            _ => true, // cannot tell: let it stay
        }
    }

    /// The process from a PID as System V reports it (`msg_lspid`, `shm_cpid`…): 0 is nobody.
    pub fn from_raw(pid: libc::pid_t) -> Option<Process> {
        Process::alive(Pid::from_raw(pid))
    }
}

impl std::fmt::Display for Process {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "pid {} ({})", self.pid, self.name)
    }
}

/// [`listed`], cut after three: `pid 1 (a), pid 2 (b), pid 3 (c) and 5 more`.
pub fn listed_briefly(processes: &[Process]) -> String {
    match processes.len() {
        0..=3 => listed(processes),
        n => format!("{} and {} more", listed(&processes[..3]), n - 3),
    }
}

/// `pid 4711 (msgq1), pid 4712 (msgq2)`: processes for a message.
pub fn listed(processes: &[Process]) -> String {
    let shown: Vec<String> = processes.iter().map(Process::to_string).collect();
    shown.join(", ")
}

/// `processes` each once, in the order first given, this process aside: a process that is a
/// queue's last sender, its last receiver and its waiter is one user.
pub fn distinct(processes: impl IntoIterator<Item = Process>) -> Vec<Process> {
    let mut list = Vec::new();
    for process in processes {
        add(&mut list, Some(process));
    }
    list
}

/// This process's PID as `/proc` numbers it (`/proc/self`): in a PID namespace of its own
/// beside an outer `/proc`, not the PID `getpid` gives.
fn me_in_proc() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|link| link.to_str()?.parse().ok())
        .unwrap_or_else(|| nix::unistd::getpid().as_raw())
}

/// Adds `process` to `list` unless it is there already or is this process.
fn add(list: &mut Vec<Process>, process: Option<Process>) {
    if let Some(process) = process {
        let me = process.pid == nix::unistd::getpid() || process.pid.as_raw() == me_in_proc();
        if !me && !list.iter().any(|p| p.pid == process.pid) {
            list.push(process);
        }
    }
}

/// The PIDs of `/proc` other than this process's, and a file of each (`syscall`, `maps`…),
/// read if readable (another user's may not be: those are skipped).
fn each_process(file: &str) -> impl Iterator<Item = (Pid, String)> + '_ {
    let me = me_in_proc();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(move |&pid| pid != me)
        .filter_map(move |pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
            Some((Pid::from_raw(pid), text))
        })
}

/// The processes blocked in `msgrcv` or `msgsnd` on the queue `msqid` now (from
/// `/proc/PID/syscall`: see `waiting_in`).
pub fn queue_waiters(msqid: libc::c_int) -> Vec<Process> {
    waiting_in(&[libc::SYS_msgrcv, libc::SYS_msgsnd], msqid)
}

/// The processes blocked in `semop` or `semtimedop` on the semaphore set `semid` now.
pub fn semaphore_waiters(semid: libc::c_int) -> Vec<Process> {
    waiting_in(&[libc::SYS_semop, libc::SYS_semtimedop], semid)
}

/// The processes blocked now in one of `calls` whose first argument is `id` (from
/// `/proc/PID/syscall`, where the kernel shows the call a process waits in and its arguments;
/// another user's processes, or all others where ptrace is restricted, cannot be seen).
fn waiting_in(calls: &[libc::c_long], id: libc::c_int) -> Vec<Process> {
    let calls: Vec<String> = calls.iter().map(|call| call.to_string()).collect();
    let mut found = Vec::new();
    for (pid, syscall) in each_process("syscall") {
        let mut words = syscall.split_whitespace();
        let (Some(call), Some(first)) = (words.next(), words.next()) else {
            continue;
        };
        let first_id = first
            .strip_prefix("0x")
            .and_then(|hex| i64::from_str_radix(hex, 16).ok());
        if calls.iter().any(|c| c == call) && first_id == Some(i64::from(id)) {
            add(&mut found, Process::alive(pid));
        }
    }
    found
}

/// The processes that wait on some message queue unseen: this user's (root: anyone's), whose
/// `/proc/PID/syscall` — which queue — may not be read, while their `/proc/PID/wchan` says they
/// wait in `msgrcv` or `msgsnd`. That is what Yama's `ptrace_scope` 1 (Ubuntu's default) leaves
/// a user: the call a process waits in, not its arguments, for all but its own children. While
/// there are any, "nobody waits on this queue" is not proven. (A process that made itself
/// non-dumpable hides even its `wchan`: it cannot be told from one that waits on nothing.)
pub fn unseen_queue_waiters() -> Vec<Process> {
    let (me, euid) = (me_in_proc(), nix::unistd::geteuid());
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me);
    let hidden = pids.filter(|pid| {
        let dir = format!("/proc/{pid}");
        let ours =
            std::fs::metadata(&dir).is_ok_and(|m| euid.is_root() || m.uid() == euid.as_raw());
        let syscall = std::fs::read_to_string(format!("{dir}/syscall"));
        let wchan = std::fs::read_to_string(format!("{dir}/wchan")).unwrap_or_default();
        ours && waits_on_a_queue_unseen(&syscall, &wchan)
    });
    distinct(hidden.filter_map(|pid| Process::alive(Pid::from_raw(pid))))
}

/// Whether a process whose `/proc/PID/syscall` read gave `syscall` and whose `wchan` is
/// `wchan` waits on a message queue that cannot be named.
fn waits_on_a_queue_unseen(syscall: &std::io::Result<String>, wchan: &str) -> bool {
    let hidden = syscall
        .as_ref()
        .is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
    hidden && matches!(wchan.trim(), "do_msgrcv" | "do_msgsnd")
}

/// The processes of ours blocked opening a FIFO (`/proc/PID/wchan` `wait_for_partner`: no
/// reader, or no writer, yet) whose working directory is `dir` (the course's C programs name
/// their FIFOs relative to it), or cannot be seen. They hold no descriptor of the FIFO yet, so
/// which one they wait on cannot be seen.
pub fn fifo_openers(dir: &Path) -> Vec<Process> {
    let euid = nix::unistd::geteuid();
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let waiting = each_process("wchan").filter(|(pid, wchan)| {
        let ours = std::fs::metadata(format!("/proc/{pid}"))
            .is_ok_and(|m| euid.is_root() || m.uid() == euid.as_raw());
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"));
        let here = cwd.map_or(true, |cwd| cwd == dir);
        ours && here && wchan.trim() == "wait_for_partner"
    });
    distinct(waiting.filter_map(|(pid, _)| Process::alive(pid)))
}

/// The live processes that use the queue `msqid` as its `msqid_ds` and `/proc` say: the last
/// sender and receiver, and whoever waits in `msgrcv`/`msgsnd` on it now (this process aside).
pub fn queue_users(msqid: libc::c_int, stat: &libc::msqid_ds) -> Vec<Process> {
    let last = [stat.msg_lspid, stat.msg_lrpid].map(Process::from_raw);
    distinct(last.into_iter().flatten().chain(queue_waiters(msqid)))
}

/// The processes (this one aside) that have the segment `shmid` attached now: `/proc/PID/maps`
/// shows an attached segment as a `/SYSV<key>` mapping whose inode is the `shmid`.
pub fn attached(shmid: libc::c_int) -> Vec<Process> {
    let mut found = Vec::new();
    for (pid, maps) in each_process("maps") {
        let holds = maps.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() >= 6
                && fields[5].starts_with("/SYSV")
                && fields[4].parse::<i64>().ok() == Some(i64::from(shmid))
        });
        if holds {
            add(&mut found, Process::alive(pid));
        }
    }
    found
}

/// How a process holds a file open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFor {
    /// For reading (`O_RDONLY`).
    Reading,
    /// For writing (`O_WRONLY`).
    Writing,
    /// Both (`O_RDWR`).
    Both,
}

/// The processes (this one aside) that hold the file `(dev, ino)` open, and how: from their
/// `/proc/PID/fd` (another user's processes cannot be seen).
pub fn holders(dev: u64, ino: u64) -> Vec<(Process, OpenFor)> {
    let me = me_in_proc();
    let mut found: Vec<(Process, OpenFor)> = Vec::new();
    let pids = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me);
    for pid in pids {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::metadata(fd.path()) else {
                continue;
            };
            if (target.dev(), target.ino()) != (dev, ino) {
                continue;
            }
            let how = open_for(pid, &fd.file_name().to_string_lossy());
            if let Some(process) = Process::alive(Pid::from_raw(pid)) {
                if !found.iter().any(|(p, h)| p.pid == process.pid && *h == how) {
                    found.push((process, how));
                }
            }
        }
    }
    found
}

/// How descriptor `fd` of `pid` is open, from the `flags:` line (octal) of its `fdinfo`.
fn open_for(pid: i32, fd: &str) -> OpenFor {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).unwrap_or_default();
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|octal| i32::from_str_radix(octal.trim(), 8).ok())
        .unwrap_or(0);
    match flags & libc::O_ACCMODE {
        libc::O_WRONLY => OpenFor::Writing,
        libc::O_RDWR => OpenFor::Both,
        _ => OpenFor::Reading,
    }
}

// ---- a server's liveness lock ---------------------------------------------------------------

/// A server program, as its lock file and messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Server {
    /// The program: `msgq1`.
    pub program: &'static str,
    /// The call that makes the object it serves, for messages: `msgget`.
    pub call: &'static str,
    /// What it serves: `queue`.
    pub object: &'static str,
}

/// Proof that a server is alive and serves a key: a write lock on
/// `/dev/shm/ipclab-<UID>-<OBJECT>-<KEY>.lock` ([`lock_path`]), which the kernel drops however
/// the process ends. It is an open file description lock (`fcntl(F_OFD_SETLK)`), so that a client can ask
/// whether it is held (`F_OFD_GETLK`) without taking anything that a starting server could trip
/// over.
///
/// The file holds the server's PID and program (for messages) and, once made, the ID of the
/// object it serves ([`ServerLock::record`]): so the next server knows which object its
/// predecessor made, and can prove a queue never used to be that predecessor's leftover; and a
/// client knows whether the object is its server's at all (ipcbench takes the lock of the keys
/// it measures on). It is removed when the lock is dropped. A C server holds none.
#[derive(Debug)]
pub struct ServerLock {
    server: Server,
    path: PathBuf,
    file: File,
    previous: Option<i32>,
}

impl ServerLock {
    /// Takes the lock of `server` on `key`, or fails if a live one holds it:
    /// `msgget(key 0x8005): another msgq1 (pid 4711) is already serving this queue; …`.
    pub fn take(server: Server, key: Key) -> anyhow::Result<ServerLock> {
        ServerLock::take_at(lock_path(server, key), server, key)
    }

    fn take_at(path: PathBuf, server: Server, key: Key) -> anyhow::Result<ServerLock> {
        let shown = path.display();
        let failed = |call: &str, error: std::io::Error| lock_failed(server, &path, call, error);
        // A round repeats only if the server before us removed the file after we opened it.
        for _ in 0..10 {
            let mut file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map(|file| File::from(aside(file.into())))
                .map_err(|e| failed("open", e))?;
            let opened = file.metadata().map_err(|e| failed("fstat", e))?;
            if opened.uid() != nix::unistd::geteuid().as_raw() {
                anyhow::bail!(
                    "{shown} belongs to another user (uid {}), who keeps this {} off the key: ask \
                     them to remove it, or {OTHER_ID_HINT}",
                    opened.uid(),
                    server.program
                );
            }
            match fcntl(
                file.as_fd(),
                FcntlArg::F_OFD_SETLK(&whole_file(libc::F_WRLCK)),
            ) {
                Ok(_) => {}
                Err(Errno::EAGAIN | Errno::EACCES) => {
                    let holder = Recorded::read(&file);
                    let pid = match &holder.pid {
                        Some(pid) => format!(" (pid {pid})"),
                        None => String::new(),
                    };
                    let who = match holder.program {
                        Some(program) if program != server.program => program,
                        _ => format!("another {}", server.program),
                    };
                    let (call, object) = (server.call, server.object);
                    anyhow::bail!(
                        "{call}(key {key}): {who}{pid} is already serving this {object}; stop it \
                         first, or {OTHER_ID_HINT}"
                    );
                }
                Err(errno) => return Err(failed("fcntl(F_OFD_SETLK)", errno.into())),
            }
            let named = std::fs::symlink_metadata(&path).ok();
            if named.is_some_and(|n| (n.dev(), n.ino()) == (opened.dev(), opened.ino())) {
                let previous = Recorded::read(&file).id;
                file.set_len(0)
                    .and_then(|()| file.seek(SeekFrom::Start(0)).map(drop))
                    .and_then(|()| Recorded::write(&mut file, server, None))
                    .map_err(|e| failed("write", e))?;
                return Ok(ServerLock {
                    server,
                    path,
                    file,
                    previous,
                });
            }
        }
        anyhow::bail!(
            "{shown} keeps changing; is another {} starting and stopping?",
            server.program
        )
    }

    /// Where the lock file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The ID of the object the previous holder of this lock made, if it recorded one: a server
    /// that ended without removing it (`kill -9`) left it behind.
    pub fn previous(&self) -> Option<i32> {
        self.previous
    }

    /// Writes the ID of the object this server made into the lock file, after its PID: a client
    /// can then tell that this object's server has ended ([`ServerWatch`]).
    pub fn record(&mut self, id: i32) -> anyhow::Result<()> {
        let path = &self.path;
        self.file
            .set_len(0)
            .and_then(|()| self.file.seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| Recorded::write(&mut self.file, self.server, Some(id)))
            .map_err(|e| lock_failed(self.server, path, "write", e))
    }
}

impl Drop for ServerLock {
    fn drop(&mut self) {
        // Remove the file only while it is still ours (a tmp cleaner may have replaced it).
        let ours = match (self.file.metadata(), std::fs::symlink_metadata(&self.path)) {
            (Ok(open), Ok(named)) => (open.dev(), open.ino()) == (named.dev(), named.ino()),
            _ => false,
        };
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// A `struct flock` covering the whole file, of type `kind` (`F_WRLCK`).
fn whole_file(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain integers; all-zero is a valid value (start 0, length 0: the whole
    // file; pid 0, as F_OFD_* requires).
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock
}

/// The error of a call on the lock file, with what the file is for.
fn lock_failed(server: Server, path: &Path, call: &str, error: std::io::Error) -> anyhow::Error {
    let reason = match error.raw_os_error() {
        Some(errno) => crate::rt::exit::reason(Errno::from_raw(errno)),
        None => error.to_string(),
    };
    anyhow!(
        "{call}({}): {reason} (the lock that keeps a second {} off the key)",
        path.display(),
        server.program
    )
}

/// Where liveness locks live: `/dev/shm` (else `/tmp`), one place for every process of the
/// machine whatever its `$TMPDIR` — a server started with another `$TMPDIR` must still be seen
/// alive by its clients and by `ipcclean`. Like the keys, the place is shared by all users: the
/// file names hold the UID. `IPCLAB_LOCK_DIR` (an absolute path) puts them elsewhere, for
/// experiments: a server with a lock directory of its own is, to the others, like a C server.
pub fn lock_dir() -> PathBuf {
    match std::env::var_os("IPCLAB_LOCK_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        _ if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        _ => PathBuf::from("/tmp"),
    }
}

/// `/dev/shm/ipclab-<UID>-<OBJECT>-<KEY>.lock` (`ipclab-1000-queue-0x8000.lock`): the liveness
/// lock on `key` of `server`'s kind of object — one per key, whichever program serves it.
pub fn lock_path(server: Server, key: Key) -> PathBuf {
    let uid = nix::unistd::geteuid();
    lock_dir().join(format!("ipclab-{uid}-{}-{key}.lock", server.object))
}

/// What a lock file says: `PID PROGRAM ID` (the ID once the object is made).
#[derive(Debug, Default)]
struct Recorded {
    pid: Option<String>,
    program: Option<String>,
    id: Option<i32>,
}

impl Recorded {
    fn read(mut file: &File) -> Recorded {
        let mut text = String::new();
        let _ = file.seek(SeekFrom::Start(0));
        let _ = file.take(64).read_to_string(&mut text);
        let mut words = text.split_whitespace();
        let pid = words
            .next()
            .filter(|w| w.bytes().all(|b| b.is_ascii_digit()));
        Recorded {
            pid: pid.map(str::to_owned),
            program: words
                .next()
                .filter(|w| {
                    w.len() <= 32 && w.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
                .map(str::to_owned),
            id: words.next().and_then(|w| w.parse().ok()),
        }
    }

    /// Writes `PID PROGRAM [ID]` (the file is empty and at its start).
    fn write(file: &mut File, server: Server, id: Option<i32>) -> std::io::Result<()> {
        let (pid, program) = (std::process::id(), server.program);
        match id {
            Some(id) => writeln!(file, "{pid} {program} {id}"),
            None => writeln!(file, "{pid} {program}"),
        }
    }
}

/// A client's view of the server's liveness lock ([`ServerLock`]): whether the server that made
/// the object still runs. Only a lock file that names the very object counts: a C server holds
/// no lock, and a file left by a killed server names the object of that one.
#[derive(Debug)]
pub struct ServerWatch {
    file: File,
    pid: String,
    program: String,
}

impl ServerWatch {
    /// The lock file on `key` of `server`'s kind of object, if it is ours and names the object
    /// `id` (whichever program wrote it: see [`ServerWatch::program`]).
    pub fn find(server: Server, key: Key, id: i32) -> Option<ServerWatch> {
        ServerWatch::find_at(&lock_path(server, key), id)
    }

    /// [`ServerWatch::find`], refusing an object that another program of the suite serves
    /// (ipcbench measures on the lab's keys): a client must not take its data for a server's.
    pub fn find_serving(server: Server, key: Key, id: i32) -> anyhow::Result<Option<ServerWatch>> {
        let watch = ServerWatch::find(server, key, id);
        match &watch {
            Some(other) if other.program != server.program => Err(anyhow!(
                "{}(key {key}): the {} is not a {}'s: {} (pid {}) serves it; wait until it ends, \
                 or {OTHER_ID_HINT}",
                server.call,
                server.object,
                server.program,
                other.program,
                other.pid
            )),
            _ => Ok(watch),
        }
    }

    fn find_at(path: &Path, id: i32) -> Option<ServerWatch> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .map(|file| File::from(aside(file.into())))
            .ok()?;
        if file.metadata().ok()?.uid() != nix::unistd::geteuid().as_raw() {
            return None;
        }
        match Recorded::read(&file) {
            Recorded {
                pid: Some(pid),
                program: Some(program),
                id: Some(named),
            } if named == id => Some(ServerWatch { file, pid, program }),
            _ => None,
        }
    }

    /// The server's PID, as it wrote it.
    pub fn pid(&self) -> &str {
        &self.pid
    }

    /// The program that serves the object, as it wrote it: `msgq1` (or `ipcbench`, which
    /// measures on the lab's keys).
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Whether the server has ended: nobody holds its lock any more (`F_OFD_GETLK`, which takes
    /// nothing).
    pub fn ended(&self) -> bool {
        let mut probe = whole_file(libc::F_WRLCK);
        match fcntl(self.file.as_fd(), FcntlArg::F_OFD_GETLK(&mut probe)) {
            Ok(_) => probe.l_type == libc::F_UNLCK as libc::c_short,
            Err(_) => false, // cannot tell: assume it lives
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_with_its_name_and_pid_0_is_nobody() {
        let me = Process::alive(nix::unistd::getpid()).unwrap();
        assert!(!me.name.is_empty());
        assert_eq!(Process::from_raw(0), None);
        assert_eq!(
            listed(std::slice::from_ref(&me)),
            format!("pid {} ({})", me.pid, me.name)
        );
    }

    #[test]
    fn a_wait_on_a_queue_is_unseen_only_when_its_call_is_hidden_and_its_wchan_says_so() {
        let hidden = || Err(std::io::Error::from_raw_os_error(libc::EPERM));
        assert!(waits_on_a_queue_unseen(&hidden(), "do_msgrcv\n"));
        assert!(waits_on_a_queue_unseen(&hidden(), "do_msgsnd"));
        assert!(!waits_on_a_queue_unseen(&hidden(), "hrtimer_nanosleep"));
        assert!(!waits_on_a_queue_unseen(&hidden(), "0")); // non-dumpable: nothing to go by
        assert!(!waits_on_a_queue_unseen(
            &Ok("69 0x5 …".into()),
            "do_msgrcv"
        ));
        let gone = Err(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert!(!waits_on_a_queue_unseen(&gone, "do_msgrcv"));
    }

    #[test]
    fn a_lock_is_held_until_dropped_and_its_watch_sees_it_end() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::queue(0xabc);
        let server = Server {
            program: "peer-test",
            call: "msgget",
            object: "queue",
        };
        let path = dir.path().join("lock");
        let mut lock = ServerLock::take_at(path.clone(), server, key).unwrap();
        assert_eq!(lock.previous(), None);
        lock.record(77).unwrap();
        let watch = ServerWatch::find_at(&path, 77).unwrap();
        assert!(!watch.ended());
        assert!(ServerWatch::find_at(&path, 78).is_none());
        // A second open file description is refused while the first holds it.
        let second = ServerLock::take_at(path.clone(), server, key).unwrap_err();
        assert!(
            second.to_string().contains("is already serving"),
            "{second}"
        );
        drop(lock);
        assert!(watch.ended());
        assert!(!path.exists());
    }
}
