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
//! clients writing into `.fifo` at once never interleave.
//!
//! The owners here remove their FIFO when dropped — on success, on error and, with
//! [`crate::signals::catch_termination`], on SIGINT/SIGTERM: [`ServerFifo`] removes `.fifo`,
//! [`ClientFifo`] removes `.fifo<PID>`. Nothing a client sends can make the server open a path other
//! than a FIFO named `.fifo<digits>` in its own directory (never its own `.fifo`), or wait for a
//! client.

use std::fmt;
use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::errno::Errno;
use nix::fcntl::{open, renameat2, OFlag, RenameFlags, AT_FDCWD};
use nix::poll::PollFlags;
use nix::sys::stat::{fstat, lstat, FileStat, Mode, SFlag};
use nix::unistd::{mkfifo, Pid};

use crate::wait::{self, Deadline};

/// The server's FIFO, in the directory both sides use (`--dir`).
pub const SERVER_FIFO: &str = ".fifo";
/// Size of the name field: the reply FIFO's name, NUL-terminated.
pub const NAME_LEN: usize = 32;
/// Size of the text field: the message, NUL-terminated.
pub const TEXT_LEN: usize = 128;
/// Size of a whole record, request or reply.
pub const RECORD_LEN: usize = NAME_LEN + TEXT_LEN;

/// The name of the reply FIFO of the client with process ID `pid`: `.fifo<PID>`.
pub fn reply_fifo_name(pid: Pid) -> String {
    format!("{SERVER_FIFO}{pid}")
}

/// Whether `name` has the only form a reply FIFO may have: `.fifo` and 1 to 20 digits
/// (so no `/`, no `..`, nothing outside the server's directory, and never `.fifo` itself).
pub fn is_reply_fifo_name(name: &[u8]) -> bool {
    name.strip_prefix(SERVER_FIFO.as_bytes())
        .is_some_and(|digits| {
            (1..=20).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
        })
}

/// One 160-byte request or reply, decoded: its two fields without their NUL padding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    name: Vec<u8>,
    text: Vec<u8>,
}

