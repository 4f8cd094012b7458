//! One lab's IPC objects and who uses them: what exists now, and nothing about how it is shown.
//!
//! A lab is what the exercises' `--id N` and `--dir DIR` choose ([`Lab`]): the message queue
//! 0x8000+N, the segment 0x9000+N (and ipcbench's semaphore set, with the same key), the FIFOs
//! `.fifo` and `.fifo<PID>` in DIR, the liveness locks of its servers
//! (`/dev/shm/ipclab-<uid>-<object>-<key>.lock`), and the exercises running with that ID or
//! directory. [`Lab::look`] gathers them into an [`Inventory`].
//!
//! Everything comes from kernel facts (`/proc`, the lock a live process holds) through
//! `ipclab::peer` where it has them, and is read without changing anything a student watches:
//! no segment is attached (that would raise `shm_nattch` and set `shm_lpid`; its bytes are read
//! through `/proc/PID/mem` of a process that has it attached), no lock is taken (`F_OFD_GETLK`
//! takes nothing), no FIFO is opened. Objects of other users are listed where `/proc` shows them;
//! what cannot be read is said, never fatal; an object or process that vanished between two
//! reads is simply not there.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipclab::layout::sipc::SIPC_SIZE;
use ipclab::layout::text::printable;
use ipclab::peer::{self, OpenFor, Process};
use ipclab::sys::ipc::{parse_lab_id, Key};
use ipclab::sys::sem;
use ipclab::sys::shm::SHM_DEST;
use nix::unistd::Pid;

use crate::procfs::{self, Row, SysvMapping};

/// The programs of the suite, as the kernel names their processes (`/proc/PID/comm`).
pub const PROGRAMS: [&str; 13] = [
    "pipe", "sync", "mymore", "fifos", "fifoc", "msgq1", "msgq2", "shm", "sipc1", "sipc2", "mycp3",
    "mipc", "ipcbench",
];

/// The programs whose lab is a directory (`--dir`) rather than an ID.
const FIFO_PROGRAMS: [&str; 2] = ["fifos", "fifoc"];

/// A lab: the lab ID and the FIFO directory the exercises were given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lab {
    /// The lab ID (`--id`, `IPCLAB_ID`).
    pub id: u32,
    /// The FIFOs' directory (`--dir`).
    pub dir: PathBuf,
}

/// What a look found where it could not look: the reason, in the suite's form
/// (`read(/proc/sysvipc/msg): EACCES: Permission denied`).
pub type Looked<T> = Result<T, String>;

/// Everything of a lab that exists at one moment ([`Lab::look`]).
#[derive(Debug, Clone)]
pub struct Inventory {
    /// The message queue 0x8000+ID.
    pub queue: Looked<Option<Queue>>,
    /// The segment 0x9000+ID, and those already marked for removal that had its key.
    pub segments: Looked<Vec<Segment>>,
    /// ipcbench's semaphore set 0x9000+ID.
    pub semaphores: Looked<Option<SemSet>>,
    /// The `.fifo*` files in the directory, in name order.
    pub fifos: Looked<Vec<Fifo>>,
    /// The lock files of the lab's servers that exist.
    pub server_locks: Vec<ServerLockFile>,
    /// The lab's running exercises, and every other process seen using one of its objects,
    /// in PID order.
    pub exercises: Vec<Exercise>,
}

/// Who made and may use an object (the `ipc_perm` of `/proc/sysvipc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// The owner's user ID.
    pub uid: u32,
    /// The creator's user ID.
    pub cuid: u32,
    /// The permission bits, `0o600`.
    pub mode: u32,
}

/// A process that an object names (`msg_lspid`, `shm_cpid`…): its PID, and the process if it
/// still exists (a PID names nobody once its process has ended, or a stranger once reused).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Named {
    /// The PID the object holds; 0 for nobody.
    pub pid: i32,
    /// The process with that PID now.
    pub process: Option<Process>,
}

impl Named {
    fn of(pid: Option<i64>) -> Named {
        let pid = pid.and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        Named {
            pid,
            process: Process::from_raw(pid),
        }
    }
}

