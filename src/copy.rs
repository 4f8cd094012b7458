//! mycp3's copy policy: which files it copies, where the copy is made, and how it becomes DEST,
//! so that DEST is only ever the old file or the whole copy (labs.md, exercise 8, says why).
//!
//! The copy is made *without a name* (`O_TMPFILE`) in DEST's directory, so that no end of
//! mycp3, not even `kill -9`, leaves an unfinished copy behind; complete, it gets its name
//! ([`DestFile::commit`]). Where the file system cannot make a file without a name, it has the
//! hidden name `.NAME.mycp3-PID` from the start, unlinked on every end but `kill -9`.
//!
//! A `memcpy` gets SIGBUS instead of an error code for a page it cannot read or write:
//! [`DestFile::memcpy`] arms a handler that ends mycp3 as any other error does, with
//! async-signal-safe calls only: `write(2)` of a line made beforehand, `unlink(2)` of the
//! hidden name if the copy has one, `_exit(1)` (`mmap`, to repair the mapping, is not safe).

use std::ffi::{c_void, CStr, CString, OsStr};
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, AtomicPtr, Ordering::SeqCst};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno::{self, EINVAL, EISDIR, EOPNOTSUPP};
use nix::fcntl::OFlag;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use nix::sys::stat::{fstat, stat, FileStat, Mode, SFlag};
use nix::unistd::Whence;

use crate::rt::{out, signals};
use crate::sys::fd::{self as sys, other_kind};
use crate::sys::mman::{self, Mapping};

