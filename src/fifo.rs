//! FIFOs (named pipes): the `fifos` server and its `fifoc` clients.
//!
//! The protocol of the C programs, kept byte for byte:
//! * The server reads requests from the FIFO [`SERVER_FIFO`] (`.fifo`) in the shared directory.
//! * Each client makes its own reply FIFO `.fifo<PID>` ([`reply_fifo_name`]) there **before** it
//!   sends its request, and names it in the request; the server writes the reply into it.
//! * Requests and replies are [`Record`]s of exactly [`RECORD_LEN`] = 160 bytes:
//!
//! | bytes    | field | content                                                           |
//! |----------|-------|-------------------------------------------------------------------|
//! | 0..32    | name  | the reply FIFO's name, `.fifo<PID>`, NUL-terminated, NUL-padded   |
//! | 32..160  | text  | the message, NUL-terminated, NUL-padded                           |
//!
//! A write of at most `PIPE_BUF` (4096) bytes into a pipe is atomic, so the records of many
//! clients writing into `.fifo` at once never interleave. But anyone may write anything into
//! `.fifo` (`echo hello > .fifo`): the server then finds the next record again by its name field
//! ([`split_requests`]), so that the requests behind the stray bytes are still answered.
//!
//! Each FIFO has one owner, which holds an exclusive `flock` on it while it lives: [`ServerFifo`]
//! on `.fifo` (so exactly one server serves a directory), [`ClientFifo`] on `.fifo<PID>`. A FIFO
//! that no process holds is a leftover of one that was killed, and may be replaced; the PID in a
//! name proves nothing (the same PID can be live in another PID namespace). The owners remove
//! their FIFO when dropped — on success, on error and, with
//! [`crate::signals::catch_termination`], on a termination signal. Nothing a client sends can make
//! the server open a path other than a FIFO named `.fifo<digits>` in its own directory (never its
//! own `.fifo`), or wait for a client.

use std::collections::VecDeque;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::stat::{fstat, lstat, FileStat, Mode, SFlag};
use nix::unistd::Pid;

use crate::wait::{self, Deadline, Wait};
use crate::{peer, sys, trace};

/// The server's FIFO, in the directory both sides use (`--dir`).
pub const SERVER_FIFO: &str = ".fifo";
/// Size of the name field: the reply FIFO's name, NUL-terminated.
pub const NAME_LEN: usize = 32;
/// Size of the text field: the message, NUL-terminated.
pub const TEXT_LEN: usize = 128;
/// Size of a whole record, request or reply.
pub const RECORD_LEN: usize = NAME_LEN + TEXT_LEN;
/// How many records' worth the server reads from `.fifo` at most at once (below `PIPE_BUF`).
const READ_AHEAD: usize = 25;

/// The name of the reply FIFO of the client with process ID `pid`: `.fifo<PID>`.
pub fn reply_fifo_name(pid: Pid) -> String {
    format!("{SERVER_FIFO}{pid}")
}

/// The most digits a reply FIFO's name may have after `.fifo` (a 64-bit PID has 20).
const MAX_PID_DIGITS: usize = 20;

/// Whether `name` has the only form a reply FIFO may have: `.fifo` and 1 to 20 digits
/// (so no `/`, no `..`, nothing outside the server's directory, and never `.fifo` itself).
pub fn is_reply_fifo_name(name: &[u8]) -> bool {
    name.strip_prefix(SERVER_FIFO.as_bytes())
        .is_some_and(|digits| {
            (1..=MAX_PID_DIGITS).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
        })
}

/// One 160-byte request or reply, decoded: its two fields without their NUL padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    name: Vec<u8>,
    text: Vec<u8>,
}

/// Why bytes received are not a request (the server reports it and skips them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecord {
    /// Not exactly 160 bytes.
    WrongSize(usize),
    /// No NUL in the name field.
    NameNotTerminated,
    /// No NUL in the text field.
    TextNotTerminated,
    /// The name is not of the form `.fifo<digits>`.
    BadName(String),
    /// Bytes on `.fifo` that do not start a record, up to where the next one may start.
    Stray(usize),
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecord::WrongSize(n) => write!(f, "record of {n} bytes, not {RECORD_LEN}"),
            BadRecord::NameNotTerminated => write!(f, "name field without NUL"),
            BadRecord::TextNotTerminated => write!(f, "text field without NUL"),
            BadRecord::BadName(name) => write!(f, "reply FIFO {name:?} is not .fifo<digits>"),
            BadRecord::Stray(1) => write!(f, "1 stray byte that does not start a record"),
            BadRecord::Stray(n) => write!(f, "{n} stray bytes that do not start a record"),
        }
    }
}

