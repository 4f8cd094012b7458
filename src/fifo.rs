//! FIFOs (named pipes): the `fifos` server reads the requests of [`crate::layout::record`] from
//! its FIFO `.fifo`; each `fifoc` client makes its own reply FIFO `.fifo<PID>` **before** it
//! sends its request, and names it there.
//!
//! Each FIFO has one owner, which holds an exclusive `flock` on it while it lives: [`ServerFifo`]
//! (so exactly one server serves a directory), [`ClientFifo`]. A FIFO that no process holds — no
//! lock, not open anywhere ([`crate::peer::holders`]) — is a leftover of a killed owner and may be
//! replaced; the PID in a name proves nothing (it may be live in another PID namespace). Owners
//! remove their FIFO when dropped, also on a termination signal
//! ([`crate::rt::signals::catch_termination`]). Nothing a client sends makes the server open a
//! path other than a FIFO `.fifo<digits>` in its own directory (never its own `.fifo`), or wait.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, lstat, FileStat, Mode, SFlag};
use nix::unistd::Pid;

use crate::layout::record::{
    is_reply_fifo_name, reply_fifo_name, split_requests, BadRecord, Record, Request, NAME_LEN,
    RECORD_LEN, SERVER_FIFO,
};
use crate::layout::text;
use crate::peer::{self, OpenFor};
use crate::rt::wait::{Deadline, Wait};
use crate::sys::fd as sys;

/// How many records' worth the server reads from `.fifo` at most at once (below `PIPE_BUF`).
const READ_AHEAD: usize = 25;

/// The server's `.fifo`, open for reading and locked; removed when dropped. The server also
/// holds a write end of it, so that `read` never returns end-of-file when the last client closes.
#[derive(Debug)]
pub struct ServerFifo {
    path: PathBuf,
    reader: Flock<OwnedFd>,
    _keep_open: OwnedFd,
    /// Bytes read that do not make a whole record yet.
    received: Vec<u8>,
    /// Requests (and bad bytes) read but not yet taken by [`ServerFifo::receive`].
    pending: VecDeque<Result<Request, BadRecord>>,
}

impl ServerFifo {
    /// `mkfifo(".fifo", 0600)` in `dir`, opened and locked for the life of the server; a leftover
    /// `.fifo` is reused. A new FIFO is made as `.fifo-new<PID>`, held, and only then renamed
    /// to `.fifo`, so that whenever `.fifo` appears a server already reads it.
    pub fn create(dir: &Path) -> anyhow::Result<ServerFifo> {
        let path = dir.join(SERVER_FIFO);
        // A round repeats only if another server made or removed `.fifo` at that very moment.
        for _ in 0..3 {
            let ends = match hold_leftover(&path, Owner::Server)? {
                Some(reader) => Some((reader, open_keep_open(&path)?)),
                None => make_and_publish(&path)?,
            };
            if let Some((reader, keep_open)) = ends {
                return Ok(ServerFifo {
                    path,
                    reader,
                    _keep_open: keep_open,
                    received: Vec::new(),
                    pending: VecDeque::new(),
                });
            }
        }
        let path = path.display();
        anyhow::bail!("mkfifo({path}): kept changing (other servers starting?); try again")
    }

