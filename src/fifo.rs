//! FIFOs (named pipes): the `fifos` server reads requests ([`crate::layout::record`]) from its
//! `.fifo`; each `fifoc` client makes its own reply FIFO `.fifo<PID>` before it asks.
//!
//! Each FIFO has one owner, which locks it (`flock`) while it lives — so one server serves a
//! directory, and a FIFO that no process holds ([`crate::peer::holders`]) is a killed owner's
//! leftover, whatever PID its name says — and removes it when dropped (also on a signal, with
//! [`crate::rt::signals::catch_termination`]).

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
use crate::rt::wait::{self, Deadline, Wait};
use crate::sys::fd as sys;

/// How many records' worth the server reads from `.fifo` at most at once (below `PIPE_BUF`).
const READ_AHEAD: usize = 25;

/// Why a FIFO named after a PID cannot be ours.
const IN_USE: &str =
    "in use by a live process (the same PID in another PID namespace?); use another --dir";

/// The server's `.fifo`, open for reading and locked; removed when dropped. The server also
/// holds a write end of it, so that `read` never returns end-of-file when the last client closes.
#[derive(Debug)]
pub struct ServerFifo {
    fifo: Owned,
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
            let ends = match hold_leftover(&path, true)? {
                Some(fifo) => Some((open_keep_open(&path)?, fifo)),
                None => make_and_publish(&path)?,
            };
            if let Some((keep_open, fifo)) = ends {
                return Ok(ServerFifo {
                    fifo,
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
        let (path, reader) = (&self.fifo.path, self.fifo.reader.as_fd());
        loop {
            if let Some(next) = self.pending.pop_front() {
                let bad = |bad| anyhow!("bad request ({}): {bad}", path.display());
                return Ok(next.map_err(bad));
            }
            let most =
                usize::try_from(wanted).map_or(READ_AHEAD, |n| n.min(READ_AHEAD)) * RECORD_LEN;
            let room = most.saturating_sub(self.received.len()).max(1);
            let had = self.received.len();
            self.received.resize(had + room, 0);
            let mut waited = Ok(());
            let watched = [(reader, PollFlags::POLLIN)];
            let ready = || wait::in_call(wait::poll(&watched, deadline).map(drop), &mut waited);
            let read = sys::read_waiting(reader, &mut self.received[had..], as_records, ready);
            self.received
                .truncate(had + read.as_ref().map_or(0, |n| *n));
            waited.with_context(|| format!("waiting for a request ({})", path.display()))?;
            let read = match read {
                Ok(n) => Some(n),
                Err(Errno::EAGAIN | Errno::EINTR) => None,
                Err(e) => return Err(failed(e, "read", path)),
            };
            // Emptied the FIFO: a read that got less than it could, or nothing more waiting.
            let mut fds = [PollFd::new(reader, PollFlags::POLLIN)];
            let more = matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0);
            let at_rest = read.is_some_and(|n| n < room) || !more;
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

    /// Replies to `request`: opens the client's FIFO `.fifo<digits>` in the server's directory
    /// without blocking (every client opens its FIFO before it asks) and writes a record with
    /// `text` in one piece. Fails at once — a server never waits for a client — if the FIFO is
    /// missing, not a FIFO, the server's own `.fifo` (a hard link), unread or full.
    pub fn send_reply(&self, request: &Request, text: &str) -> anyhow::Result<()> {
        let path = self.fifo.path.with_file_name(&request.reply_fifo);
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
            !names(&path, self.fifo.reader.as_fd()),
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
        let written = sys::write_shown(&writer, &reply.encode(), as_records);
        whole(written, &path)
    }
}

/// Makes a new FIFO `.fifo-new<PID>`, holds it, and renames it to `.fifo` (`path`); `None` if a
/// `.fifo` appeared meanwhile (another server starting): `RENAME_NOREPLACE` never takes its name.
fn make_and_publish(path: &Path) -> anyhow::Result<Option<(OwnedFd, Owned)>> {
    let mut fifo =
        make_owned_fifo(&path.with_file_name(format!("{SERVER_FIFO}-new{}", std::process::id())))?;
    let keep_open = open_keep_open(&fifo.path)?;
    match sys::rename_noreplace(&fifo.path, path) {
        Ok(()) => fifo.path = path.to_owned(),
        Err(Errno::EEXIST) => return Ok(None),
        Err(e) => return Err(failed(e, "renameat2", &fifo.path)),
    }
    Ok(Some((keep_open, fifo)))
}

/// The server's own write end of its FIFO (possible once a reader exists).
fn open_keep_open(path: &Path) -> anyhow::Result<OwnedFd> {
    open_nonblocking(path, OFlag::O_WRONLY).map_err(|e| failed(e, "open", path))
}

/// The client's reply FIFO `.fifo<PID>`, open for reading and locked; removed when dropped.
#[derive(Debug)]
pub struct ClientFifo {
    name: String,
    fifo: Owned,
}

impl ClientFifo {
    /// `mkfifo(".fifo<PID>", 0600)` in `dir`, opened for reading at once (so that the server
    /// can open it for writing as soon as the request arrives) and locked.
    pub fn create(dir: &Path, pid: Pid) -> anyhow::Result<ClientFifo> {
        let name = reply_fifo_name(pid);
        let fifo = make_owned_fifo(&dir.join(&name))?;
        Ok(ClientFifo { name, fifo })
    }

    /// The name to put in the request: `.fifo<PID>`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Waits for the server's reply and reads it; fails at `deadline`, on a signal, and as soon
    /// as the server goes away without replying (nobody reads `.fifo` any more).
    pub fn receive(&self, server: &ToServer, deadline: Deadline) -> anyhow::Result<Record> {
        let (path, reader) = (&self.fifo.path, self.fifo.reader.as_fd());
        let what = format!("waiting for the reply ({})", path.display());
        let from = || format!("the reply from {}", server.server());
        let mut wait = Wait::new(deadline).saying(&from);
        let (mut bytes, mut got) = ([0u8; RECORD_LEN], 0);
        while got < RECORD_LEN {
            // POLLERR on our write end of `.fifo`: its last reader, the server, has gone.
            let watched = [
                (reader, PollFlags::POLLIN),
                (server.writer.as_fd(), PollFlags::empty()),
            ];
            let (mut waited, mut gone) = (Ok(()), false);
            let ready = || {
                let ready = wait::in_call(wait.poll(&watched), &mut waited)?;
                // The read is made all the same (it finds nothing): the trace says it.
                gone = ready[0].is_empty();
                Ok(())
            };
            let read = sys::read_waiting(reader, &mut bytes[got..], as_records, ready);
            waited.with_context(|| what.clone())?;
            if gone {
                anyhow::bail!("{what}: the server went away before replying");
            }
            match read {
                Ok(0) => anyhow::bail!("{what}: the server closed it after {got} of 160 bytes"),
                Ok(n) => got += n,
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(e) => return Err(failed(e, "read", path)),
            }
        }
        Record::decode(&bytes).map_err(|bad| anyhow!("{what}: {bad}"))
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
            let mut waited = Ok(());
            let watched = [(self.writer.as_fd(), PollFlags::POLLOUT)];
            let room = || wait::in_call(wait.poll(&watched).map(drop), &mut waited);
            let written = sys::write_waiting(&self.writer, &request.encode(), as_records, room);
            waited.with_context(|| format!("write({})", self.path.display()))?;
            match written {
                Err(Errno::EAGAIN) => continue,
                written => return whole(written, &self.path),
            }
        }
    }
}

// ---- owning a FIFO --------------------------------------------------------------------------

/// A FIFO this process made or took over, open for reading and locked (`flock`: the kernel
/// drops it however the process ends); removed when dropped, before the lock goes.
#[derive(Debug)]
struct Owned {
    path: PathBuf,
    reader: Flock<OwnedFd>,
}

impl Drop for Owned {
    fn drop(&mut self) {
        // Unless `path` names another FIFO by now (one a successor made).
        if names(&self.path, self.reader.as_fd()) {
            let _ = sys::unlink(&self.path);
        }
    }
}

/// `mkfifo(path, 0600)`, opened for reading and locked: the caller owns it. A leftover at `path`
/// ([`hold_leftover`]) is removed first; one that a live process holds is left alone.
fn make_owned_fifo(path: &Path) -> anyhow::Result<Owned> {
    let mode = Mode::S_IRUSR | Mode::S_IWUSR;
    let mut made = sys::mkfifo(path, mode);
    if made == Err(Errno::EEXIST) {
        drop(hold_leftover(path, false)?); // removed, as its owner would have
        made = sys::mkfifo(path, mode);
    }
    made.map_err(|e| failed(e, "mkfifo", path))?;
    let reader = open_nonblocking(path, OFlag::O_RDONLY).map_err(|e| {
        let _ = sys::unlink(path);
        failed(e, "open", path)
    })?;
    let reader = lock(reader, path, IN_USE)?;
    Ok(Owned {
        path: path.to_owned(),
        reader,
    })
}

/// Takes over the FIFO at `path` left by a killed owner; `None` if there is none. Fails if it is
/// not a FIFO, another user's, or held by a live process — locked, or open without our lock (a C
/// peer): for the `server`'s `.fifo`, a reader not about to lock it as a server of ours does.
fn hold_leftover(path: &Path, server: bool) -> anyhow::Result<Option<Owned>> {
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
    let held = match server {
        true => "another fifos is already serving it; stop it first",
        false => IN_USE,
    };
    let reader = lock(reader, path, held)?;
    // Its owner may have removed it between our open and our lock.
    if !names(path, reader.as_fd()) {
        return Ok(None);
    }
    let counts =
        |p: &peer::Process, how| !server || (how != OpenFor::Writing && !p.runs_this_program());
    match holders_of(path, counts) {
        None => Ok(Some(Owned {
            path: path.to_owned(),
            reader,
        })),
        Some(readers) if server => anyhow::bail!(
            "{what}: read by {readers}, a server that is not fifos of this suite; stop it first, \
             or use another --dir"
        ),
        Some(users) => anyhow::bail!("{what}: in use by {users}; use another --dir"),
    }
}

/// Takes the exclusive `flock` on the FIFO `path` open as `fd`, without waiting; fails saying
/// `held` if another process holds it.
fn lock(fd: OwnedFd, path: &Path, held: &str) -> anyhow::Result<Flock<OwnedFd>> {
    Flock::lock(fd, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| match e {
        Errno::EWOULDBLOCK => anyhow!("mkfifo({}): {held}", path.display()),
        e => failed(e, "flock", path),
    })
}

/// The processes (this one aside) that hold the FIFO at `path` open and `count`, for a message
/// (`pid 4711 (fifos)`); `None` if none.
fn holders_of(path: &Path, count: impl Fn(&peer::Process, OpenFor) -> bool) -> Option<String> {
    let stat = lstat(path).ok()?;
    let holders: Vec<peer::Process> = peer::holders(stat.st_dev, stat.st_ino)
        .into_iter()
        .filter(|(process, how)| count(process, *how))
        .map(|(process, _)| process)
        .collect();
    (!holders.is_empty()).then(|| peer::listed(&holders))
}

// ---- shared mechanics -----------------------------------------------------------------------

fn open_nonblocking(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    sys::open(path, flags | OFlag::O_NONBLOCK, Mode::empty())
}

/// The outcome of one `write` of a whole record: a partial write (impossible into a pipe below
/// `PIPE_BUF`) is an error rather than a torn record.
fn whole(written: nix::Result<usize>, path: &Path) -> anyhow::Result<()> {
    match written.map_err(|e| failed(e, "write", path))? {
        RECORD_LEN => Ok(()),
        n => anyhow::bail!("write({}): only {n} of 160 bytes written", path.display()),
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
