//! `make ipcclean`: what a killed program of one lab can leave behind, removed — and only what
//! is proven no one's any more ([`Lab::look`](crate::lab::Lab::look) says who uses what).
//!
//! | object | in use (left, naming who) | else |
//! |--------|---------------------------|------|
//! | queue 0x8000+ID | a live last sender or receiver, a process waiting in `msgrcv`/`msgsnd`, a held lock on its key (msgq1, ipcbench) | `msgctl(IPC_RMID)` |
//! | segment 0x9000+ID | attached (`shm_nattch` > 0), a held lock on its key (sipc1, ipcbench), a live maker or last user (`shm_cpid`, `shm_lpid`) | `shmctl(IPC_RMID)` |
//! | ipcbench's semaphore set 0x9000+ID | a live last operator (`sempid`), a waiter (`semncnt`/`semzcnt`, a process in `semop`), its segment attached, an ipcbench of the lab running | `semctl(IPC_RMID)` |
//! | `.fifo*` in the directory | open in a process, locked, a live process its name names (`.fifo<PID>`, `.fifo-new<PID>`), a process of ours blocked opening a FIFO there | `unlink` |
//! | a server's lock file `/dev/shm/ipclab-<uid>-<object>-<key>.lock` | its lock held | `unlink` |
//! | ipcbench's FIFO directory `$TMPDIR/ipcbench-<uid>-<ID>-*` | its `flock` held | removed with its FIFOs |
//!
//! An object of another user — a System V object's owner, a file's — is left too, whoever
//! runs the cleaner, root included ("it belongs to uid N"): it is not ours to remove, and its
//! users may be processes whose descriptors `/proc` does not show us. Asked by hand, the cleaner
//! removes a queue nobody has used whose maker is unknown (what a C msgq1 stopped with Ctrl-C
//! leaves), which the programs themselves only refuse.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use ipclab::peer::{self, Process};
use ipclab::sys::ipc::Key;
use ipclab::sys::msg::{self, MsqId};
use ipclab::sys::sem;
use ipclab::sys::shm::{self, ShmId};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::lab::{Inventory, Lab, LockState, Named};

/// One thing of the lab, and what to do with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// What it is, as a message names it: `message queue 0x8005 (msqid 65538)`.
    pub what: String,
    /// Why it stays, or `None`: a leftover, to remove.
    pub in_use: Option<String>,
    remove: Removal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Removal {
    Queue(i32),
    Segment(i32),
    Semaphores(i32),
    File(PathBuf),
    Directory(PathBuf),
    /// What could not be looked at: nothing to remove.
    Nothing,
}

impl Found {
    /// Removes it; `Ok(false)` if it had gone meanwhile.
    pub fn remove(&self) -> Result<bool, String> {
        let gone = |result: nix::Result<()>| match result {
            Ok(()) => Ok(true),
            Err(Errno::EINVAL | Errno::EIDRM | Errno::ENOENT) => Ok(false),
            Err(e) => Err(ipclab::rt::exit::reason(e)),
        };
        match &self.remove {
            Removal::Queue(id) => gone(msg::ipc_rmid(MsqId(*id))),
            Removal::Segment(id) => gone(shm::shmctl(ShmId(*id), libc::IPC_RMID, None).map(drop)),
            Removal::Semaphores(id) => gone(sem::semctl_rmid(*id)),
            Removal::File(path) => gone(nix::unistd::unlink(path.as_path())),
            Removal::Nothing => Ok(false),
            Removal::Directory(path) => match remove_bench_directory(path) {
                Err(Errno::EWOULDBLOCK) => Err("an ipcbench took its lock meanwhile".into()),
                result => gone(result),
            },
        }
    }
}

