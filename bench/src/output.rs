//! The files ipcbench writes (`--svg FILE`): checked before the measuring starts, so that a
//! FILE that cannot be written fails at once rather than after minutes of measuring; written
//! whole or not at all, every write error reported.
//!
//! A regular FILE (or a new one) is written into a temporary file beside it, flushed to the
//! disk (`fsync`: a full disk or a quota may show only there) and then renamed over FILE: FILE
//! is its old self or the whole new chart, never a part of one. Anything else that is there
//! already (`/dev/stdout`, `/dev/full`, a FIFO) is opened at once and written in place: only
//! the write can tell whether a device takes the bytes; a pipe whose reader has gone ends the
//! program quietly, as stdout's does.

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use anyhow::Context;
use ipclab::rt::exit::Exit;
use ipclab::sys::fd as sys;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::AccessFlags;

/// A file to be written at the end of the run (see the module docs).
#[derive(Debug)]
pub struct OutputFile {
    path: PathBuf,
    target: Target,
}

#[derive(Debug)]
enum Target {
    /// A regular file (`file`: where a symbolic link leads), or none yet: replaced by a
    /// temporary file made beside it, which gets `mode` (an existing file's own).
    Replace { file: PathBuf, mode: Option<Mode> },
    /// Something else that exists (a device, a FIFO): written in place, opened before.
    InPlace(OwnedFd),
}

impl OutputFile {
    /// Checks that `path` can be written: a file of the same directory can be made there
    /// (made and removed at once), an existing `path` is writable and no directory. A device
    /// or a FIFO is opened now.
    pub fn check(path: &Path) -> anyhow::Result<OutputFile> {
        let checked = OutputFile::target(path).map(|target| OutputFile {
            path: path.to_owned(),
            target,
        });
        checked.with_context(|| format!("--svg {}", path.display()))
    }

    fn target(path: &Path) -> anyhow::Result<Target> {
        if path.as_os_str().as_encoded_bytes().ends_with(b"/") {
            return Err(Errno::EISDIR.into()); // a directory, or nothing
        }
        let existing = match nix::sys::stat::stat(path) {
            Ok(stat) => Some(stat),
            Err(Errno::ENOENT) => None,
            Err(errno) => return Err(errno.into()),
        };
        let replace = |file: PathBuf, mode| -> anyhow::Result<Target> {
            let (_, probe) = create_beside(&file)?;
            sys::unlink(&probe)?;
            Ok(Target::Replace { file, mode })
        };
        let kind = |stat: &FileStat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
        match existing {
            Some(stat) if kind(&stat) == SFlag::S_IFDIR => Err(Errno::EISDIR.into()),
            Some(stat) if kind(&stat) != SFlag::S_IFREG => {
                let fd = sys::open(path, OFlag::O_WRONLY, Mode::empty())?;
                Ok(Target::InPlace(fd))
            }
            Some(stat) => {
                nix::unistd::access(path, AccessFlags::W_OK)?;
                let file = std::fs::canonicalize(path)
                    .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
                replace(file, Some(Mode::from_bits_truncate(stat.st_mode)))
            }
            None => replace(path.to_owned(), None),
        }
    }

    /// Writes `bytes` as the file's whole content (see the module docs). On an error nothing
    /// is left: the temporary file is removed and FILE is as it was.
    pub fn write(self, bytes: &[u8]) -> anyhow::Result<()> {
        let written = match self.target {
            Target::InPlace(fd) => match sys::write_all(&fd, bytes) {
                // a pipe whose reader has gone (`--svg /dev/stdout | head`): as for stdout, a
                // quiet end
                Err(Errno::EPIPE) => return Err(Exit::quiet(0, Errno::EPIPE).into()),
                written => written.context("write"),
            },
            Target::Replace { file, mode } => replace(&file, mode, bytes),
        };
        written.with_context(|| format!("--svg {}", self.path.display()))
    }
}

/// Writes `bytes` into a new file beside `file`, flushed to the disk, with `mode`, then
/// renames it over `file`; removes it on an error.
fn replace(file: &Path, mode: Option<Mode>, bytes: &[u8]) -> anyhow::Result<()> {
    let (fd, temporary) = create_beside(file)?;
    let made = Temporary {
        path: temporary,
        renamed: false,
    };
    sys::write_all(&fd, bytes).context("write")?;
    nix::unistd::fsync(&fd).context("fsync")?;
    if let Some(mode) = mode {
        nix::sys::stat::fchmod(&fd, mode).context("fchmod")?;
    }
    made.rename_to(file)
}

/// Makes a new file beside `path`, in its directory, named `.NAME.ipcbench-PID`; returns it
/// open for writing, and its path.
fn create_beside(path: &Path) -> anyhow::Result<(OwnedFd, PathBuf)> {
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let made = || -> anyhow::Result<(OwnedFd, PathBuf)> {
        let mut hidden = OsString::from(".");
        hidden.push(path.file_name().ok_or(Errno::EISDIR)?); // "..": a directory
        hidden.push(format!(".ipcbench-{}", std::process::id()));
        let temporary = directory.join(hidden);
        let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = sys::open(&temporary, flags, Mode::from_bits_truncate(0o666))?;
        Ok((fd, temporary))
    };
    made().with_context(|| format!("cannot create a file in {}", directory.display()))
}

/// A temporary file, removed when dropped unless it was renamed.
struct Temporary {
    path: PathBuf,
    renamed: bool,
}

impl Temporary {
    /// `rename(temporary, path)`.
    fn rename_to(mut self, path: &Path) -> anyhow::Result<()> {
        sys::rename(&self.path, path).context("rename")?;
        self.renamed = true;
        Ok(())
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if !self.renamed {
            if let Err(errno) = sys::unlink(&self.path) {
                ipclab::rt::out::warn(format_args!("unlink({}): {errno}", self.path.display()));
            }
        }
    }
}