impl std::error::Error for BadRecord {}

impl Record {
    /// A record with `name` and `text`; fails if either does not fit its field with its NUL.
    pub fn new(name: &str, text: &str) -> anyhow::Result<Record> {
        for (field, value, room) in [("name", name, NAME_LEN), ("text", text, TEXT_LEN)] {
            anyhow::ensure!(
                value.len() < room,
                "{field} {value:?} does not fit {room} bytes"
            );
            anyhow::ensure!(!value.contains('\0'), "{field} {value:?} contains a NUL");
        }
        Ok(Record {
            name: name.into(),
            text: text.into(),
        })
    }

    /// The 160 bytes the C programs exchange: both fields NUL-terminated and NUL-padded.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut bytes = [0u8; RECORD_LEN];
        bytes[..self.name.len()].copy_from_slice(&self.name);
        bytes[NAME_LEN..NAME_LEN + self.text.len()].copy_from_slice(&self.text);
        bytes
    }

    /// Reads a record from exactly 160 bytes; each field must hold its terminating NUL.
    /// What follows a field's NUL is ignored (C's `strcpy` leaves garbage there).
    pub fn decode(bytes: &[u8]) -> Result<Record, BadRecord> {
        if bytes.len() != RECORD_LEN {
            return Err(BadRecord::WrongSize(bytes.len()));
        }
        let (name, text) = bytes.split_at(NAME_LEN);
        let until_nul = |field: &[u8]| {
            field
                .iter()
                .position(|&b| b == 0)
                .map(|end| field[..end].to_vec())
        };
        Ok(Record {
            name: until_nul(name).ok_or(BadRecord::NameNotTerminated)?,
            text: until_nul(text).ok_or(BadRecord::TextNotTerminated)?,
        })
    }

    /// The name field, checked to be a reply FIFO's name (see [`is_reply_fifo_name`]).
    pub fn reply_fifo(&self) -> Result<&str, BadRecord> {
        match std::str::from_utf8(&self.name) {
            Ok(name) if is_reply_fifo_name(&self.name) => Ok(name),
            _ => Err(BadRecord::BadName(self.name.escape_ascii().to_string())),
        }
    }

    /// The text, printable in C notation ([`crate::trace::printable`]): a peer's bytes must not
    /// drive the terminal.
    pub fn text(&self) -> String {
        crate::trace::printable(&self.text)
    }
}

/// A request as the server takes it: a good record whose name is a reply FIFO's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's reply FIFO, `.fifo<digits>` (checked).
    pub reply_fifo: String,
    /// The request's text, printable (see [`Record::text`]).
    pub text: String,
}

impl Request {
    /// Decodes and checks a request received on `.fifo`.
    pub fn decode(bytes: &[u8]) -> Result<Request, BadRecord> {
        let record = Record::decode(bytes)?;
        Ok(Request {
            reply_fifo: record.reply_fifo()?.to_owned(),
            text: record.text(),
        })
    }
}

// ---- finding the records in the bytes of `.fifo` --------------------------------------------