    /// Waits for the next request, or for bytes that are not one (for the caller to report).
    /// Reads never more than `wanted` records' worth: requests that the server will not answer
    /// (`--count`) stay in `.fifo`. Records are found with [`split_requests`].
    pub fn receive(
        &mut self,
        wanted: u64,
        deadline: Deadline,
    ) -> anyhow::Result<anyhow::Result<Request>> {
        let shown = self.path.display();
        loop {
            if let Some(next) = self.pending.pop_front() {
                return Ok(next.map_err(|bad| anyhow!("bad request ({shown}): {bad}")));
            }
            let records = usize::try_from(wanted).map_or(READ_AHEAD, |n| n.min(READ_AHEAD));
            let room = (records * RECORD_LEN)
                .saturating_sub(self.received.len())
                .max(1);
            crate::rt::wait::poll(&[(self.reader.as_fd(), PollFlags::POLLIN)], deadline)
                .with_context(|| format!("waiting for a request ({shown})"))?;
            let had = self.received.len();
            self.received.resize(had + room, 0);
            let read = sys::read_shown(self.reader.as_fd(), &mut self.received[had..], as_records);
            self.received.truncate(had + read.unwrap_or(0));
            match read {
                Err(e) if !matches!(e, Errno::EAGAIN | Errno::EINTR) => {
                    return Err(failed(e, "read", &self.path))
                }
                _ => {}
            }
            // Emptied the FIFO: a read that got less than it could, or nothing more waiting.
            let mut fds = [PollFd::new(self.reader.as_fd(), PollFlags::POLLIN)];
            let more = matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0);
            let at_rest = read.is_ok_and(|n| n < room) || !more;
            let (found, used) = split_requests(&self.received, at_rest);
            self.received.drain(..used);
            self.pending.extend(found);
        }
    }

    /// The requests already read but not yet taken with [`ServerFifo::receive`] (a server that
    /// stops early still owes them a reply).
    pub fn take_unanswered(&mut self) -> Vec<Request> {
        self.pending.drain(..).filter_map(Result::ok).collect()
    }

    /// Replies to `request`: opens the client's FIFO in the server's directory without blocking
    /// and writes a record with `text` (and the FIFO's name, as the C server does) in one piece.
    ///
    /// Fails at once — a server never waits for a client — if the FIFO does not exist, is not a
    /// FIFO, is the server's own `.fifo` (a hard link), has no reader, or has no room. The C client
    /// and ours both open their FIFO before they send, so a live client is always reading.
    pub fn send_reply(&self, request: &Request, text: &str) -> anyhow::Result<()> {
        let path = self.path.with_file_name(&request.reply_fifo);
        let what = format!("open({})", path.display());
        anyhow::ensure!(
            is_reply_fifo_name(request.reply_fifo.as_bytes()),
            "{what}: not a reply FIFO's name"
        );
        let reply = Record::new(&request.reply_fifo, text)?;
        // lstat first, so that not even `open` is tried on anything but a client's FIFO.
        let named = lstat(&path).map_err(|e| failed(e, "open", &path))?;
        anyhow::ensure!(is_fifo(&named), "{what}: not a FIFO");
        // A reply written into .fifo would come back as a request, for ever.
        anyhow::ensure!(
            !names(&path, self.reader.as_fd()),
            "{what}: the server's own FIFO (a link to {SERVER_FIFO})"
        );
        let writer = match open_nonblocking(&path, OFlag::O_WRONLY | OFlag::O_NOFOLLOW) {
            Ok(writer) => writer,
            Err(Errno::ENXIO) => anyhow::bail!("{what}: no process reads it"),
            Err(e) => return Err(failed(e, "open", &path)),
        };
        let opened = fstat(&writer).map_err(|e| failed(e, "open", &path))?;
        anyhow::ensure!(
            same_file(&opened, &named),
            "{what}: changed while it was opened"
        );
        whole(
            sys::write_shown(&writer, &reply.encode(), as_records),
            &path,
        )
    }
}

impl Drop for ServerFifo {
    fn drop(&mut self) {
        // Before the lock goes with `reader`, so that no other server takes a FIFO on its way out.
        remove_if_ours(&self.path, self.reader.as_fd());
    }
}

/// Makes a new FIFO `.fifo-new<PID>`, holds it, and renames it to `.fifo` (`path`). `None` if a
/// `.fifo` appeared meanwhile (another server starting): `RENAME_NOREPLACE` never takes its name.
fn make_and_publish(path: &Path) -> anyhow::Result<Option<(Flock<OwnedFd>, OwnedFd)>> {
    let fresh = path.with_file_name(format!("{SERVER_FIFO}-new{}", std::process::id()));
    let reader = make_owned_fifo(&fresh)?;
    let published =
        open_keep_open(&fresh).and_then(|keep_open| match sys::rename_noreplace(&fresh, path) {
            Ok(()) => Ok(Some(keep_open)),
            Err(Errno::EEXIST) => Ok(None),
            Err(e) => Err(failed(e, "renameat2", &fresh)),
        });
    if !matches!(published, Ok(Some(_))) {
        remove_if_ours(&fresh, reader.as_fd());
    }
    Ok(published?.map(|keep_open| (reader, keep_open)))
}