/// The lab's message queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queue {
    /// Its key, 0x8000+ID.
    pub key: Key,
    /// `msqid`.
    pub msqid: i32,
    /// Owner and mode.
    pub owner: Owner,
    /// `msg_qnum`: messages in it.
    pub messages: u64,
    /// `msg_cbytes`: their bytes.
    pub bytes: u64,
    /// `msg_lspid`, the last sender, and `msg_stime`.
    pub sender: (Named, i64),
    /// `msg_lrpid`, the last receiver, and `msg_rtime`.
    pub receiver: (Named, i64),
    /// The processes waiting in `msgrcv` or `msgsnd` on it now.
    pub waiting: Vec<Process>,
}

/// A segment of the lab: its key's, or one marked for removal that had it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The key it was made with, 0x9000+ID.
    pub key: Key,
    /// `shmid`.
    pub shmid: i32,
    /// Owner and mode.
    pub owner: Owner,
    /// `shm_segsz`.
    pub size: u64,
    /// Marked for removal (`IPC_RMID`, status `dest`): the key is free, and the segment goes
    /// when the last process detaches.
    pub removed: bool,
    /// `shm_nattch`: how many attachments the kernel counts.
    pub nattch: u64,
    /// `shm_cpid`, its creator.
    pub creator: Named,
    /// `shm_lpid`, the last to attach or detach, and `shm_atime`, `shm_dtime`.
    pub last: (Named, i64, i64),
    /// The processes that have it attached, as far as `/proc` shows them.
    pub attached: Vec<Process>,
    /// Its first bytes, when it has the size of the sipc layout.
    pub contents: Contents,
}

/// The bytes of a segment, read through a process that has it attached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    /// The first [`SIPC_SIZE`] bytes.
    Read(Vec<u8>),
    /// Not read, and why.
    NotRead(String),
}

impl Segment {
    /// The flag and the text field, when the segment has the sipc layout (1024 bytes, read).
    pub fn sipc(&self) -> Option<(i32, &[u8])> {
        match &self.contents {
            Contents::Read(bytes) if bytes.len() == SIPC_SIZE => {
                let flag = i32::from_ne_bytes(bytes[..4].try_into().ok()?);
                Some((flag, &bytes[4..]))
            }
            _ => None,
        }
    }
}

/// ipcbench's semaphore set (key 0x9000+ID).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SemSet {
    /// Its key.
    pub key: Key,
    /// `semid`.
    pub semid: i32,
    /// Owner and mode.
    pub owner: Owner,
    /// How many semaphores it has.
    pub nsems: u64,
    /// `sem_otime`: the last `semop`.
    pub operated: i64,
    /// The live processes that use it: the last to operate on each semaphore (`GETPID`), and
    /// those blocked in `semop` on it now.
    pub users: Vec<Process>,
    /// How many waits there are on its semaphores (`GETNCNT` + `GETZCNT`), seen or not.
    pub waiting: u64,
}

/// A `.fifo*` file in the lab's directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fifo {
    /// Its name (`.fifo`, `.fifo4711`).
    pub name: OsString,
    /// `None` for a FIFO; else what it is instead (`regular file`, `symbolic link`).
    pub not_a_fifo: Option<&'static str>,
    /// Its owner's user ID.
    pub uid: u32,
    /// The processes that hold it open, and how.
    pub open: Vec<(Process, OpenFor)>,
    /// The processes that hold a lock on it (its owner's `flock`: the server's `.fifo`, a
    /// client's `.fifo<PID>`), by the PID `/proc/locks` gives.
    pub locked_by: Vec<Named>,
}

/// A server's liveness lock file (`ipclab::peer::ServerLock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLockFile {
    /// The kind of object whose key it holds: `queue` (msgq1's, or ipcbench's), `segment`.
    pub object: &'static str,
    /// The key it serves.
    pub key: Key,
    /// `/dev/shm/ipclab-<uid>-<object>-<key>.lock` (`ipclab::peer::lock_path`).
    pub path: PathBuf,
    /// Its owner's user ID: the name says ours, but anyone may make a file in `/dev/shm`.
    pub uid: u32,
    /// Whether a live server holds it.
    pub state: LockState,
}

