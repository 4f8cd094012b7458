//! What the kernel says under `/proc`, read without touching anything that is watched: the System
//! V tables, the shared memory mappings of every process, the file locks, a process's state,
//! arguments and memory. Every function here only reads; a process or object that vanishes
//! between two reads is normal and simply not there.
//!
//! [`sysv_mappings`], [`file_locks`] and [`lock_held`] are kernel facts of the kind
//! `ipclab::peer` holds (who has a segment attached, who holds a lock); they live here until
//! the lecture crate wants them.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ipclab::layout::text::printable;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg};
use nix::unistd::Pid;

/// The PIDs in `/proc` now, other than this process's.
pub fn pids() -> impl Iterator<Item = Pid> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(move |&pid| pid != me)
        .filter_map(|pid| i32::try_from(pid).ok().map(Pid::from_raw))
}

/// One row of a `/proc/sysvipc` table, by column name (`key`, `msqid`, `perms`, …).
#[derive(Debug, Clone)]
pub struct Row(Vec<(String, String)>);

impl Row {
    /// The number in `column` (decimal), if it has one.
    pub fn number(&self, column: &str) -> Option<i64> {
        self.text(column)?.parse().ok()
    }

    /// The `perms` column: the mode in octal, with `SHM_DEST` (01000) for a segment marked for
    /// removal.
    pub fn mode(&self) -> Option<u32> {
        u32::from_str_radix(self.text("perms")?, 8).ok()
    }

    fn text(&self, column: &str) -> Option<&str> {
        let (_, value) = self.0.iter().find(|(name, _)| name == column)?;
        Some(value)
    }
}

/// The rows of `/proc/sysvipc/TABLE` (`msg`, `shm`, `sem`): every object of the machine's IPC
/// namespace, whoever owns it and whatever its mode (unlike `IPC_STAT`, which needs read
/// permission). Fails with the suite's form of error if it cannot be read.
pub fn sysv_table(table: &str) -> anyhow::Result<Vec<Row>> {
    let path = format!("/proc/sysvipc/{table}");
    let text = std::fs::read_to_string(&path).map_err(|e| io_failed("read", &path, e))?;
    let mut lines = text.lines();
    let columns: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    Ok(lines
        .map(|line| {
            let values = line.split_whitespace().map(str::to_owned);
            Row(columns.iter().map(|c| c.to_string()).zip(values).collect())
        })
        .collect())
}

/// `CALL(PATH): ENAME: text`, the suite's form of a failed call, the path escaped as a peer's
/// text is (a directory's name may hold anything).
pub fn io_failed(call: &str, path: impl AsRef<Path>, error: std::io::Error) -> anyhow::Error {
    let reason = match error.raw_os_error() {
        Some(errno) => ipclab::rt::exit::reason(Errno::from_raw(errno)),
        None => error.to_string(),
    };
    let path = printable(path.as_ref().as_os_str().as_bytes());
    anyhow::anyhow!("{call}({path}): {reason}")
}

/// A System V segment mapped into a process (a `/SYSV<key>` line of its `/proc/PID/maps`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SysvMapping {
    /// The process.
    pub pid: Pid,
    /// The segment: the mapping's inode is its `shmid`.
    pub shmid: i32,
    /// The key the segment was made with (the name `/SYSV00009005` keeps it after `IPC_RMID`,
    /// when the kernel's tables show the key as 0).
    pub key: Option<i32>,
    /// Where it is mapped in that process.
    pub start: u64,
}

/// Every System V segment attached to a process now, as `/proc/*/maps` shows them (the
/// processes of other users, or all others where ptrace is restricted, cannot be seen). One
/// pass over `/proc`: `ipclab::peer::attached` asks the same of one `shmid`.
pub fn sysv_mappings() -> Vec<SysvMapping> {
    let mut found = Vec::new();
    for pid in pids() {
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        for line in maps.lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(range), Some(inode), Some(name)) =
                (fields.first(), fields.get(4), fields.get(5))
            else {
                continue;
            };
            let Some(key) = name.strip_prefix("/SYSV") else {
                continue;
            };
            let start = range
                .split('-')
                .next()
                .and_then(|hex| u64::from_str_radix(hex, 16).ok());
            if let (Some(start), Ok(shmid)) = (start, inode.parse()) {
                let key = u32::from_str_radix(key, 16).ok().map(|k| k as i32);
                found.push(SysvMapping {
                    pid,
                    shmid,
                    key,
                    start,
                });
            }
        }
    }
    found
}

/// `len` bytes at `address` in the memory of process `pid` (`/proc/PID/mem`): what a process
/// that has a segment attached sees there, read without attaching it. Needs the right to trace
/// that process (the same user, and ptrace not restricted; or root).
pub fn read_memory(pid: Pid, address: u64, len: usize) -> anyhow::Result<Vec<u8>> {
    let path = format!("/proc/{pid}/mem");
    let mem = File::open(&path).map_err(|e| {
        let refused = matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM));
        let failed = io_failed("open", &path, e);
        match refused {
            true => {
                anyhow::anyhow!("{failed} (needs the right to ptrace it: root, or ptrace_scope 0)")
            }
            false => failed,
        }
    })?;
    let mut bytes = vec![0; len];
    let mut done = 0;
    while done < len {
        match mem.read_at(&mut bytes[done..], address + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_failed("pread", &path, e)),
        }
    }
    bytes.truncate(done);
    Ok(bytes)
}

/// A lock on a file, as `/proc/locks` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileLock {
    /// `FLOCK` (flock), `POSIX` (fcntl) or `OFDLCK` (an open file description lock).
    pub kind: String,
    /// A write (exclusive) lock.
    pub write: bool,
    /// The process that took it; `None` for an OFD lock, which belongs to an open file, not a
    /// process.
    pub pid: Option<Pid>,
}