/// The server's own write end of its FIFO (possible once a reader exists).
fn open_keep_open(path: &Path) -> anyhow::Result<OwnedFd> {
    open_nonblocking(path, OFlag::O_WRONLY).map_err(|e| failed(e, "open", path))
}

/// The client's reply FIFO `.fifo<PID>`, open for reading and locked; removed when dropped.
#[derive(Debug)]
pub struct ClientFifo {
    name: String,
    path: PathBuf,
    reader: Flock<OwnedFd>,
}

impl ClientFifo {
    /// `mkfifo(".fifo<PID>", 0600)` in `dir`, opened for reading at once (without blocking, so
    /// the server can open it for writing as soon as the request arrives) and locked for the
    /// life of the client. A leftover `.fifo<PID>` is replaced only if no live process holds it.
    pub fn create(dir: &Path, pid: Pid) -> anyhow::Result<ClientFifo> {
        let name = reply_fifo_name(pid);
        let path = dir.join(&name);
        let reader = make_owned_fifo(&path)?;
        Ok(ClientFifo { name, path, reader })
    }

    /// The name to put in the request: `.fifo<PID>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the server's reply and reads it. Fails at `deadline`, on SIGINT/SIGTERM, and as
    /// soon as the server goes away without replying (nobody reads `.fifo` any more — the C
    /// client would wait for ever).
    pub fn receive(&self, server: &ToServer, deadline: Deadline) -> anyhow::Result<Record> {
        let what = format!("waiting for the reply ({})", self.path.display());
        let from = || format!("the reply from {}", server.server());
        let mut wait = Wait::new(deadline).saying(&from);
        let (mut bytes, mut got) = ([0u8; RECORD_LEN], 0);
        while got < RECORD_LEN {
            // POLLERR on our write end of `.fifo`: its last reader, the server, has gone.
            let watched = [
                (self.reader.as_fd(), PollFlags::POLLIN),
                (server.writer.as_fd(), PollFlags::empty()),
            ];
            let ready = wait.poll(&watched).with_context(|| what.clone())?;
            anyhow::ensure!(
                !ready[0].is_empty(),
                "{what}: the server went away before replying"
            );
            match sys::read_shown(self.reader.as_fd(), &mut bytes[got..], as_records) {
                Ok(0) => {
                    anyhow::bail!("{what}: the server closed it after {got} of {RECORD_LEN} bytes")
                }
                Ok(n) => got += n,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(failed(e, "read", &self.path)),
            }
        }
        Record::decode(&bytes).map_err(|bad| anyhow!("{what}: {bad}"))
    }
}

impl Drop for ClientFifo {
    fn drop(&mut self) {
        remove_if_ours(&self.path, self.reader.as_fd());
    }
}

/// A client's write end of the server's `.fifo`.
#[derive(Debug)]
pub struct ToServer {
    path: PathBuf,
    writer: OwnedFd,
}

impl ToServer {
    /// Opens `dir/.fifo` for writing, without blocking: no `.fifo`, or a `.fifo` that no server
    /// reads (left by one that was killed), is an error at once, not a hang.
    pub fn connect(dir: &Path) -> anyhow::Result<ToServer> {
        let path = dir.join(SERVER_FIFO);
        let what = format!("open({})", path.display());
        let writer = match open_nonblocking(&path, OFlag::O_WRONLY) {
            Ok(writer) => writer,
            Err(Errno::ENOENT) => anyhow::bail!("{what}: no such FIFO; start fifos first"),
            Err(Errno::ENXIO) => anyhow::bail!(
                "{what}: no server reads it (left over by one that died?); start fifos first"
            ),
            Err(e) => return Err(failed(e, "open", &path)),
        };
        let stat = fstat(&writer).map_err(|e| failed(e, "open", &path))?;
        anyhow::ensure!(is_fifo(&stat), "{what}: not a FIFO");
        Ok(ToServer { path, writer })
    }