/// Whether a lock file's lock is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockState {
    /// Held: a server lives; the processes that have the file open for writing, each once —
    /// the holder (a client that watches the lock has it open only for reading).
    Held(Vec<Process>),
    /// Not held: the server that wrote it has ended without removing it (`kill -9`), or one is
    /// starting.
    Free,
    /// The file could not be asked, and why.
    Unknown(String),
}

/// A running process of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exercise {
    /// Its PID and program name.
    pub process: Process,
    /// Its state letter (`S`, `R`, `T`…).
    pub state: Option<char>,
    /// The kernel function it waits in (`do_msgrcv`, `pipe_read`).
    pub wchan: Option<String>,
}

impl Lab {
    /// The message queue key, 0x8000+ID.
    pub fn queue_key(&self) -> Key {
        Key::queue(self.id)
    }

    /// The segment key, 0x9000+ID (also ipcbench's semaphore set's).
    pub fn segment_key(&self) -> Key {
        Key::segment(self.id)
    }

    /// Looks at everything of the lab once.
    pub fn look(&self) -> Inventory {
        let mappings = procfs::sysv_mappings();
        let queue = self.queue();
        let segments = self.segments(&mappings);
        let semaphores = self.semaphores();
        let fifos = self.fifos();
        let server_locks = self.server_locks();
        let mut users: Vec<Pid> = Vec::new();
        if let Ok(Some(queue)) = &queue {
            users.extend(alive([&queue.sender.0, &queue.receiver.0]));
            users.extend(queue.waiting.iter().map(|p| p.pid));
        }
        for segment in segments.iter().flatten() {
            users.extend(segment.attached.iter().map(|p| p.pid));
        }
        for fifo in fifos.iter().flatten() {
            users.extend(fifo.open.iter().map(|(p, _)| p.pid));
            users.extend(alive(&fifo.locked_by));
        }
        for lock in &server_locks {
            if let LockState::Held(holders) = &lock.state {
                users.extend(holders.iter().map(|p| p.pid));
            }
        }
        Inventory {
            exercises: self.exercises(&users),
            queue,
            segments,
            semaphores,
            fifos,
            server_locks,
        }
    }

    fn queue(&self) -> Looked<Option<Queue>> {
        let key = self.queue_key();
        let Some(row) = find(&procfs::sysv_table("msg").map_err(|e| e.to_string())?, key) else {
            return Ok(None);
        };
        let msqid = id(&row, "msqid")?;
        Ok(Some(Queue {
            key,
            msqid,
            owner: owner(&row)?,
            messages: count(&row, "qnum"),
            bytes: count(&row, "cbytes"),
            sender: (Named::of(row.number("lspid")), time(&row, "stime")),
            receiver: (Named::of(row.number("lrpid")), time(&row, "rtime")),
            waiting: peer::queue_waiters(msqid),
        }))
    }

    fn segments(&self, mappings: &[SysvMapping]) -> Looked<Vec<Segment>> {
        let key = self.segment_key();
        let rows = procfs::sysv_table("shm").map_err(|e| e.to_string())?;
        let mut found = Vec::new();
        for row in rows {
            let Some(shmid) = row.number("shmid").and_then(|s| i32::try_from(s).ok()) else {
                continue;
            };
            let removed = row.mode().is_some_and(|mode| mode & SHM_DEST != 0);
            // Once removed, the kernel shows the key as 0; the mapping's name keeps it.
            let ours = row.number("key") == Some(key.raw().into())
                || removed
                    && row.number("key") == Some(0)
                    && mappings
                        .iter()
                        .any(|m| m.shmid == shmid && m.key == Some(key.raw()));
            if !ours {
                continue;
            }
            let attachments: Vec<&SysvMapping> =
                mappings.iter().filter(|m| m.shmid == shmid).collect();
            let size = count(&row, "size");
            found.push(Segment {
                key,
                shmid,
                owner: owner(&row)?,
                size,
                removed,
                nattch: count(&row, "nattch"),
                creator: Named::of(row.number("cpid")),
                last: (
                    Named::of(row.number("lpid")),
                    time(&row, "atime"),
                    time(&row, "dtime"),
                ),
                attached: processes(attachments.iter().map(|m| m.pid)),
                contents: contents(size, count(&row, "nattch"), &attachments),
            });
        }
        Ok(found)
    }