/// Everything of `lab` there is now, each with its verdict, in the order of the table above.
pub fn survey(lab: &Lab) -> Result<Vec<Found>, String> {
    let inventory = lab.look();
    let me = nix::unistd::geteuid().as_raw();
    let foreign = |uid: u32| (uid != me).then(|| format!("it belongs to uid {uid}"));
    let lock_held = |object: &str| {
        inventory
            .server_locks
            .iter()
            .find_map(|lock| match &lock.state {
                LockState::Held(holders) if lock.object == object => {
                    Some(format!("its server holds its lock: {}", listed_or(holders)))
                }
                _ => None,
            })
    };
    let mut found = Vec::new();
    if let Some(queue) = inventory.queue.clone()? {
        let last = alive([&queue.sender.0, &queue.receiver.0]);
        let users = peer::distinct(last.into_iter().chain(queue.waiting.iter().cloned()));
        let in_use = foreign(queue.owner.uid)
            .or_else(|| lock_held("queue"))
            .or_else(|| (!users.is_empty()).then(|| format!("in use by {}", peer::listed(&users))))
            .or_else(|| unseen_waiters(queue.msqid));
        found.push(Found {
            what: format!(
                "message queue {} (msqid {}, {} message(s))",
                queue.key, queue.msqid, queue.messages
            ),
            in_use,
            remove: Removal::Queue(queue.msqid),
        });
    }
    let segments = inventory.segments.clone()?;
    for segment in segments.iter().filter(|s| !s.removed) {
        let in_use = foreign(segment.owner.uid)
            .or_else(|| lock_held("segment"))
            .or_else(|| {
                (segment.nattch > 0).then(|| match segment.attached.as_slice() {
                    [] => format!("attached {} time(s)", segment.nattch),
                    attached => format!("attached by {}", peer::listed(attached)),
                })
            })
            // Made and not attached yet (a sipc2 stopped at its shmat prompt): its maker lives.
            .or_else(|| {
                let users = alive([&segment.creator, &segment.last.0]);
                (!users.is_empty())
                    .then(|| format!("made or last used by {}, alive", peer::listed(&users)))
            });
        found.push(Found {
            what: format!(
                "shared memory segment {} (shmid {})",
                segment.key, segment.shmid
            ),
            in_use,
            remove: Removal::Segment(segment.shmid),
        });
    }
    if let Some(set) = inventory.semaphores.clone()? {
        let bench = running(&inventory, "ipcbench");
        let attached = segments.iter().any(|s| s.key == set.key && s.nattch > 0);
        let users = peer::distinct(bench.into_iter().chain(set.users.iter().cloned()));
        let in_use = foreign(set.owner.uid)
            .or_else(|| (!users.is_empty()).then(|| format!("in use by {}", peer::listed(&users))))
            .or_else(|| (set.waiting > 0).then(|| format!("{} wait(s) on it", set.waiting)))
            .or_else(|| attached.then(|| "a segment with its key is attached".to_string()));
        found.push(Found {
            what: format!("semaphore set {} (semid {})", set.key, set.semid),
            in_use,
            remove: Removal::Semaphores(set.semid),
        });
    }
    // A directory that cannot be read keeps only its own FIFOs from being cleaned.
    let fifos = inventory.fifos.clone().unwrap_or_else(|why| {
        found.push(Found {
            what: format!("any .fifo* in {}", shown(&lab.dir)),
            in_use: Some(why),
            remove: Removal::Nothing,
        });
        Vec::new()
    });
    // A process blocked opening a FIFO (a C client before its server came) holds no descriptor
    // yet: which FIFO it waits on cannot be seen.
    let openers = peer::fifo_openers(&lab.dir);
    for fifo in fifos {
        let path = lab.dir.join(&fifo.name);
        let holders = peer::distinct(fifo.open.iter().map(|(p, _)| p.clone()));
        let lockers = alive(&fifo.locked_by);
        let in_use = foreign(fifo.uid).or_else(|| match fifo.not_a_fifo {
            Some(kind) => Some(format!("a {kind}, not a FIFO: not ours to remove")),
            None if !holders.is_empty() => Some(format!("open in {}", peer::listed(&holders))),
            None if !lockers.is_empty() => Some(format!("locked by {}", peer::listed(&lockers))),
            // Made and not opened yet (fifoc's `.fifo<PID>`, fifos' `.fifo-new<PID>` at a
            // prompt before their open): the process its name names lives.
            None if named_maker(&fifo.name).is_some() => named_maker(&fifo.name)
                .map(|maker| format!("named after {maker}, alive: it may be making it")),
            None => (!openers.is_empty()).then(|| {
                format!(
                    "{} wait(s) to open a FIFO, perhaps this one",
                    peer::listed_briefly(&openers)
                )
            }),
        });
        found.push(Found {
            what: shown(&path),
            in_use,
            remove: Removal::File(path),
        });
    }
    for lock in &inventory.server_locks {
        let in_use = foreign(lock.uid).or_else(|| match &lock.state {
            LockState::Held(holders) => Some(format!("held by {}", listed_or(holders))),
            LockState::Free => None,
            LockState::Unknown(why) => Some(why.clone()),
        });
        found.push(Found {
            what: format!(
                "the {} {}'s lock file {}",
                lock.object,
                lock.key,
                shown(&lock.path)
            ),
            in_use,
            remove: Removal::File(lock.path.clone()),
        });
    }
    for dir in bench_directories(lab.id) {
        let in_use = directory_locked(&dir).then(|| "its ipcbench runs (it holds its lock)".into());
        found.push(Found {
            what: format!("ipcbench's FIFO directory {}", shown(&dir)),
            in_use,
            remove: Removal::Directory(dir),
        });
    }
    Ok(found)
}

