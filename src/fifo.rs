//! FIFOs (named pipes): the `fifos` server and its `fifoc` clients, which exchange the records of
//! [`crate::layout::record`].
//!
//! * The server reads requests from the FIFO [`SERVER_FIFO`] (`.fifo`) in the shared directory.
//! * Each client makes its own reply FIFO `.fifo<PID>` ([`reply_fifo_name`]) there **before** it
//!   sends its request, and names it in the request; the server writes the reply into it.
//!
//! Each FIFO has one owner, which holds an exclusive `flock` on it while it lives: [`ServerFifo`]
//! on `.fifo` (so exactly one server serves a directory), [`ClientFifo`] on `.fifo<PID>`. A FIFO
//! that no process holds — no lock, not open anywhere ([`crate::peer`]) — is a leftover of one
//! that was killed, and may be replaced; the PID in a name proves nothing (the same PID can be
//! live in another PID namespace). The owners remove their FIFO when dropped — on success, on
//! error and, with [`crate::rt::signals::catch_termination`], on a termination signal. Nothing a
//! client sends can make the server open a path other than a FIFO named `.fifo<digits>` in its
//! own directory (never its own `.fifo`), or wait for a client.

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
use crate::peer;
use crate::rt::wait::{Deadline, Wait};
use crate::sys::fd as sys;

/// How many records' worth the server reads from `.fifo` at most at once (below `PIPE_BUF`).
const READ_AHEAD: usize = 25;

// ---- the server's side ----------------------------------------------------------------------

/// The server's `.fifo`, open for reading and locked; removed when dropped.
///
/// The server also holds a write end of its own FIFO: then `read` never returns end-of-file when
/// the last client closes, and the server simply waits for the next one.
#[derive(Debug)]
pub struct ServerFifo {
    dir: PathBuf,
    path: PathBuf,
    reader: Flock<OwnedFd>,
    _keep_open: OwnedFd,
    /// Bytes read that do not make a whole record yet.
    received: Vec<u8>,
    /// Requests (and bad bytes) read but not yet taken by [`ServerFifo::receive`].
    pending: VecDeque<Result<Request, BadRecord>>,
}

impl ServerFifo {
    /// `mkfifo(".fifo", 0600)` in `dir` (an existing FIFO that no server holds is reused), opens
    /// it and locks it for the life of the server.
    ///
    /// A new FIFO is made under a temporary name, held, and only then renamed to `.fifo`, so that
    /// whenever `.fifo` appears a server already reads it. Fails if another server holds `.fifo`,
    /// or if `.fifo` is something else than a FIFO.
    pub fn create(dir: &Path) -> anyhow::Result<ServerFifo> {
        let path = dir.join(SERVER_FIFO);
        // A round repeats only if another server made or removed `.fifo` at that very moment.
        for _ in 0..3 {
            let ends = match lstat(&path) {
                Ok(stat) if !is_fifo(&stat) => anyhow::bail!(
                    "{} exists and is not a FIFO; remove it first",
                    path.display()
                ),
                Ok(stat) if stat.st_uid != nix::unistd::geteuid().as_raw() => anyhow::bail!(
                    "{} belongs to another user (uid {}): its requests are not ours to read; \
                     use another --dir",
                    path.display(),
                    stat.st_uid
                ),
                Ok(_) => take_over(&path)?,
                Err(Errno::ENOENT) => make_and_publish(dir, &path)?,
                Err(e) => return Err(e).with_context(|| format!("lstat({})", path.display())),
            };
            if let Some((reader, keep_open)) = ends {
                return Ok(ServerFifo {
                    dir: dir.to_owned(),
                    path,
                    reader,
                    _keep_open: keep_open,
                    received: Vec::new(),
                    pending: VecDeque::new(),
                });
            }
        }
        anyhow::bail!(
            "{} kept changing while fifos started (other servers starting?); try again",
            path.display()
        )
    }