    fn semaphores(&self) -> Looked<Option<SemSet>> {
        let key = self.segment_key();
        let Some(row) = find(&procfs::sysv_table("sem").map_err(|e| e.to_string())?, key) else {
            return Ok(None);
        };
        let (semid, nsems) = (id(&row, "semid")?, count(&row, "nsems"));
        let each = |cmd| (0..nsems as i32).filter_map(move |n| sem::semctl_get(semid, n, cmd).ok());
        let last = each(libc::GETPID).filter_map(Process::from_raw);
        let waiting = each(libc::GETNCNT)
            .chain(each(libc::GETZCNT))
            .map(|n| n as u64)
            .sum();
        Ok(Some(SemSet {
            key,
            semid,
            owner: owner(&row)?,
            nsems,
            operated: time(&row, "otime"),
            users: peer::distinct(last.chain(peer::semaphore_waiters(semid))),
            waiting,
        }))
    }

    fn fifos(&self) -> Looked<Vec<Fifo>> {
        let entries = std::fs::read_dir(&self.dir)
            .map_err(|e| procfs::io_failed("opendir", &self.dir, e).to_string())?;
        let mut found = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.as_bytes().starts_with(b".fifo") {
                continue;
            }
            // lstat: a symbolic link is not followed, nothing is opened.
            let Ok(meta) = std::fs::symlink_metadata(entry.path()) else {
                continue; // gone meanwhile
            };
            let kind = meta.file_type();
            let not_a_fifo = match () {
                _ if kind.is_fifo() => None,
                _ if kind.is_symlink() => Some("symbolic link"),
                _ if kind.is_file() => Some("regular file"),
                _ if kind.is_dir() => Some("directory"),
                _ if kind.is_socket() => Some("socket"),
                _ => Some("device"),
            };
            let (open, locked_by) = match not_a_fifo {
                None => (
                    peer::holders(meta.dev(), meta.ino()),
                    procfs::file_locks(meta.dev(), meta.ino())
                        .into_iter()
                        .filter_map(|lock| lock.pid)
                        .map(|pid| Named::of(Some(pid.as_raw().into())))
                        .collect(),
                ),
                Some(_) => (Vec::new(), Vec::new()),
            };
            found.push(Fifo {
                name,
                not_a_fifo,
                uid: meta.uid(),
                open,
                locked_by,
            });
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    fn server_locks(&self) -> Vec<ServerLockFile> {
        let servers = [
            (ipclab::queue::MSGQ1, self.queue_key()),
            (ipclab::sipc::SIPC1, self.segment_key()),
        ];
        servers
            .into_iter()
            .filter_map(|(server, key)| {
                let path = peer::lock_path(server, key);
                let meta = std::fs::symlink_metadata(&path).ok()?;
                Some(ServerLockFile {
                    object: server.object,
                    key,
                    state: lock_state(&path, &meta),
                    path,
                    uid: meta.uid(),
                })
            })
            .collect()
    }

    /// The exercises running with this lab's ID (FIFO programs: directory), and the processes
    /// in `users`, in PID order.
    fn exercises(&self, users: &[Pid]) -> Vec<Exercise> {
        let mut pids: Vec<Pid> = procfs::pids()
            .filter(|&pid| users.contains(&pid) || self.runs_in_lab(pid))
            .collect();
        pids.sort();
        pids.dedup();
        processes(pids.into_iter())
            .into_iter()
            .map(|process| Exercise {
                state: procfs::state(process.pid),
                wchan: procfs::wchan(process.pid),
                process,
            })
            .collect()
    }

    /// Whether `pid` runs a program of the suite with this lab's ID (`--id`, else `IPCLAB_ID`,
    /// else 0), or, a FIFO program, in this lab's directory (its `--dir` from its working
    /// directory). A process whose arguments or environment cannot be read is not counted.
    fn runs_in_lab(&self, pid: Pid) -> bool {
        let Ok(name) = std::fs::read_to_string(format!("/proc/{pid}/comm")) else {
            return false;
        };
        let name = name.trim_end();
        if !PROGRAMS.contains(&name) {
            return false;
        }
        let Some(args) = procfs::arguments(pid) else {
            return false;
        };
        if FIFO_PROGRAMS.contains(&name) {
            let dir = option(&args, "--dir").unwrap_or_else(|| ".".into());
            let Some(cwd) = procfs::cwd(pid) else {
                return false;
            };
            return same_directory(&cwd.join(dir), &self.dir);
        }
        let id = match option(&args, "--id") {
            Some(id) => id,
            None => match procfs::environment(pid, "IPCLAB_ID") {
                Ok(Some(id)) if !id.is_empty() => id,
                Ok(_) => "0".into(),
                Err(_) => return false,
            },
        };
        id.to_str().and_then(|id| parse_lab_id(id).ok()) == Some(self.id)
    }
}

/// The PIDs of the processes that `named` still names.
fn alive<'a>(named: impl IntoIterator<Item = &'a Named>) -> Vec<Pid> {
    named
        .into_iter()
        .filter_map(|n| n.process.as_ref().map(|p| p.pid))
        .collect()
}