/// Why bytes received are not a record (the server reports it and skips the record).
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
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecord::WrongSize(n) => write!(f, "record of {n} bytes, not {RECORD_LEN}"),
            BadRecord::NameNotTerminated => write!(f, "name field without NUL"),
            BadRecord::TextNotTerminated => write!(f, "text field without NUL"),
            BadRecord::BadName(name) => write!(f, "reply FIFO {name:?} is not .fifo<digits>"),
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

    /// The text, printable: invalid UTF-8 replaced, control characters escaped (a peer's bytes
    /// must not drive the terminal).
    pub fn text(&self) -> String {
        let mut printable = String::new();
        for c in String::from_utf8_lossy(&self.text).chars() {
            match c.is_control() {
                true => printable.extend(c.escape_default()),
                false => printable.push(c),
            }
        }
        printable
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

// ---- the server's side ----------------------------------------------------------------------

/// The server's `.fifo`, open for reading; removed when dropped.
///
/// The server also holds a write end of its own FIFO: then `read` never returns end-of-file when
/// the last client closes, and the server simply waits for the next one.
#[derive(Debug)]
pub struct ServerFifo {
    dir: PathBuf,
    path: PathBuf,
    reader: OwnedFd,
    _keep_open: OwnedFd,
}

impl ServerFifo {
    /// `mkfifo(".fifo", 0600)` in `dir` (an existing FIFO is reused) and opens it.
    ///
    /// A new FIFO is made under a temporary name, opened, and only then renamed to `.fifo`, so
    /// that whenever `.fifo` appears a server already reads it. Fails if another server is
    /// reading `.fifo`, or if `.fifo` is something else than a FIFO.
    pub fn create(dir: &Path) -> anyhow::Result<ServerFifo> {
        let path = dir.join(SERVER_FIFO);
        match lstat(&path) {
            Ok(stat) if !is_fifo(&stat) => {
                anyhow::bail!(
                    "{} exists and is not a FIFO; remove it first",
                    path.display()
                )
            }
            Ok(_) => {
                if let Ok(_writer) = open_nonblocking(&path, OFlag::O_WRONLY) {
                    anyhow::bail!(
                        "another fifos is already serving {} (stop it first)",
                        path.display()
                    );
                }
                let (reader, keep_open) = open_both_ends(&path)?;
                Ok(ServerFifo {
                    dir: dir.to_owned(),
                    path,
                    reader,
                    _keep_open: keep_open,
                })
            }
            Err(Errno::ENOENT) => {
                let fresh = dir.join(format!("{SERVER_FIFO}-new{}", std::process::id()));
                make_fifo(&fresh)?;
                let opened = open_both_ends(&fresh).and_then(|(reader, keep_open)| {
                    publish(&fresh, &path)?;
                    Ok(ServerFifo {
                        dir: dir.to_owned(),
                        path,
                        reader,
                        _keep_open: keep_open,
                    })
                });
                if opened.is_err() {
                    let _ = fs::remove_file(&fresh);
                }
                opened
            }
            Err(e) => Err(e).with_context(|| format!("lstat({})", path.display())),
        }
    }

    /// Waits for the next request and reads one record's worth of bytes (fewer if a client
    /// wrote fewer; such a record is bad and [`Record::decode`] says so).
    pub fn receive(&self, deadline: Deadline) -> anyhow::Result<Vec<u8>> {
        let mut bytes = vec![0u8; RECORD_LEN];
        loop {
            wait::poll(&[(self.reader.as_fd(), PollFlags::POLLIN)], deadline)
                .with_context(|| format!("waiting for a request ({})", self.path.display()))?;
            match nix::unistd::read(&self.reader, &mut bytes) {
                Ok(n) => {
                    bytes.truncate(n);
                    return Ok(bytes);
                }
                Err(Errno::EAGAIN | Errno::EINTR) => continue,
                Err(e) => return Err(e).with_context(|| format!("read({})", self.path.display())),
            }
        }
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
        remove_if_ours(&self.path, &self.reader);
    }
}

// ---- the client's side ----------------------------------------------------------------------

/// The client's reply FIFO `.fifo<PID>`, open for reading; removed when dropped.
#[derive(Debug)]
pub struct ClientFifo {
    name: String,
    path: PathBuf,
    reader: OwnedFd,
}

impl ClientFifo {
    /// `mkfifo(".fifo<PID>", 0600)` in `dir` and opens it for reading at once (without
    /// blocking), so the server can open it for writing as soon as the request arrives.
    pub fn create(dir: &Path, pid: Pid) -> anyhow::Result<ClientFifo> {
        let name = reply_fifo_name(pid);
        let path = dir.join(&name);
        // A FIFO with our PID in its name is a leftover of a dead process: ours to replace.
        match lstat(&path) {
            Ok(stat) if is_fifo(&stat) => fs::remove_file(&path)
                .with_context(|| format!("removing stale {}", path.display()))?,
            _ => {}
        }
        make_fifo(&path)?;
        match open_nonblocking(&path, OFlag::O_RDONLY) {
            Ok(reader) => Ok(ClientFifo { name, path, reader }),
            Err(e) => {
                let _ = fs::remove_file(&path);
                Err(e).with_context(|| format!("open({})", path.display()))
            }
        }
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
        while bytes.len() < RECORD_LEN {
            // POLLERR on our write end of `.fifo`: its last reader, the server, has gone.
            let watched = [
                (self.reader.as_fd(), PollFlags::POLLIN),
                (server.writer.as_fd(), PollFlags::empty()),
            ];
            let ready = wait::poll(&watched, deadline).with_context(context)?;
            if ready[0].is_empty() {
                anyhow::bail!(
                    "{}: the server went away before replying",
                    self.path.display()
                );
            }
            match nix::unistd::read(&self.reader, &mut chunk[..RECORD_LEN - bytes.len()]) {
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
        remove_if_ours(&self.path, &self.reader);
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

    /// Sends `request` in one atomic write, waiting (until `deadline`) if `.fifo` is full.
    pub fn send(&self, request: &Record, deadline: Deadline) -> anyhow::Result<()> {
        let context = || format!("write({})", self.path.display());
        loop {
            wait::poll(&[(self.writer.as_fd(), PollFlags::POLLOUT)], deadline)
                .with_context(context)?;
            match write_record(&self.writer, request) {
                Err(e) if e.downcast_ref() == Some(&Errno::EAGAIN) => continue,
                other => return other.with_context(context),
            }
        }
    }
}

// ---- shared mechanics -----------------------------------------------------------------------

fn make_fifo(path: &Path) -> anyhow::Result<()> {
    mkfifo(path, Mode::S_IRUSR | Mode::S_IWUSR)
        .with_context(|| format!("mkfifo({}, 0600)", path.display()))
}

fn open_nonblocking(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    open(
        path,
        flags | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Renames the server's new FIFO to `.fifo`, unless a `.fifo` appeared meanwhile (a server that
/// started at the same moment): `RENAME_NOREPLACE` makes that an error instead of silently
/// taking the other server's name.
fn publish(fresh: &Path, path: &Path) -> anyhow::Result<()> {
    match renameat2(
        AT_FDCWD,
        fresh,
        AT_FDCWD,
        path,
        RenameFlags::RENAME_NOREPLACE,
    ) {
        Ok(()) => Ok(()),
        Err(Errno::EEXIST) => anyhow::bail!(
            "another fifos made {} at the same time (stop it first)",
            path.display()
        ),
        Err(e) => {
            Err(e).with_context(|| format!("rename({} to {})", fresh.display(), path.display()))
        }
    }
}

/// The server's read end, then its own write end (possible once a reader exists).
fn open_both_ends(path: &Path) -> anyhow::Result<(OwnedFd, OwnedFd)> {
    let context = || format!("open({})", path.display());
    let reader = open_nonblocking(path, OFlag::O_RDONLY).with_context(context)?;
    let writer = open_nonblocking(path, OFlag::O_WRONLY).with_context(context)?;
    Ok((reader, writer))
}

/// One `write` of the whole record; a partial write (impossible for a pipe below `PIPE_BUF`,
/// unless the peer is not a pipe) is an error rather than a torn record.
fn write_record(fd: &OwnedFd, record: &Record) -> anyhow::Result<()> {
    let bytes = record.encode();
    let written = nix::unistd::write(fd, &bytes)?;
    anyhow::ensure!(
        written == RECORD_LEN,
        "only {written} of {RECORD_LEN} bytes written"
    );
    Ok(())
}

fn is_fifo(stat: &FileStat) -> bool {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFIFO
}

fn same_file(a: &FileStat, b: &FileStat) -> bool {
    (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
}

/// Removes `path` if it is still the FIFO `fd` refers to (not one a successor made since).
fn remove_if_ours(path: &Path, fd: &OwnedFd) {
    if let (Ok(open), Ok(named)) = (fstat(fd), lstat(path)) {
        if same_file(&open, &named) {
            let _ = fs::remove_file(path);
        }
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

    #[test]
    fn control_characters_in_a_text_are_escaped() {
        let record = Record::decode(&c_request(b".fifo1", b"bell\x07 esc\x1b[2J")).unwrap();
        assert_eq!(record.text(), "bell\\u{7} esc\\u{1b}[2J");
    }
}