    /// Waits for the next request, or for bytes that are not one (for the caller to report).
    ///
    /// Reads what has come, but never more than `wanted` records' worth: requests that the server
    /// will not answer (`--count`) stay in `.fifo`. Records are found with [`split_requests`].
    pub fn receive(
        &mut self,
        wanted: u64,
        deadline: Deadline,
    ) -> anyhow::Result<Result<Request, BadRecord>> {
        loop {
            if let Some(next) = self.pending.pop_front() {
                return Ok(next);
            }
            let records = usize::try_from(wanted).map_or(READ_AHEAD, |n| n.min(READ_AHEAD));
            let room = (records * RECORD_LEN)
                .saturating_sub(self.received.len())
                .max(1);
            crate::rt::wait::poll(&[(self.reader.as_fd(), PollFlags::POLLIN)], deadline)
                .with_context(|| format!("waiting for a request ({})", self.path.display()))?;
            let had = self.received.len();
            self.received.resize(had + room, 0);
            let read = sys::read_shown(self.reader.as_fd(), &mut self.received[had..], shown);
            self.received.truncate(had + read.unwrap_or(0));
            match read {
                Err(e) if !matches!(e, Errno::EAGAIN | Errno::EINTR) => {
                    return Err(e).with_context(|| format!("read({})", self.path.display()))
                }
                _ => {}
            }
            // Emptied the FIFO: a read that got less than it could, or nothing more waiting.
            let at_rest = read.is_ok_and(|n| n < room) || !self.has_more_bytes();
            let (found, used) = split_requests(&self.received, at_rest);
            self.received.drain(..used);
            self.pending.extend(found);
        }
    }

    /// Whether more bytes wait in `.fifo` now.
    fn has_more_bytes(&self) -> bool {
        let mut fds = [PollFd::new(self.reader.as_fd(), PollFlags::POLLIN)];
        matches!(nix::poll::poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0)
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
        anyhow::ensure!(
            is_reply_fifo_name(request.reply_fifo.as_bytes()),
            "{:?} is not a reply FIFO name",
            request.reply_fifo
        );
        let reply = Record::new(&request.reply_fifo, text)?;
        let path = self.dir.join(&request.reply_fifo);
        let shown = path.display();
        let context = || format!("open({shown})");
        // lstat first, so that not even `open` is tried on anything but a client's FIFO.
        let named = lstat(&path)
            .map_err(std::io::Error::from)
            .with_context(context)?;
        anyhow::ensure!(is_fifo(&named), "{shown} is not a FIFO");
        let own = fstat(self.reader.as_fd()).with_context(context)?;
        // A reply written into .fifo would come back as a request, for ever.
        anyhow::ensure!(
            !same_file(&named, &own),
            "{shown} is the server's own FIFO (a link to {SERVER_FIFO})"
        );
        let writer = match open_nonblocking(&path, OFlag::O_WRONLY | OFlag::O_NOFOLLOW) {
            Ok(writer) => writer,
            Err(Errno::ENXIO) => anyhow::bail!("{shown}: no process reads it"),
            Err(e) => return Err(e).with_context(context),
        };
        let opened = fstat(&writer).with_context(context)?;
        anyhow::ensure!(
            same_file(&opened, &named),
            "{shown} changed while it was opened"
        );
        write_record(&writer, &reply).with_context(|| format!("write({shown})"))
    }
}

impl Drop for ServerFifo {
    fn drop(&mut self) {
        // Before the lock goes with `reader`, so that no other server takes a FIFO on its way out.
        remove_if_ours(&self.path, self.reader.as_fd());
    }
}

/// The server's two ends of an existing `.fifo` (`path`), left by a server that was killed: no
/// process holds it. `None` if it went away meanwhile; fails if a live server holds it.
fn take_over(path: &Path) -> anyhow::Result<Option<(Flock<OwnedFd>, OwnedFd)>> {
    let shown = path.display();
    let reader = match open_nonblocking(path, OFlag::O_RDONLY) {
        Ok(reader) => reader,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("open({shown})")),
    };
    let reader = lock(reader, path)?
        .ok_or_else(|| anyhow!("another fifos is already serving {shown} (stop it first)"))?;
    // Its last server may have removed it between our open and our lock.
    if !names(path, reader.as_fd()) {
        return Ok(None);
    }
    // A server that holds no lock of ours (a C fifos) still reads it: not a leftover.
    if let Some(readers) = foreign_readers_of(path) {
        anyhow::bail!(
            "{shown} is being read by {readers}, a server that is not fifos of this suite; stop \
             it first, or use another --dir"
        );
    }
    Ok(Some((reader, open_keep_open(path)?)))
}

/// Makes a new FIFO `.fifo-new<PID>`, holds it, and renames it to `.fifo` (`path`). `None` if a
/// `.fifo` appeared meanwhile (another server started at the same moment): `RENAME_NOREPLACE`
/// makes that an error instead of silently taking the other server's name.
fn make_and_publish(dir: &Path, path: &Path) -> anyhow::Result<Option<(Flock<OwnedFd>, OwnedFd)>> {
    let fresh = dir.join(format!("{SERVER_FIFO}-new{}", std::process::id()));
    let reader = make_owned_fifo(&fresh)?;
    let published =
        open_keep_open(&fresh).and_then(|keep_open| match sys::rename_noreplace(&fresh, path) {
            Ok(()) => Ok(Some(keep_open)),
            Err(Errno::EEXIST) => Ok(None),
            Err(e) => {
                Err(e).with_context(|| format!("rename({} to {})", fresh.display(), path.display()))
            }
        });
    if !matches!(published, Ok(Some(_))) {
        remove_if_ours(&fresh, reader.as_fd());
    }
    Ok(published?.map(|keep_open| (reader, keep_open)))
}