/// The locks held on the file `(dev, ino)` now (`/proc/locks`, readable by everyone; waiters
/// aside).
pub fn file_locks(dev: u64, ino: u64) -> Vec<FileLock> {
    let text = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    let device = format!(
        "{:02x}:{:02x}:{ino}",
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev)
    );
    text.lines()
        .filter_map(|line| {
            // 1: FLOCK  ADVISORY  WRITE 4711 fe:00:1234 0 EOF   (a waiter has `->` after `1:`)
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) == Some(&"->") || fields.get(5) != Some(&device.as_str()) {
                return None;
            }
            let pid = fields.get(4)?.parse::<i32>().ok().filter(|&pid| pid > 0);
            Some(FileLock {
                kind: fields.get(1)?.to_string(),
                write: fields.get(3) == Some(&"WRITE"),
                pid: pid.map(Pid::from_raw),
            })
        })
        .collect()
}

/// Whether someone holds a lock on `file` that would stop a writer: `F_OFD_GETLK`, as
/// `ipclab::peer::ServerWatch::ended` asks it, which takes nothing. `None` if the kernel would
/// not say.
pub fn lock_held(file: &File) -> Option<bool> {
    let mut probe = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0, // the whole file
        l_pid: 0, // as F_OFD_* requires
    };
    fcntl(file.as_fd(), FcntlArg::F_OFD_GETLK(&mut probe)).ok()?;
    Some(probe.l_type != libc::F_UNLCK as libc::c_short)
}

/// A process's state letter (`R` running, `S` sleeping, `D` in a disk wait, `T` stopped, `Z`
/// ended but not yet waited for), from `/proc/PID/stat`.
pub fn state(pid: Pid) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state …: comm may hold anything, so split after its last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// The kernel function a sleeping process waits in (`do_msgrcv`, `pipe_read`); `None` while it
/// runs, or where the kernel will not say.
pub fn wchan(pid: Pid) -> Option<String> {
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).ok()?;
    let wchan = wchan.trim();
    (!wchan.is_empty() && wchan != "0").then(|| wchan.to_owned())
}

/// A process's arguments after its program name (`/proc/PID/cmdline`).
pub fn arguments(pid: Pid) -> Option<Vec<OsString>> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let mut words: Vec<OsString> = cmdline
        .split(|&b| b == 0)
        .map(|word| OsString::from_vec(word.to_vec()))
        .collect();
    if cmdline.last() == Some(&0) {
        words.pop(); // after the last NUL
    }
    (!words.is_empty()).then(|| words.split_off(1))
}

/// The value of `name` in a process's environment as it started (`/proc/PID/environ`: readable
/// for one's own processes only). `Err` if it cannot be read, `Ok(None)` if it is not set.
pub fn environment(pid: Pid, name: &str) -> std::io::Result<Option<OsString>> {
    let environ = std::fs::read(format!("/proc/{pid}/environ"))?;
    let prefix = format!("{name}=");
    Ok(environ
        .split(|&b| b == 0)
        .find_map(|entry| entry.strip_prefix(prefix.as_bytes()))
        .map(|value| OsString::from_vec(value.to_vec())))
}

/// A process's working directory (`/proc/PID/cwd`: one's own processes only).
pub fn cwd(pid: Pid) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/cwd")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_process_is_seen_with_its_arguments_environment_directory_and_state() {
        let me = nix::unistd::getpid();
        // cat waits for its stdin, a pipe nobody writes to, until killed.
        let mut child = std::process::Command::new("cat")
            .args(["--", "-", "a b"])
            .env("IPCWATCH_TEST", "x=1")
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        let args = loop {
            // until the exec has happened: the arguments are cat's
            if let Some(args) = arguments(pid).filter(|a| a.len() == 3) {
                break args;
            }
            std::thread::yield_now();
        };
        assert_eq!(args, ["--", "-", "a b"]);
        assert_eq!(
            environment(pid, "IPCWATCH_TEST").unwrap(),
            Some("x=1".into())
        );
        assert_eq!(environment(pid, "IPCWATCH_NOT_SET").unwrap(), None);
        assert_eq!(cwd(pid), std::env::current_dir().ok());
        assert!(
            matches!(state(pid), Some('S' | 'R' | 'D')),
            "{:?}",
            state(pid)
        );
        assert!(pids().any(|p| p == pid) && !pids().any(|p| p == me));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            arguments(pid),
            None,
            "a process that has gone has no arguments"
        );
    }

    #[test]
    fn an_ofd_lock_is_seen_held_by_getlk_and_in_proc_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let holder = File::create(&path).unwrap();
        let looker = File::open(&path).unwrap();
        assert_eq!(lock_held(&looker), Some(false));
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        fcntl(holder.as_fd(), FcntlArg::F_OFD_SETLK(&lock)).unwrap();
        assert_eq!(lock_held(&looker), Some(true));
        let meta = looker.metadata().unwrap();
        let locks = file_locks(meta.dev(), meta.ino());
        assert_eq!(
            locks,
            [FileLock {
                kind: "OFDLCK".into(),
                write: true,
                pid: None
            }]
        );
        drop(holder);
        assert_eq!(lock_held(&looker), Some(false));
        assert!(file_locks(meta.dev(), meta.ino()).is_empty());
    }

    #[test]
    fn the_sysvipc_tables_are_read_by_column_name() {
        let rows = sysv_table("shm").unwrap();
        for row in &rows {
            assert!(
                row.number("shmid").is_some() && row.mode().is_some(),
                "{row:?}"
            );
        }
        assert!(sysv_table("nonsense")
            .unwrap_err()
            .to_string()
            .starts_with("read(/proc/sysvipc/nonsense): ENOENT: "));
    }
}