/// The processes of `pids` that exist, each once, in the order given.
fn processes(pids: impl Iterator<Item = Pid>) -> Vec<Process> {
    let mut found: Vec<Process> = Vec::new();
    for pid in pids {
        if !found.iter().any(|p| p.pid == pid) {
            found.extend(Process::alive(pid));
        }
    }
    found
}

/// The row of `rows` with `key`.
fn find(rows: &[Row], key: Key) -> Option<Row> {
    rows.iter()
        .find(|row| row.number("key") == Some(key.raw().into()))
        .cloned()
}

fn id(row: &Row, column: &str) -> Looked<i32> {
    row.number(column)
        .and_then(|id| i32::try_from(id).ok())
        .ok_or_else(|| format!("/proc/sysvipc: no {column} in {row:?}"))
}

fn owner(row: &Row) -> Looked<Owner> {
    let user = |column| row.number(column).and_then(|id| u32::try_from(id).ok());
    match (user("uid"), user("cuid"), row.mode()) {
        (Some(uid), Some(cuid), Some(mode)) => Ok(Owner {
            uid,
            cuid,
            mode: mode & 0o777,
        }),
        _ => Err(format!("/proc/sysvipc: no uid, cuid or perms in {row:?}")),
    }
}

fn count(row: &Row, column: &str) -> u64 {
    row.number(column)
        .and_then(|n| u64::try_from(n).ok())
        .unwrap_or(0)
}

fn time(row: &Row, column: &str) -> i64 {
    row.number(column).unwrap_or(0)
}

/// The first bytes of a segment of `size` with `nattch` attachments, read through one of
/// `attachments` (those `/proc` shows) — only for the sipc layout's size: the one layout shown.
fn contents(size: u64, nattch: u64, attachments: &[&SysvMapping]) -> Contents {
    if size != SIPC_SIZE as u64 {
        return Contents::NotRead(format!(
            "not the sipc layout ({size} bytes, not {SIPC_SIZE})"
        ));
    }
    let mut why = match nattch {
        0 => "nobody has it attached (ipcwatch never attaches)",
        _ => "attached only by processes /proc does not show (another user's, or one that forbids it?)",
    }
    .to_owned();
    for mapping in attachments {
        match procfs::read_memory(mapping.pid, mapping.start, SIPC_SIZE) {
            Ok(bytes) if bytes.len() == SIPC_SIZE => return Contents::Read(bytes),
            Ok(_) => why = format!("pid {} detached it while it was read", mapping.pid),
            Err(e) => why = e.to_string(),
        }
    }
    Contents::NotRead(why)
}