/// Takes the requests from the start of `received`, the bytes read from `.fifo` so far: returns
/// each request or each run of bad bytes, in order, and how many bytes they took. The rest (the
/// start of a record not yet complete) waits for more bytes.
///
/// In step, a record is taken whole as the C server takes it: a name `.fifo<digits>` with its
/// NUL (what follows the NUL is ignored) and a text with its NUL. Bytes that are not one are
/// skipped up to where the next record may start — where a name field holds `.fifo<digits>` and
/// nothing but NULs after it, the form every client writes — and reported as
/// [`BadRecord::Stray`]; a whole 160-byte record with a bad name or text is reported with its
/// reason.
/// A record that does not end where the next record starts (or the bytes end) was cut short,
/// when a whole request in step with what follows starts inside it: then its bytes are stray.
///
/// `at_rest` says that `received` holds all the bytes written so far (the FIFO was emptied). A
/// write of at most `PIPE_BUF` bytes arrives whole, so then they are whole writes and a record
/// ending where they end is in step; otherwise a doubtful record waits for more bytes.
///
/// ```
/// use ipclab::fifo::{split_requests, BadRecord, Record, Request};
/// let mut received = b"hello".to_vec();
/// received.extend(Record::new(".fifo42", "This is a request from 42.").unwrap().encode());
/// let (found, used) = split_requests(&received, true);
/// assert_eq!(found[0], Err(BadRecord::Stray(5)));
/// assert_eq!(found[1].as_ref().map(|r| r.reply_fifo.as_str()), Ok(".fifo42"));
/// assert_eq!(used, received.len());
/// ```
pub fn split_requests(received: &[u8], at_rest: bool) -> (Vec<Result<Request, BadRecord>>, usize) {
    let mut found: Vec<Result<Request, BadRecord>> = Vec::new();
    let mut used = 0;
    while let Some((item, len)) = next_request(&received[used..], at_rest) {
        used += len;
        match (found.last_mut(), item) {
            (Some(Err(BadRecord::Stray(before))), Err(BadRecord::Stray(more))) => *before += more,
            (_, item) => found.push(item),
        }
    }
    (found, used)
}

/// The first request or run of bad bytes at the start of `bytes` and its length; `None` if more
/// bytes are needed to tell. Always takes at least one byte.
fn next_request(bytes: &[u8], at_rest: bool) -> Option<(Result<Request, BadRecord>, usize)> {
    let record_start = |at: usize, want: NameField| name_field(&bytes[at..], Padding::Nul) == want;
    let first = bytes.get(..RECORD_LEN);
    // A record that ends where another record starts, or where the bytes end when they are all
    // there is (whole writes: see split_requests), is in step.
    let in_step_after = |end: usize| {
        (end == bytes.len() && at_rest) || (end < bytes.len() && !record_start(end, NameField::Bad))
    };
    let whole_request = |at: usize| bytes.get(at..at + RECORD_LEN).map(Request::decode);
    if name_field(bytes, Padding::Any) != NameField::Bad {
        let in_step = match first.map(Request::decode) {
            None => return None, // the rest of this record is still to come
            Some(Ok(request)) if in_step_after(RECORD_LEN) => {
                return Some((Ok(request), RECORD_LEN));
            }
            Some(decoded) => decoded,
        };
        // Out of step: the bytes before a whole request that is in step were a cut record
        // (a fragment a client wrote and never finished).
        let inner_start = (1..RECORD_LEN).find(|&at| {
            record_start(at, NameField::Good)
                && matches!(whole_request(at), Some(Ok(_)))
                && in_step_after(at + RECORD_LEN)
        });
        if let Some(at) = inner_start {
            return Some((Err(BadRecord::Stray(at)), at));
        }
        let may_start_inside =
            (1..RECORD_LEN.min(bytes.len())).any(|at| !record_start(at, NameField::Bad));
        if !at_rest && may_start_inside {
            return None; // the bytes still to come tell which record is in step
        }
        if let Ok(request) = in_step {
            return Some((Ok(request), RECORD_LEN));
        }
    }
    // Not a request: skip to where the next record may start.
    let next_start = (1..bytes.len())
        .find(|&at| !record_start(at, NameField::Bad))
        .unwrap_or(bytes.len());
    if next_start >= RECORD_LEN {
        // A whole record with a bad name or text: skip just it, in step with the records behind.
        let bad_record = first.map(Request::decode);
        if let Some(Err(bad @ (BadRecord::BadName(_) | BadRecord::TextNotTerminated))) = bad_record
        {
            return Some((Err(bad), RECORD_LEN));
        }
    }
    Some((Err(BadRecord::Stray(next_start)), next_start))
}

/// What may follow the NUL that ends the name in a name field.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Padding {
    /// Anything: the C client's `strcpy` leaves whatever was on its stack there.
    Any,
    /// Only NULs: how every client of this suite writes it, and what marks a record start.
    Nul,
}

/// Whether bytes start with a name field holding a reply FIFO's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameField {
    Good,
    Bad,
    /// Good so far, but the bytes end before the field does.
    Incomplete,
}