    /// Who reads `.fifo`, for a message: `pid 4711 (fifos)`.
    fn server(&self) -> String {
        holders_of(&self.path, |_, how| how != OpenFor::Writing)
            .unwrap_or_else(|| format!("the server of {}", self.path.display()))
    }

    /// Sends `request` in one atomic write, waiting (until `deadline`) while `.fifo` is full.
    pub fn send(&self, request: &Record, deadline: Deadline) -> anyhow::Result<()> {
        let what = || format!("room in {}, read by {}", self.path.display(), self.server());
        let mut wait = Wait::new(deadline).saying(&what);
        loop {
            wait.poll(&[(self.writer.as_fd(), PollFlags::POLLOUT)])
                .with_context(|| format!("write({})", self.path.display()))?;
            match sys::write_shown(&self.writer, &request.encode(), as_records) {
                Err(Errno::EAGAIN) => continue,
                written => return whole(written, &self.path),
            }
        }
    }
}

// ---- shared mechanics -----------------------------------------------------------------------

/// Who owns a FIFO, which says what a process that holds it means ([`hold_leftover`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Owner {
    /// `.fifo`: its server; a client's write end does not make it in use.
    Server,
    /// `.fifo<PID>`, `.fifo-new<PID>`: the process with that PID, here or in another namespace.
    Process,
}

/// Opens the FIFO already at `path`, left by an `owner` that was killed, for reading and locks
/// it; `None` if there is none. Fails if it is not a FIFO, is another user's, or a live process
/// holds it: by our lock, or open without it (a C peer: for `.fifo`, a reader that is not a
/// server of ours about to lock it).
fn hold_leftover(path: &Path, owner: Owner) -> anyhow::Result<Option<Flock<OwnedFd>>> {
    let what = format!("mkfifo({})", path.display());
    let stat = match lstat(path) {
        Err(Errno::ENOENT) => return Ok(None),
        stat => stat.map_err(|e| failed(e, "lstat", path))?,
    };
    anyhow::ensure!(
        is_fifo(&stat),
        "{what}: exists and is not a FIFO; remove it first"
    );
    let uid = stat.st_uid;
    anyhow::ensure!(
        uid == nix::unistd::geteuid().as_raw(),
        "{what}: belongs to another user (uid {uid}); use another --dir"
    );
    let reader = match open_nonblocking(path, OFlag::O_RDONLY) {
        Err(Errno::ENOENT) => return Ok(None),
        reader => reader.map_err(|e| failed(e, "open", path))?,
    };
    let reader = lock(reader, path)?.ok_or_else(|| anyhow!("{what}: {}", owner.held()))?;
    // Its owner may have removed it between our open and our lock.
    if !names(path, reader.as_fd()) {
        return Ok(None);
    }
    let strangers = holders_of(path, |process, how| match owner {
        Owner::Server => how != OpenFor::Writing && !process.runs_this_program(),
        Owner::Process => true,
    });
    match (strangers, owner) {
        (None, _) => Ok(Some(reader)),
        (Some(readers), Owner::Server) => anyhow::bail!(
            "{what}: read by {readers}, a server that is not fifos of this suite; stop it first, \
             or use another --dir"
        ),
        (Some(users), Owner::Process) => {
            anyhow::bail!("{what}: in use by {users}; use another --dir")
        }
    }
}

impl Owner {
    /// What a lock that another process holds on the FIFO means.
    fn held(self) -> &'static str {
        match self {
            Owner::Server => "another fifos is already serving it; stop it first",
            Owner::Process => {
                "in use by a live process (the same PID in another PID namespace?); \
                               use another --dir"
            }
        }
    }
}