/// Parses a size such as `65536`, `64K`, `16M` or `1G` (powers of 1024) and rounds it up to whole
/// pages: a window of a copy (mapping offsets must be multiples of the page size).
pub fn parse_window(text: &str) -> Result<usize, String> {
    let text = text.trim().to_ascii_uppercase();
    let units = [("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)];
    let (digits, factor) = (units.iter())
        .find_map(|&(unit, factor)| Some((text.strip_suffix(unit)?, factor)))
        .unwrap_or((&text, 1));
    let bytes = (digits.parse::<usize>().ok())
        .and_then(|n| n.checked_mul(factor))
        .ok_or("expected a number of bytes, optionally with K, M or G")?;
    let page = mman::page_size();
    match bytes {
        0 => Err("must be more than 0 bytes".into()),
        // Two windows are mapped at a time: keep that below a few GiB.
        1..=0x4000_0000 => Ok(bytes.div_ceil(page) * page),
        _ => Err("must be at most 1G".into()),
    }
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// Fails unless `stat` is a regular file's: `NAME: is a directory; mycp3 copies regular files
/// only` (`does`: copies, writes).
fn check_regular(stat: &FileStat, name: &str, does: &str) -> anyhow::Result<()> {
    match other_kind(stat, SFlag::S_IFREG) {
        Some(kind) => bail!("{name}: is {kind}; mycp3 {does} regular files only"),
        None => Ok(()),
    }
}

/// Whether `file` is a pseudo-file whose content is made when it is read (`/proc`, `/sys` and
/// their kin, or empty by its size but not): `mmap` refuses it or maps nothing.
fn is_made_when_read(file: &File, stat: &FileStat) -> bool {
    use nix::sys::statfs::*;
    let pseudo = [
        PROC_SUPER_MAGIC,
        SYSFS_MAGIC,
        DEBUGFS_MAGIC,
        TRACEFS_MAGIC,
        CGROUP_SUPER_MAGIC,
        CGROUP2_SUPER_MAGIC,
    ];
    fstatfs(file).is_ok_and(|fs| pseudo.contains(&fs.filesystem_type()))
        || (stat.st_size == 0 && file.read_at(&mut [0u8], 0).is_ok_and(|n| n > 0))
}

/// The file to copy: a regular file, open for reading.
#[derive(Debug)]
pub struct SourceFile {
    /// `SOURCE 'x'`, as its errors name it.
    name: String,
    file: File,
    stat: FileStat,
}

impl SourceFile {
    /// Opens `path` for reading, if it is a regular file that `mmap` can copy: other kinds are
    /// refused before they are opened (a FIFO would block, a device can have effects).
    pub fn open(path: &Path) -> anyhow::Result<SourceFile> {
        let name = format!("SOURCE {}", quoted(path));
        check_regular(&stat(path).context(name.clone())?, &name, "copies")?;
        // O_NONBLOCK: should the path be swapped for a FIFO meanwhile, open does not block.
        let fd = sys::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty());
        let file = File::from(fd.context(name.clone())?);
        let stat = fstat(&file).context(name.clone())?;
        check_regular(&stat, &name, "copies")?;
        if is_made_when_read(&file, &stat) {
            bail!(
                "{name}: its content is made when it is read (a /proc or /sys file), and such a \
                 file cannot be mapped: copy it with cp"
            );
        }
        Ok(SourceFile { name, file, stat })
    }

    /// The descriptor, for [`mman::mmap`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Its size when it was opened: the size of the copy.
    pub fn size(&self) -> u64 {
        self.stat.st_size as u64
    }

    /// Its permission bits (rwx for user, group, others).
    pub fn permissions(&self) -> Mode {
        Mode::from_bits_truncate(self.stat.st_mode & 0o777)
    }

    /// The next range that holds data from `offset` (a multiple of the page size) on, by
    /// `lseek` with `SEEK_DATA` and `SEEK_HOLE`, in whole pages up to [`SourceFile::size`];
    /// `None` when only a hole is left. Without holes (`EINVAL`): the whole file. Fails if
    /// SOURCE has shrunk.
    pub fn data_from(&self, offset: u64) -> anyhow::Result<Option<Range<u64>>> {
        let (size, page) = (self.size(), mman::page_size() as u64);
        let seek = |at: u64, whence, no_holes: u64| match sys::lseek(self.fd(), at as i64, whence) {
            Ok(found) => Ok(Some(found as u64)),
            Err(Errno::ENXIO) => Ok(None), // `at` is at or past the end
            Err(Errno::EINVAL | Errno::EOPNOTSUPP) => Ok(Some(no_holes)),
            Err(e) => Err(e).context(self.name.clone()),
        };
        if offset >= size {
            return Ok(None);
        }
        let Some(data) = seek(offset, Whence::SeekData, offset)? else {
            // Nothing but a hole up to the end — unless the end moved.
            let (name, was) = (&self.name, self.stat.st_size);
            let now = fstat(&self.file).context(name.clone())?.st_size;
            let shrank = format!("{name}: shrank while being copied (from {was} to {now} bytes)");
            anyhow::ensure!(now >= was, shrank);
            return Ok(None);
        };
        let start = (data / page * page).max(offset);
        let hole = seek(data, Whence::SeekHole, size)?.unwrap_or(size);
        let end = (hole.div_ceil(page) * page).min(size);
        Ok((start < end).then_some(start..end))
    }
}

/// The copy being made, in DEST's directory: named by [`DestFile::commit`], removed if dropped
/// before.
#[derive(Debug)]
pub struct DestFile {
    /// See [`DestFile::untouched`].
    untouched: String,
    /// Where the copy goes: DEST, or the file a symbolic link DEST points to.
    target: PathBuf,
    /// Whether DEST existed (and is replaced) or is new.
    existed: bool,
    /// The hidden name beside DEST that the copy has before it is renamed to DEST.
    hidden: PathBuf,
    /// Whether the copy has the hidden name now (from the start, without `O_TMPFILE`).
    named: bool,
    file: File,
    /// The SIGBUS handler's error line for a fault in SOURCE's mapping and in the copy's.
    last_words: [Vec<u8>; 2],
}

impl DestFile {
    /// Creates the copy of `source` (mode 0600) beside `dest`, unless DEST is SOURCE (same device
    /// and inode), no regular file, a directory's name, not writable, or a symbolic link to
    /// nowhere, or its directory is missing or read-only: then nothing changes.
    pub fn create(dest: &Path, source: &SourceFile) -> anyhow::Result<DestFile> {
        let name = format!("DEST {}", quoted(dest));
        let existing = stat(dest);
        // Not ending with `/`, `/.`, `..` or nothing, which name a directory.
        let names_a_file = (dest.file_name())
            .is_some_and(|file| dest.as_os_str().as_bytes().ends_with(file.as_bytes()));
        let target = match existing {
            Ok(stat) if (stat.st_dev, stat.st_ino) == (source.stat.st_dev, source.stat.st_ino) => {
                let source = &source.name;
                bail!(
                    "{name}: is the same file as {source} (same device and inode); nothing changed"
                )
            }
            Ok(stat) => {
                check_regular(&stat, &name, "writes")?;
                nix::unistd::access(dest, nix::unistd::AccessFlags::W_OK).context(name.clone())?;
                // A symbolic link stays one: the copy replaces the file it points to.
                let link = std::fs::symlink_metadata(dest).is_ok_and(|m| m.is_symlink());
                let real = |e: std::io::Error| Errno::from_raw(e.raw_os_error().unwrap_or(0));
                match link {
                    true => std::fs::canonicalize(dest)
                        .map_err(real)
                        .context(name.clone())?,
                    false => dest.to_owned(),
                }
            }
            Err(Errno::ENOENT) if !names_a_file => {
                bail!("{name}: names a directory; give the name of the copy")
            }
            Err(Errno::ENOENT) if std::fs::symlink_metadata(dest).is_ok() => {
                bail!("{name}: is a symbolic link to nowhere; not writing through it")
            }
            Err(Errno::ENOENT) => dest.to_owned(),
            Err(e) => return Err(e).context(name),
        };
        let dir = target.parent().filter(|dir| !dir.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        // Hidden, named after DEST and this process; cut so that it stays a valid name.
        let file_name = target.file_name().map_or(&b"copy"[..], OsStr::as_bytes);
        let pid = format!(".mycp3-{}", std::process::id());
        let hidden = [b".", &file_name[..file_name.len().min(200)], pid.as_bytes()].concat();
        let hidden = dir.join(OsStr::from_bytes(&hidden));
        let mode = Mode::from_bits_truncate(0o600);
        // linkat names an O_TMPFILE file through /proc/self/fd.
        let unnamed = match Path::new("/proc/self/fd").is_dir() {
            true => sys::open(dir, OFlag::O_TMPFILE | OFlag::O_RDWR, mode),
            false => Err(Errno::EOPNOTSUPP),
        };
        // The file system (or kernel) cannot make a file without a name: give it the hidden one.
        let named = matches!(unnamed, Err(EOPNOTSUPP | EISDIR | EINVAL));
        let new = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
        let fd = match named {
            true => sys::open(&hidden, new, mode),
            false => unnamed,
        };
        let fd = fd.map_err(|errno| match (errno, quoted(dir)) {
            (Errno::ENOENT, dir) => anyhow!("{name}: directory {dir} does not exist"),
            (Errno::ENOTDIR, dir) => anyhow!("{name}: {dir} is not a directory"),
            (_, dir) => anyhow!("{name}: cannot create the copy in directory {dir}: {errno}"),
        })?;
        let existed = existing.is_ok();
        let left = ["not created", "left as it was"][existed as usize];
        let untouched = format!("{name} {left}");
        let line = |what: &str| format!("{}: {untouched}: {what}\n", out::program()).into_bytes();
        let shrank = format!("{}: shrank while being copied (SIGBUS)", source.name);
        let last_words = [line(&shrank), line(mman::CANNOT_WRITE)];
        install_bus_handler();
        let file = File::from(fd);
        Ok(DestFile {
            untouched,
            target,
            existed,
            hidden,
            named,
            file,
            last_words,
        })
    }

    /// The descriptor of the new file, for [`mman::posix_fallocate`] and [`mman::mmap`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// What a copy that stops now leaves of DEST, for its error message: `DEST 'x' left as it
    /// was` or `DEST 'x' not created`.
    pub fn untouched(&self) -> String {
        self.untouched.clone()
    }

    /// `memcpy(to, from, len)` ([`Mapping::copy_from`]) from a window of SOURCE into the same
    /// window of the copy, with the SIGBUS handler armed for the two mappings.
    pub fn memcpy(&self, to: &mut Mapping, from: &Mapping) -> anyhow::Result<()> {
        let range = |m: &Mapping| m.addr() as usize..m.addr() as usize + m.len();
        let hidden = CString::new(self.hidden.as_os_str().as_bytes()).ok();
        let unlink = hidden.as_deref().filter(|_| self.named);
        let armed = Armed([range(from), range(to)], &self.last_words, unlink);
        ARMED.store(std::ptr::from_ref(&armed).cast_mut().cast(), SeqCst);
        // Dropped before `armed`, even by a panic. The handler runs on this thread: the fences
        // keep the copy between arming and disarming.
        let _disarm = Disarm;
        compiler_fence(SeqCst);
        to.copy_from(from)
    }

    /// Gives the complete copy `permissions` and its name: `linkat` to DEST if there was none;
    /// else `linkat` to the hidden name and at once, with no `--step` pause (a `kill -9` there
    /// would leave the hidden name), `rename` over DEST.
    pub fn commit(mut self, permissions: Mode) -> anyhow::Result<()> {
        signals::check()?; // a signal during the last window: stop before DEST changes
        let failed = |call: &str| format!("{}: {call}", self.untouched);
        sys::fchmod(self.fd(), permissions).with_context(|| failed("fchmod"))?;
        let linked_as_dest = !self.named
            && !self.existed
            && match sys::link_unnamed(self.fd(), &self.target) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false, // DEST appeared meanwhile: replace it
                Err(e) => return Err(e).with_context(|| failed("linkat")),
            };
        if !linked_as_dest {
            if !self.named {
                sys::link_unnamed(self.fd(), &self.hidden).with_context(|| failed("linkat"))?;
                self.named = true;
            }
            sys::rename_at_once(&self.hidden, &self.target).with_context(|| failed("rename"))?;
        }
        self.named = false; // its name is DEST's now
        Ok(())
    }
}

impl Drop for DestFile {
    fn drop(&mut self) {
        if self.named {
            let _ = sys::unlink(&self.hidden);
        } // one without a name goes when it is closed
    }
}

/// While [`DestFile::memcpy`] runs: `[start, end)` of SOURCE's mapping and of the copy's, the
/// error line for a fault in each, and the hidden name to unlink.
struct Armed<'a>([Range<usize>; 2], &'a [Vec<u8>; 2], Option<&'a CStr>);

/// The [`Armed`] on the stack of the `memcpy` running now; null otherwise.
static ARMED: AtomicPtr<Armed<'static>> = AtomicPtr::new(std::ptr::null_mut());

struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        compiler_fence(SeqCst);
        ARMED.store(std::ptr::null_mut(), SeqCst);
    }
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to a handler installed with SA_SIGINFO. A
    // non-null ARMED points to the Armed of the memcpy this signal interrupts (it runs on this
    // thread, and ARMED is null again before that Armed goes).
    let (code, addr, armed) = unsafe {
        let armed = ARMED.load(SeqCst).as_ref();
        ((*info).si_code, (*info).si_addr() as usize, armed)
    };
    // si_code > 0: raised by the kernel for a memory access, not sent with kill.
    if let Some(Armed(ranges, said, unlink)) = armed.filter(|_| code > 0) {
        let side = ranges.iter().position(|range| range.contains(&addr));
        if let Some(said) = side.map(|i| &said[i]) {
            // SAFETY: write, unlink and _exit are async-signal-safe (POSIX); the bytes and the
            // path are those of the Armed above. _exit does not return to the faulting memcpy.
            unsafe {
                libc::write(libc::STDERR_FILENO, said.as_ptr().cast(), said.len());
                if let Some(hidden) = unlink {
                    libc::unlink(hidden.as_ptr());
                }
                libc::_exit(1);
            }
        }
    }
    // Not ours: SA_RESETHAND has put SIGBUS's default action back, which ends the process.
    // SAFETY: raise(3) is async-signal-safe.
    unsafe { libc::raise(signal) };
}

fn install_bus_handler() {
    let handler = SigHandler::SigAction(on_sigbus);
    let action = SigAction::new(handler, SaFlags::SA_RESETHAND, SigSet::empty());
    // SAFETY: the handler only reads what ARMED points to while it is valid, and makes
    // async-signal-safe calls; it stays valid for the life of the process. If installing
    // fails, SIGBUS keeps its default action: a fault still ends the process, without a word.
    let _ = unsafe { sigaction(Signal::SIGBUS, &action) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_whole_pages() {
        let page = mman::page_size();
        assert_eq!(parse_window("1"), Ok(page));
        assert_eq!(parse_window("16M"), Ok(16 << 20));
        assert_eq!(parse_window("64k"), Ok(64 << 10));
        assert_eq!(parse_window(&(page + 1).to_string()), Ok(2 * page));
        for bad in [
            "0",
            "",
            "M",
            "-1",
            "1.5M",
            "12X",
            "99999999999999999999",
            "2000G",
        ] {
            assert!(parse_window(bad).is_err(), "{bad}");
        }
    }
}