/// How the lock file at `path`, whose `lstat` is `meta`, stands.
fn lock_state(path: &Path, meta: &std::fs::Metadata) -> LockState {
    let shown = printable(path.as_os_str().as_bytes());
    if !meta.is_file() {
        return LockState::Unknown(format!("{shown} is not a regular file"));
    }
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match file {
        Ok(file) => file,
        Err(e) => return LockState::Unknown(procfs::io_failed("open", path, e).to_string()),
    };
    match procfs::lock_held(&file) {
        // An open file description lock has no PID the kernel would give (`F_OFD_GETLK` says
        // -1): the holder is known by how it opened the file, read-write to take the lock
        // (`ServerLock`), where a client's `ServerWatch` opens it read-only.
        Some(true) => LockState::Held(peer::distinct(
            peer::holders(meta.dev(), meta.ino())
                .into_iter()
                .filter(|(_, how)| matches!(how, OpenFor::Writing | OpenFor::Both))
                .map(|(process, _)| process),
        )),
        Some(false) => LockState::Free,
        None => LockState::Unknown(format!("fcntl({shown}, F_OFD_GETLK) failed")),
    }
}

/// The value of the long option `name` in `args` (`--id 5` or `--id=5`), up to a `--`.
fn option(args: &[OsString], name: &str) -> Option<OsString> {
    let mut words = args.iter().take_while(|w| *w != "--");
    while let Some(word) = words.next() {
        if word == name {
            return words.next().cloned();
        }
        let joined = word.as_bytes().strip_prefix(name.as_bytes());
        if let Some(value) = joined.and_then(|rest| rest.strip_prefix(b"=")) {
            return Some(OsStr::from_bytes(value).to_owned());
        }
    }
    None
}

/// Whether two paths lead to the same directory.
fn same_directory(a: &Path, b: &Path) -> bool {
    let inode = |path: &Path| std::fs::metadata(path).map(|m| (m.dev(), m.ino())).ok();
    inode(a).is_some() && inode(a) == inode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_found_as_clap_takes_them() {
        let args = |words: &[&str]| words.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(option(&args(&["--id", "5"]), "--id"), Some("5".into()));
        assert_eq!(
            option(&args(&["-x", "--id=0x7"]), "--id"),
            Some("0x7".into())
        );
        assert_eq!(option(&args(&["--idle", "5"]), "--id"), None);
        assert_eq!(option(&args(&["--", "--id", "5"]), "--id"), None);
        assert_eq!(option(&args(&["--id"]), "--id"), None);
    }

    #[test]
    fn a_sipc_segment_shows_its_flag_and_text_and_another_size_does_not() {
        let mut bytes = vec![0u8; SIPC_SIZE];
        bytes[..4].copy_from_slice(&1i32.to_ne_bytes());
        bytes[4..7].copy_from_slice(b"hi\0");
        let mut segment = Segment {
            key: Key::segment(0x70),
            shmid: 1,
            owner: Owner {
                uid: 0,
                cuid: 0,
                mode: 0o600,
            },
            size: SIPC_SIZE as u64,
            removed: false,
            nattch: 1,
            creator: Named::of(None),
            last: (Named::of(None), 0, 0),
            attached: Vec::new(),
            contents: Contents::Read(bytes),
        };
        let (flag, text) = segment.sipc().unwrap();
        assert_eq!(
            (flag, &text[..3], text.len()),
            (1, &b"hi\0"[..], SIPC_SIZE - 4)
        );
        segment.contents = Contents::Read(vec![0; 10]);
        assert_eq!(segment.sipc(), None);
        let not_read = |size, nattch| match contents(size, nattch, &[]) {
            Contents::NotRead(why) => why,
            Contents::Read(_) => panic!("read without a process to read through"),
        };
        assert!(not_read(4096, 1).contains("4096 bytes"));
        assert!(not_read(1024, 0).contains("never attaches"));
        assert!(not_read(1024, 1).contains("another user's"));
    }
}
