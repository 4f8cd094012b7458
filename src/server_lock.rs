//! A server's liveness lock: proof that a server (msgq1, sipc1) is alive and serves a key, so
//! that a second one on the same key is refused instead of stealing requests, and a client can
//! tell that the server which made its object has ended.
//!
//! The proof is an exclusive `flock` on `$TMPDIR/ipclab-<UID>-<PROGRAM>-<KEY>.lock`, which the
//! kernel releases however the process ends — even on `kill -9`. A PID is no such proof (PIDs
//! are reused), and neither is the object's existence (a killed server leaves it behind).
//!
//! The file holds the server's PID, for the message that refuses a second server, and once
//! known the ID of the object it serves ([`ServerLock::record`]). It is removed when the lock is
//! dropped; a process that locked a file just removed notices (the path no longer names what it
//! locked) and starts again. The lock only keeps servers of this suite apart that share a
//! `$TMPDIR`: a C server holds none.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::anyhow;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::sysv::{Key, OTHER_ID_HINT};

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

/// Proof that a server is alive and serves a key (see the module docs). Released, and its file
/// removed, when dropped.
#[derive(Debug)]
pub struct ServerLock {
    server: Server,
    path: PathBuf,
    file: Flock<File>,
}

impl ServerLock {
    /// Takes the lock of `server` on `key`, or fails if a live one holds it:
    /// `msgget(key 0x8005): another msgq1 (pid 4711) is already serving this queue; …`.
    pub fn take(server: Server, key: Key) -> anyhow::Result<ServerLock> {
        let uid = nix::unistd::geteuid();
        let path = lock_path(server, key);
        let shown = path.display();
        let failed = |call: String, error: std::io::Error| lock_failed(server, call, error);
        for _ in 0..10 {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(|e| failed(format!("open({shown})"), e))?;
            let opened = file
                .metadata()
                .map_err(|e| failed(format!("fstat({shown})"), e))?;
            anyhow::ensure!(
                opened.uid() == uid.as_raw(),
                "{shown} belongs to another user (uid {}); remove it or set TMPDIR",
                opened.uid()
            );
            let mut unlocked = file;
            let mut tries = 0;
            let mut file = loop {
                match Flock::lock(unlocked, FlockArg::LockExclusiveNonblock) {
                    Ok(locked) => break locked,
                    // A client's ServerWatch holds a shared lock for a moment: try again.
                    Err((again, Errno::EWOULDBLOCK)) if tries < 20 => {
                        unlocked = again;
                        tries += 1;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err((held, Errno::EWOULDBLOCK)) => {
                        let pid = match Recorded::read(held).pid {
                            Some(pid) => format!(" (pid {pid})"),
                            None => String::new(),
                        };
                        let Server {
                            program,
                            call,
                            object,
                        } = server;
                        anyhow::bail!(
                            "{call}(key {key}): another {program}{pid} is already serving this \
                             {object}; stop it first, or {OTHER_ID_HINT}"
                        );
                    }
                    Err((_, errno)) => return Err(failed(format!("flock({shown})"), errno.into())),
                }
            };
            let named = std::fs::symlink_metadata(&path).ok();
            if named.is_some_and(|n| (n.dev(), n.ino()) == (opened.dev(), opened.ino())) {
                file.set_len(0)
                    .and_then(|()| writeln!(file, "{}", std::process::id()))
                    .map_err(|e| failed(format!("write({shown})"), e))?;
                return Ok(ServerLock { server, path, file });
            }
            // The server before us removed the file after we opened it: lock the new one.
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

    /// Writes the ID of the object this server made into the lock file, after its PID: a client
    /// can then tell that this object's server has ended ([`ServerWatch`]).
    pub fn record(&mut self, id: i32) -> anyhow::Result<()> {
        self.file
            .set_len(0)
            .and_then(|()| (&*self.file).seek(SeekFrom::Start(0)).map(drop))
            .and_then(|()| writeln!(&*self.file, "{} {id}", std::process::id()))
            .map_err(|e| lock_failed(self.server, format!("write({})", self.path.display()), e))
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

/// The error of a call on the lock file, with what the file is for.
fn lock_failed(server: Server, call: String, error: std::io::Error) -> anyhow::Error {
    let reason = match error.raw_os_error() {
        Some(errno) => Errno::from_raw(errno).desc().to_string(),
        None => error.to_string(),
    };
    anyhow!(
        "{call}: {reason} (the lock that keeps a second {} off the key; set TMPDIR to a \
         directory of yours)",
        server.program
    )
}

/// `$TMPDIR/ipclab-<UID>-<PROGRAM>-<KEY>.lock`: the liveness lock of `server` on `key`.
fn lock_path(server: Server, key: Key) -> PathBuf {
    let uid = nix::unistd::geteuid();
    std::env::temp_dir().join(format!("ipclab-{uid}-{}-{key}.lock", server.program))
}

/// What a lock file says: `PID ID` (the ID once the object is made).
#[derive(Debug, Default)]
struct Recorded {
    pid: Option<String>,
    id: Option<i32>,
}

impl Recorded {
    fn read(mut file: impl Read) -> Recorded {
        let mut text = String::new();
        let _ = file.by_ref().take(64).read_to_string(&mut text);
        let mut words = text.split_whitespace();
        let pid = words
            .next()
            .filter(|w| w.bytes().all(|b| b.is_ascii_digit()));
        Recorded {
            pid: pid.map(str::to_owned),
            id: words.next().and_then(|w| w.parse().ok()),
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
}

impl ServerWatch {
    /// The lock file of `server` on `key`, if it is ours and names the object `id`.
    pub fn find(server: Server, key: Key, id: i32) -> Option<ServerWatch> {
        let file = File::options()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(lock_path(server, key))
            .ok()?;
        let owner = file.metadata().ok()?.uid();
        if owner != nix::unistd::geteuid().as_raw() {
            return None;
        }
        match Recorded::read(&file) {
            Recorded {
                pid: Some(pid),
                id: Some(named),
            } if named == id => Some(ServerWatch { file, pid }),
            _ => None,
        }
    }

    /// The server's PID, as it wrote it.
    pub fn pid(&self) -> &str {
        &self.pid
    }

    /// Whether the server has ended: nobody holds its lock any more (taking a shared lock
    /// succeeds; it is let go at once).
    pub fn ended(&self) -> bool {
        let fd = self.file.as_raw_fd();
        // SAFETY: flock takes no pointers; `fd` is open for as long as `self.file` lives.
        let free = unsafe { libc::flock(fd, libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            // SAFETY: as above.
            unsafe { libc::flock(fd, libc::LOCK_UN) };
        }
        free
    }
}