/// The server's own write end of its FIFO (possible once a reader exists).
fn open_keep_open(path: &Path) -> anyhow::Result<OwnedFd> {
    open_nonblocking(path, OFlag::O_WRONLY).with_context(|| format!("open({})", path.display()))
}

// ---- the client's side ----------------------------------------------------------------------

/// The client's reply FIFO `.fifo<PID>`, open for reading and locked; removed when dropped.
#[derive(Debug)]
pub struct ClientFifo {
    name: String,
    path: PathBuf,
    reader: Flock<OwnedFd>,
}

impl ClientFifo {
    /// `mkfifo(".fifo<PID>", 0600)` in `dir`, opens it for reading at once (without blocking, so
    /// the server can open it for writing as soon as the request arrives) and locks it for the
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

    /// Waits for the server's reply and reads it.
    ///
    /// Fails at `deadline`, on SIGINT/SIGTERM, and as soon as the server goes away without
    /// replying (no process reads `.fifo` any more — the C client would wait for ever).
    pub fn receive(&self, server: &ToServer, deadline: Deadline) -> anyhow::Result<Record> {
        let context = || format!("waiting for the reply ({})", self.path.display());
        let mut bytes = Vec::with_capacity(RECORD_LEN);
        let mut chunk = [0u8; RECORD_LEN];
        let what = || format!("the reply from {}", server.server());
        let mut wait = Wait::new(deadline).saying(&what);
        while bytes.len() < RECORD_LEN {
            // POLLERR on our write end of `.fifo`: its last reader, the server, has gone.
            let watched = [
                (self.reader.as_fd(), PollFlags::POLLIN),
                (server.writer.as_fd(), PollFlags::empty()),
            ];
            let ready = wait.poll(&watched).with_context(context)?;
            if ready[0].is_empty() {
                anyhow::bail!(
                    "{}: the server went away before replying",
                    self.path.display()
                );
            }
            match sys::read_shown(
                self.reader.as_fd(),
                &mut chunk[..RECORD_LEN - bytes.len()],
                shown,
            ) {
                Ok(0) => anyhow::bail!(
                    "{}: the server closed it after {} of {RECORD_LEN} bytes",
                    self.path.display(),
                    bytes.len()
                ),
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(e).with_context(|| format!("read({})", self.path.display())),
            }
        }
        Record::decode(&bytes).with_context(|| format!("reply in {}", self.path.display()))
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
        let shown = path.display();
        let writer = match open_nonblocking(&path, OFlag::O_WRONLY) {
            Ok(writer) => writer,
            Err(Errno::ENOENT) => anyhow::bail!("open({shown}): no such FIFO; start fifos first"),
            Err(Errno::ENXIO) => anyhow::bail!(
                "open({shown}): no server reads it (left over by one that died?); start fifos first"
            ),
            Err(e) => return Err(e).with_context(|| format!("open({shown})")),
        };
        anyhow::ensure!(is_fifo(&fstat(&writer)?), "{shown} is not a FIFO");
        Ok(ToServer { path, writer })
    }

    /// Who reads `.fifo`, for a message: `pid 4711 (fifos)`.
    fn server(&self) -> String {
        readers_of(&self.path).unwrap_or_else(|| format!("the server of {}", self.path.display()))
    }

    /// Sends `request` in one atomic write, waiting (until `deadline`) if `.fifo` is full.
    pub fn send(&self, request: &Record, deadline: Deadline) -> anyhow::Result<()> {
        let context = || format!("write({})", self.path.display());
        let what = || format!("room in {}, read by {}", self.path.display(), self.server());
        let mut wait = Wait::new(deadline).saying(&what);
        loop {
            wait.poll(&[(self.writer.as_fd(), PollFlags::POLLOUT)])
                .with_context(context)?;
            match write_record(&self.writer, request) {
                Err(e) if e.downcast_ref() == Some(&Errno::EAGAIN) => continue,
                other => return other.with_context(context),
            }
        }
    }
}

// ---- shared mechanics -----------------------------------------------------------------------