/// `mkfifo(path, 0600)`, opened for reading and locked by the caller, its owner. A leftover at
/// `path` ([`hold_leftover`]) is replaced; one that a live process holds is left alone.
fn make_owned_fifo(path: &Path) -> anyhow::Result<Flock<OwnedFd>> {
    let mode = Mode::S_IRUSR | Mode::S_IWUSR;
    let mut made = sys::mkfifo(path, mode);
    if made == Err(Errno::EEXIST) {
        if let Some(_leftover) = hold_leftover(path, Owner::Process)? {
            sys::unlink(path).map_err(|e| failed(e, "unlink", path))?;
        }
        made = sys::mkfifo(path, mode);
    }
    made.map_err(|e| failed(e, "mkfifo", path))?;
    let reader = open_nonblocking(path, OFlag::O_RDONLY).map_err(|e| {
        let _ = sys::unlink(path);
        failed(e, "open", path)
    })?;
    let held = || anyhow!("mkfifo({}): {}", path.display(), Owner::Process.held());
    lock(reader, path)?.ok_or_else(held)
}

/// Takes the exclusive `flock` on the FIFO `path` open as `fd`, without waiting; `None` if
/// another process holds it. The kernel drops it however its process ends: it says that a live
/// process owns the FIFO.
fn lock(fd: OwnedFd, path: &Path) -> anyhow::Result<Option<Flock<OwnedFd>>> {
    match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => Err(failed(e, "flock", path)),
    }
}

/// The outcome of one `write` of a whole record: a partial write (impossible into a pipe below
/// `PIPE_BUF`) is an error rather than a torn record.
fn whole(written: nix::Result<usize>, path: &Path) -> anyhow::Result<()> {
    match written.map_err(|e| failed(e, "write", path))? {
        RECORD_LEN => Ok(()),
        n => anyhow::bail!(
            "write({}): only {n} of {RECORD_LEN} bytes written",
            path.display()
        ),
    }
}

/// How a trace shows the bytes of a FIFO: each 160-byte record decoded,
/// `{".fifo4712", "This is a request from 4712."}`, anything else as bytes.
fn as_records(bytes: &[u8]) -> String {
    let parts: Vec<String> = bytes
        .chunks(RECORD_LEN)
        .map(|record| match record.len() {
            RECORD_LEN => format!(
                "{{{}, {}}}",
                text::c_string(&record[..NAME_LEN], NAME_LEN),
                text::c_string(&record[NAME_LEN..], 40)
            ),
            _ => text::string(record, 40),
        })
        .collect();
    match parts.len() {
        1 => parts.concat(),
        _ => format!("[{}]", parts.join(", ")),
    }
}

/// The processes (this one aside) that hold the FIFO at `path` open and are `wanted`, for a
/// message (`pid 4711 (fifos)`); `None` if none.
fn holders_of(path: &Path, wanted: impl Fn(&peer::Process, OpenFor) -> bool) -> Option<String> {
    let stat = lstat(path).ok()?;
    let holders: Vec<peer::Process> = peer::holders(stat.st_dev, stat.st_ino)
        .into_iter()
        .filter(|(process, how)| wanted(process, *how))
        .map(|(process, _)| process)
        .collect();
    (!holders.is_empty()).then(|| peer::listed(&holders))
}

fn open_nonblocking(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    sys::open(path, flags | OFlag::O_NONBLOCK, Mode::empty())
}

/// The error of `call` on `path` that failed with `errno`: `open(./.fifo): EACCES: …`.
fn failed(errno: Errno, call: &str, path: &Path) -> anyhow::Error {
    crate::sys::failed(errno, format_args!("{call}({})", path.display()))
}

fn is_fifo(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
}

fn same_file(a: &FileStat, b: &FileStat) -> bool {
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// Whether `path` (still) names the file open as `fd`.
fn names(path: &Path, fd: BorrowedFd<'_>) -> bool {
    matches!((lstat(path), fstat(fd)), (Ok(named), Ok(open)) if same_file(&named, &open))
}

/// Removes `path` if it is still the FIFO `fd` refers to (not one a successor made since).
fn remove_if_ours(path: &Path, fd: BorrowedFd<'_>) {
    if names(path, fd) {
        let _ = sys::unlink(path);
    }
}