/// Whether `bytes` start with a name field: a reply FIFO's name ([`is_reply_fifo_name`]), its
/// NUL, and `padding` up to the field's end.
fn name_field(bytes: &[u8], padding: Padding) -> NameField {
    let field = &bytes[..bytes.len().min(NAME_LEN)];
    let Some(end) = field.iter().position(|&b| b == 0) else {
        // No NUL yet: good so far while what is there can still grow into `.fifo<digits>`.
        let (prefix, digits) = field.split_at(field.len().min(SERVER_FIFO.len()));
        let may_grow = field.len() < NAME_LEN
            && SERVER_FIFO.as_bytes().starts_with(prefix)
            && digits.len() <= MAX_PID_DIGITS
            && digits.iter().all(u8::is_ascii_digit);
        return if may_grow {
            NameField::Incomplete
        } else {
            NameField::Bad
        };
    };
    let padded = padding == Padding::Any || field[end..].iter().all(|&b| b == 0);
    match (
        is_reply_fifo_name(&field[..end]) && padded,
        field.len() == NAME_LEN,
    ) {
        (false, _) => NameField::Bad,
        (true, true) => NameField::Good,
        (true, false) => NameField::Incomplete,
    }
}

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
            wait::poll(&[(self.reader.as_fd(), PollFlags::POLLIN)], deadline)
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
                trace::c_string(&record[..NAME_LEN], NAME_LEN),
                trace::c_string(&record[NAME_LEN..], 40)
            ),
            _ => trace::string(record, 40),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The C client's request, built by hand with the offsets of the C struct.
    fn c_request(name: &[u8], text: &[u8]) -> [u8; RECORD_LEN] {
        let mut bytes = [0u8; RECORD_LEN];
        bytes[0..name.len()].copy_from_slice(name);
        bytes[32..32 + text.len()].copy_from_slice(text);
        bytes
    }

    #[test]
    fn the_layout_is_the_c_structs() {
        assert_eq!((NAME_LEN, TEXT_LEN, RECORD_LEN), (32, 128, 160));
        let record = Record::new(".fifo42", "This is a request from 42.").unwrap();
        assert_eq!(
            record.encode(),
            c_request(b".fifo42", b"This is a request from 42.")
        );
        assert_eq!(Record::decode(&record.encode()), Ok(record));
    }

    #[test]
    fn garbage_after_a_fields_nul_is_ignored() {
        let mut bytes = c_request(b".fifo7", b"hello");
        bytes[10] = b'x';
        bytes[100] = b'y';
        let record = Record::decode(&bytes).unwrap();
        assert_eq!(record.reply_fifo(), Ok(".fifo7"));
        assert_eq!(record.text(), "hello");
    }

    #[test]
    fn bad_records_are_rejected() {
        assert_eq!(Record::decode(&[0; 159]), Err(BadRecord::WrongSize(159)));
        assert_eq!(
            Record::decode(&[b'a'; 160]),
            Err(BadRecord::NameNotTerminated)
        );
        let mut no_text_nul = [b'a'; 160];
        no_text_nul[5] = 0;
        assert_eq!(
            Record::decode(&no_text_nul),
            Err(BadRecord::TextNotTerminated)
        );
    }

    #[test]
    fn only_fifo_and_digits_is_a_reply_fifo_name() {
        for good in [".fifo1", ".fifo4194304", ".fifo00000000000000000001"] {
            assert!(is_reply_fifo_name(good.as_bytes()), "{good}");
        }
        for bad in [
            ".fifo",
            "fifo1",
            ".fifo1/",
            ".fifo/../1",
            "../.fifo1",
            "/tmp/.fifo1",
            ".fifo1a",
            ".fifo-1",
            " .fifo1",
            ".fifo000000000000000000001",
            "",
        ] {
            assert!(!is_reply_fifo_name(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn fields_that_do_not_fit_are_refused() {
        assert!(Record::new(&"n".repeat(31), &"t".repeat(127)).is_ok());
        assert!(Record::new(&"n".repeat(32), "t").is_err());
        assert!(Record::new("n", &"t".repeat(128)).is_err());
        assert!(Record::new("n", "a\0b").is_err());
    }

    /// A C client's request: `strcpy` and `sprintf` into a struct on its stack leave whatever
    /// was there after each field's NUL.
    fn c_request_with_stack_garbage(pid: u32) -> [u8; RECORD_LEN] {
        let mut bytes = [0xa5u8; RECORD_LEN];
        let name = format!(".fifo{pid}\0");
        let text = format!("This is a request from {pid}.\0");
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        bytes[NAME_LEN..NAME_LEN + text.len()].copy_from_slice(text.as_bytes());
        bytes
    }

    fn reply_fifos(found: &[Result<Request, BadRecord>]) -> Vec<Result<&str, &BadRecord>> {
        found
            .iter()
            .map(|item| item.as_ref().map(|request| request.reply_fifo.as_str()))
            .collect()
    }

    #[test]
    fn c_records_with_garbage_after_their_nuls_are_taken_in_step() {
        let mut received = c_request_with_stack_garbage(7).to_vec();
        received.extend(c_request_with_stack_garbage(8));
        let (found, used) = split_requests(&received, true);
        assert_eq!(reply_fifos(&found), [Ok(".fifo7"), Ok(".fifo8")]);
        assert_eq!(found[0].as_ref().unwrap().text, "This is a request from 7.");
        assert_eq!(used, 320);
    }

    #[test]
    fn a_whole_bad_record_is_skipped_with_its_reason_and_the_next_one_is_in_step() {
        let mut received = c_request(b"../.fifo1", b"hi").to_vec();
        let mut no_text_nul = c_request(b".fifo2", b"");
        no_text_nul[NAME_LEN..].fill(b'x');
        received.extend(no_text_nul);
        received.extend(c_request_with_stack_garbage(3));
        let (found, used) = split_requests(&received, true);
        let bad_name = BadRecord::BadName("../.fifo1".into());
        assert_eq!(
            reply_fifos(&found),
            [
                Err(&bad_name),
                Err(&BadRecord::TextNotTerminated),
                Ok(".fifo3")
            ]
        );
        assert_eq!(used, 480);
    }

    #[test]
    fn stray_bytes_are_skipped_up_to_the_next_record_and_reported_once() {
        let mut received = vec![b'x'; 1000];
        received.extend(c_request(b".fifo9", b"hi"));
        let (found, used) = split_requests(&received, true);
        assert_eq!(
            reply_fifos(&found),
            [Err(&BadRecord::Stray(1000)), Ok(".fifo9")]
        );
        assert_eq!(used, 1160);
    }

    #[test]
    fn the_start_of_a_record_waits_for_the_rest() {
        let record = c_request(b".fifo9", b"hi");
        for len in [0, 1, 5, 6, 7, 32, 159] {
            assert_eq!(
                split_requests(&record[..len], true),
                (vec![], 0),
                "{len} bytes"
            );
        }
        // What can no longer become a record is reported at once.
        let (found, used) = split_requests(b"hello.fi", true);
        assert_eq!((found, used), (vec![Err(BadRecord::Stray(5))], 5));
    }

    #[test]
    fn a_record_start_is_a_reply_fifo_name_padded_with_nuls() {
        use NameField::*;
        let field = |name: &[u8], padding| {
            let mut bytes = [0u8; NAME_LEN];
            bytes[..name.len()].copy_from_slice(name);
            name_field(&bytes, padding)
        };
        assert_eq!(field(b".fifo123", Padding::Nul), Good);
        assert_eq!(field(b".fifo123\0junk", Padding::Any), Good);
        assert_eq!(field(b".fifo123\0junk", Padding::Nul), Bad);
        for bad in [&b".fifo"[..], b".fifoabc", b"..fifo1", b".fifo1/", b"fifo1"] {
            assert_eq!(field(bad, Padding::Any), Bad, "{}", bad.escape_ascii());
        }
        assert_eq!(field(&[b'1'; 27], Padding::Any), Bad);
        assert_eq!(name_field(b".fifo12", Padding::Nul), Incomplete);
        assert_eq!(name_field(b".fi", Padding::Nul), Incomplete);
        assert_eq!(name_field(b".fx", Padding::Nul), Bad);
    }

    #[test]
    fn control_characters_in_a_text_are_escaped() {
        let record = Record::decode(&c_request(b".fifo1", b"bell\x07 esc\x1b[2J")).unwrap();
        assert_eq!(record.text(), r"bell\7 esc\33[2J");
    }
}