/// A path as a message shows it: escaped (see `printable`), since anyone who may write in the
/// directory chooses its names — a name must not drive the terminal or forge a line.
fn shown(path: &Path) -> String {
    ipclab::layout::text::printable(path.as_os_str().as_bytes())
}

/// The live process whose PID a FIFO's name holds (`.fifo4711`, `.fifo-new4711`), if any.
fn named_maker(name: &std::ffi::OsStr) -> Option<Process> {
    let digits = name.as_bytes().strip_prefix(b".fifo")?;
    let digits = digits.strip_prefix(b"-new").unwrap_or(digits);
    let pid: i32 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Process::from_raw(pid)
}

/// The processes `named` that still exist, each once.
fn alive<'a>(named: impl IntoIterator<Item = &'a Named>) -> Vec<Process> {
    peer::distinct(named.into_iter().filter_map(|n| n.process.clone()))
}

/// Why a queue nobody is seen using may still be in use: processes of ours whose waits
/// cannot be seen (see `peer::unseen_queue_waiters`).
fn unseen_waiters(msqid: i32) -> Option<String> {
    let unseen = peer::unseen_queue_waiters();
    (!unseen.is_empty()).then(|| {
        format!(
            "{} wait(s) in msgrcv or msgsnd on a queue that cannot be seen (/proc/PID/syscall \
             may not be read: ptrace is restricted), perhaps this one; ipcrm -q {msqid} removes it \
             if you are sure",
            peer::listed_briefly(&unseen)
        )
    })
}

/// `pid 4711 (msgq1)`, or a server when the holder is not to be seen.
fn listed_or(holders: &[Process]) -> String {
    match holders {
        [] => "a server not to be seen here".to_owned(),
        holders => peer::listed(holders),
    }
}

/// The lab's running processes of `program`.
fn running(inventory: &Inventory, program: &str) -> Vec<Process> {
    let exercises = inventory.exercises.iter().map(|e| &e.process);
    exercises.filter(|p| p.name == program).cloned().collect()
}

/// ipcbench's FIFO directories of lab `id`: `$TMPDIR/ipcbench-<uid>-<id>-XXXXXX/`, ours.
fn bench_directories(id: u32) -> Vec<PathBuf> {
    let uid = nix::unistd::geteuid().as_raw();
    let prefix: OsString = format!("ipcbench-{uid}-{id}-").into();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_name().as_bytes().starts_with(prefix.as_bytes()))
        .filter(|e| e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    dirs
}

/// Whether a live ipcbench holds the `flock` of its directory. ipcbench holds it exclusive for
/// as long as it runs, and a cleaner only ever takes it shared (here for a moment, and while it
/// removes the directory): so a shared lock refused means an ipcbench, never another cleaner.
fn directory_locked(dir: &Path) -> bool {
    let Ok(file) = File::open(dir) else {
        return false;
    };
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => false, // dropped here: the lock is let go at once
        Err((_, Errno::EWOULDBLOCK)) => true,
        Err(_) => false,
    }
}

/// Removes ipcbench's directory and the FIFOs in it, holding its `flock` meanwhile, shared: an
/// ipcbench that has just made it (between its `mkdtemp` and its `flock`) cannot take it half
/// removed, nor can this remove it once an ipcbench has it (`EWOULDBLOCK`); and another cleaner
/// may remove it at the same time — what the other removed first is no error, and the directory
/// gone before this `rmdir` is `ENOENT`, gone meanwhile.
fn remove_bench_directory(dir: &Path) -> nix::Result<()> {
    let file = File::open(dir).map_err(errno)?;
    let _held = Flock::lock(file, FlockArg::LockSharedNonblock).map_err(|(_, e)| e)?;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        match nix::unistd::unlink(entry.path().as_path()) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
    }
    std::fs::remove_dir(dir).map_err(errno)
}

/// The errno of a failed `std::fs` call.
fn errno(error: std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(0))
}

/// The keys of lab `id`, for scripts: `0x8005 0x9005`.
pub fn keys(id: u32) -> String {
    format!("{} {}", Key::queue(id), Key::segment(id))
}