fn open_nonblocking(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    sys::open(path, flags | OFlag::O_NONBLOCK, Mode::empty())
}

/// How a trace shows the bytes of a FIFO: each 160-byte record decoded,
/// `{".fifo4712", "This is a request from 4712."}`, anything else as bytes.
fn shown(bytes: &[u8]) -> String {
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

/// Takes the exclusive `flock` on the FIFO `path` open as `fd`, without waiting; `None` if
/// another process holds it. Held as long as the descriptor is open — the kernel drops it
/// however its process ends — the lock says that a live process owns the FIFO.
fn lock(fd: OwnedFd, path: &Path) -> anyhow::Result<Option<Flock<OwnedFd>>> {
    match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => Ok(Some(locked)),
        Err((_, Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, e)) => {
            Err(e).with_context(|| format!("flock({}, LOCK_EX|LOCK_NB)", path.display()))
        }
    }
}

/// `mkfifo(path, 0600)`, opened for reading and locked ([`lock`]) by the caller, its owner.
///
/// A FIFO already at `path` that no process holds is a leftover of one that was killed: it is
/// replaced. One that a live process holds is left alone, whatever the PID in its name says.
fn make_owned_fifo(path: &Path) -> anyhow::Result<Flock<OwnedFd>> {
    let shown = path.display();
    let in_use = || {
        anyhow!("{shown}: in use by a live process (the same PID in another PID namespace?); use another --dir")
    };
    let mode = Mode::S_IRUSR | Mode::S_IWUSR;
    let mut made = sys::mkfifo(path, mode);
    if made == Err(Errno::EEXIST) {
        let stat = lstat(path).with_context(|| format!("lstat({shown})"))?;
        anyhow::ensure!(
            is_fifo(&stat),
            "{shown} exists and is not a FIFO; remove it first"
        );
        let leftover =
            open_nonblocking(path, OFlag::O_RDONLY).with_context(|| format!("open({shown})"))?;
        let leftover = lock(leftover, path)?.ok_or_else(in_use)?;
        // Held open by a process that takes no lock of ours (a C client): not a leftover.
        if let Some(users) = users_of(path) {
            anyhow::bail!("{shown}: in use by {users}; use another --dir");
        }
        if names(path, leftover.as_fd()) {
            sys::unlink(path).with_context(|| format!("removing the leftover {shown}"))?;
        }
        made = sys::mkfifo(path, mode);
    }
    made.with_context(|| format!("mkfifo({shown}, 0600)"))?;
    match open_nonblocking(path, OFlag::O_RDONLY) {
        Ok(reader) => lock(reader, path)?.ok_or_else(in_use),
        Err(e) => {
            let _ = sys::unlink(path);
            Err(e).with_context(|| format!("open({shown})"))
        }
    }
}

/// One `write` of the whole record; a partial write (impossible for a pipe below `PIPE_BUF`,
/// unless the peer is not a pipe) is an error rather than a torn record.
fn write_record(fd: &OwnedFd, record: &Record) -> anyhow::Result<()> {
    let bytes = record.encode();
    let written = sys::write_shown(fd, &bytes, shown)?;
    anyhow::ensure!(
        written == RECORD_LEN,
        "only {written} of {RECORD_LEN} bytes written"
    );
    Ok(())
}

/// The processes (this one aside) that hold the file at `path` open, as a list for a message
/// (`pid 4711 (fifos)`); `None` if none does.
fn users_of(path: &Path) -> Option<String> {
    holders_of(path, |_, _| true)
}

/// The processes (this one aside) that hold the FIFO at `path` open for reading; `None` if none.
fn readers_of(path: &Path) -> Option<String> {
    holders_of(path, |_, how| how != peer::OpenFor::Writing)
}

/// Like [`readers_of`], without other instances of this program: a server of ours that has
/// opened `.fifo` but not locked it yet finds it locked and stops.
fn foreign_readers_of(path: &Path) -> Option<String> {
    holders_of(path, |process, how| {
        how != peer::OpenFor::Writing && !process.runs_this_program()
    })
}

fn holders_of(
    path: &Path,
    wanted: impl Fn(&peer::Process, peer::OpenFor) -> bool,
) -> Option<String> {
    let stat = lstat(path).ok()?;
    let holders: Vec<peer::Process> = peer::holders(stat.st_dev, stat.st_ino)
        .into_iter()
        .filter(|(process, how)| wanted(process, *how))
        .map(|(process, _)| process)
        .collect();
    (!holders.is_empty()).then(|| peer::listed(&holders))
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
