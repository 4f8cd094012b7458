//! mycp3's copy policy: which files it copies, where the copy is made, and how the copy becomes
//! DEST — so that DEST is only ever the old file or the whole copy.
//!
//! - [`SourceFile`]: SOURCE, checked to be a regular file that `mmap` can copy, and where its
//!   data lies ([`SourceFile::data_from`]: `lseek` with `SEEK_DATA`/`SEEK_HOLE`), so that the
//!   holes of a sparse file are neither read nor written.
//! - [`DestFile`]: the copy, made *without a name* (`O_TMPFILE`) in DEST's directory, so that
//!   no end of mycp3, not even `kill -9`, leaves an unfinished copy behind. Complete, it gets
//!   its name ([`DestFile::commit`]): `linkat` straight to DEST when there is none, else `linkat`
//!   to a hidden name beside DEST and at once `rename` over DEST. Where the file system cannot
//!   make a file without a name, the copy has the hidden name `.NAME.mycp3-PID` from the start,
//!   and is unlinked on every end but `kill -9`.
//!
//! **SIGBUS.** A `memcpy` that reads a page of SOURCE past its end (SOURCE shrank after `mmap`)
//! or writes a page of the copy that cannot be allocated (a full disk, without
//! `posix_fallocate`) gets no error code but the signal SIGBUS. [`DestFile::memcpy`] copies with
//! a handler armed for exactly its two mappings, which ends mycp3 the way any other error does,
//! with async-signal-safe calls only (POSIX): `write(2)` of the error line made before the copy,
//! `unlink(2)` of the copy's hidden name if it has one, `_exit(1)`. A copy without a name goes
//! with the process. The handler neither returns to the `memcpy` (it would fault again) nor
//! repairs the mapping (`mmap` is not async-signal-safe).

use std::ffi::{c_void, CStr, CString, OsStr};
use std::fs::File;
use std::ops::Range;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{compiler_fence, AtomicPtr, Ordering};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{FileStat, Mode, SFlag};
use nix::unistd::Whence;

use crate::rt::{out, signals};
use crate::sys::fd as sys;
use crate::sys::mman::{self, kind, Mapping};

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
    if stat.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFREG.bits() {
        bail!("{name}: is {}; mycp3 {does} regular files only", kind(stat));
    }
    Ok(())
}

/// Whether `file` is a pseudo-file whose content the kernel makes when it is read: on `/proc`,
/// `/sys` and their kin, or saying it is empty while it is not. Its size says nothing about its
/// content, and `mmap` refuses it (`ENODEV`) or maps nothing.
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

/// Whether `path` ends with the name of a file: not with `/`, `/.`, `..` or nothing — the
/// name of a directory, where no copy can be renamed to.
fn ends_with_a_name(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|name| path.as_os_str().as_bytes().ends_with(name.as_bytes()))
}

// ---- SOURCE ---------------------------------------------------------------------------------

/// The file to copy: a regular file, open for reading.
#[derive(Debug)]
pub struct SourceFile {
    /// `SOURCE 'x'`, as its errors name it.
    name: String,
    file: File,
    stat: FileStat,
}

impl SourceFile {
    /// Opens `path` for reading and checks that it is a regular file that `mmap` can copy.
    ///
    /// A directory, FIFO, device or socket is refused before it is opened (opening a FIFO
    /// would wait for a writer; opening a device can have effects). So is a file that says it
    /// is empty but is not (`/proc/...`: its content is made when it is read, and cannot be
    /// mapped).
    pub fn open(path: &Path) -> anyhow::Result<SourceFile> {
        let name = format!("SOURCE {}", quoted(path));
        let stat = nix::sys::stat::stat(path).context(name.clone())?;
        check_regular(&stat, &name, "copies")?;
        // O_NONBLOCK: should the path be swapped for a FIFO meanwhile, open does not block.
        let fd = sys::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty());
        let file = File::from(fd.context(name.clone())?);
        let stat = nix::sys::stat::fstat(&file).context(name.clone())?;
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

    /// The next range that holds data, from `offset` (a multiple of the page size) on:
    /// `lseek(fd, offset, SEEK_DATA)` and `lseek(fd, start, SEEK_HOLE)`, widened to whole pages
    /// (mapping offsets are multiples of a page) and cut at [`SourceFile::size`]. `None` when
    /// only a hole is left. A file system that cannot tell where the holes are (`EINVAL`) has
    /// one data range, the whole file. Fails if SOURCE turns out to have shrunk.
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
            let now = nix::sys::stat::fstat(&self.file).context(self.name.clone())?;
            if now.st_size < self.stat.st_size {
                let (was, name) = (self.stat.st_size, &self.name);
                bail!(
                    "{name}: shrank while being copied (from {was} to {} bytes)",
                    now.st_size
                );
            }
            return Ok(None);
        };
        let start = (data / page * page).max(offset);
        let hole = seek(data, Whence::SeekHole, size)?.unwrap_or(size);
        let end = (hole.div_ceil(page) * page).min(size);
        Ok((start < end).then_some(start..end))
    }
}

// ---- DEST -----------------------------------------------------------------------------------

/// The copy being made: a new file in DEST's directory that gets its name only by
/// [`DestFile::commit`], once complete, and is removed if it is dropped before (an error, or a
/// termination signal on its way up). See the module docs.
#[derive(Debug)]
pub struct DestFile {
    /// `DEST 'x' left as it was` or `DEST 'x' not created`: see [`DestFile::untouched`].
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
    /// What the SIGBUS handler writes for a fault in SOURCE's mapping and in the copy's, and
    /// the hidden name it unlinks: made beforehand, as a handler may neither format nor allocate.
    last_words: [Vec<u8>; 2],
    hidden_c: Option<CString>,
}

impl DestFile {
    /// Checks that `dest` may receive a copy of `source` and creates the new file beside it
    /// (mode 0600, until [`DestFile::commit`]).
    ///
    /// Refused, with nothing changed: DEST is SOURCE (also through a hard link, a symbolic link,
    /// or another path: same device and inode); DEST is a directory or not a regular file; DEST
    /// exists but may not be written; DEST is a symbolic link to nowhere; DEST's directory does
    /// not exist or may not be written.
    pub fn create(dest: &Path, source: &SourceFile) -> anyhow::Result<DestFile> {
        let name = format!("DEST {}", quoted(dest));
        let existing = nix::sys::stat::stat(dest);
        let target = match existing {
            Ok(stat) => {
                if (stat.st_dev, stat.st_ino) == (source.stat.st_dev, source.stat.st_ino) {
                    let source = &source.name;
                    bail!(
                        "{name}: is the same file as {source} (same device and inode); nothing \
                         changed"
                    );
                }
                check_regular(&stat, &name, "writes")?;
                nix::unistd::access(dest, nix::unistd::AccessFlags::W_OK).context(name.clone())?;
                match nix::sys::stat::lstat(dest) {
                    // A symbolic link stays one: the copy replaces the file it points to.
                    Ok(link) if link.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFLNK.bits() => {
                        std::fs::canonicalize(dest)
                            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
                            .context(name.clone())?
                    }
                    _ => dest.to_owned(),
                }
            }
            Err(Errno::ENOENT) if !ends_with_a_name(dest) => {
                bail!("{name}: names a directory; give the name of the copy")
            }
            Err(Errno::ENOENT) if nix::sys::stat::lstat(dest).is_ok() => {
                bail!("{name}: is a symbolic link to nowhere; not writing through it")
            }
            Err(Errno::ENOENT) => dest.to_owned(),
            Err(e) => return Err(e).context(name),
        };
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file_name = target.file_name().map_or(&b"copy"[..], OsStr::as_bytes);
        // Hidden, named after DEST and this process; cut so that it stays a valid name.
        let mut hidden_name = b".".to_vec();
        hidden_name.extend_from_slice(&file_name[..file_name.len().min(200)]);
        hidden_name.extend_from_slice(format!(".mycp3-{}", std::process::id()).as_bytes());
        let hidden = dir.join(OsStr::from_bytes(&hidden_name));
        let mode = Mode::from_bits_truncate(0o600);
        // linkat names an O_TMPFILE file through /proc/self/fd.
        let unnamed = match Path::new("/proc/self/fd").is_dir() {
            true => sys::open(dir, OFlag::O_TMPFILE | OFlag::O_RDWR, mode),
            false => Err(Errno::EOPNOTSUPP),
        };
        let (fd, named) = match unnamed {
            Ok(fd) => (Ok(fd), false),
            // The file system (or kernel) cannot make a file without a name.
            Err(Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL) => {
                let flags = OFlag::O_RDWR | OFlag::O_CREAT | OFlag::O_EXCL;
                (sys::open(&hidden, flags, mode), true)
            }
            Err(e) => (Err(e), true),
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
        install_bus_handler();
        Ok(DestFile {
            last_words: [line(&shrank), line(mman::CANNOT_WRITE)],
            hidden_c: CString::new(hidden.as_os_str().as_bytes())
                .ok()
                .filter(|_| named),
            untouched,
            target,
            existed,
            hidden,
            named,
            file: File::from(fd),
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
    /// window of this copy, with the SIGBUS handler of the module docs armed for the two
    /// mappings: a fault in them ends mycp3 (status 1) with the error line, and nothing left.
    pub fn memcpy(&self, to: &mut Mapping, from: &Mapping) -> anyhow::Result<()> {
        let range = |m: &Mapping| m.addr() as usize..m.addr() as usize + m.len();
        let armed = Armed {
            ranges: [range(from), range(to)],
            said: &self.last_words,
            unlink: self.hidden_c.as_deref(),
        };
        let armed_here = std::ptr::from_ref(&armed).cast_mut().cast();
        ARMED.store(armed_here, Ordering::SeqCst);
        // Dropped before `armed`, even by a panic. The handler runs on this thread: the fences
        // keep the copy between arming and disarming.
        let _disarm = Disarm;
        compiler_fence(Ordering::SeqCst);
        to.copy_from(from)
    }

    /// Gives the complete copy its permission bits, and its name: `linkat` straight to DEST if
    /// there was none; else (or if one appeared meanwhile) `linkat` to the hidden name and,
    /// with no pause between (not even under `--step`: a `kill -9` there would leave the
    /// hidden name), `rename` over DEST.
    pub fn commit(mut self, permissions: Mode) -> anyhow::Result<()> {
        signals::check()?; // a signal during the last window: stop before DEST changes
        let failed = |call: &str| format!("{}: {call}", self.untouched);
        sys::fchmod(self.fd(), permissions).with_context(|| failed("fchmod"))?;
        let linked_as_dest = !self.named
            && !self.existed
            && match sys::link_unnamed(self.fd(), &self.target) {
                Ok(()) => true,
                // DEST appeared meanwhile: replace it as if it had been there
                Err(Errno::EEXIST) => false,
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

// ---- the SIGBUS handler ---------------------------------------------------------------------

/// While [`DestFile::memcpy`] runs: `[start, end)` of SOURCE's mapping and of the copy's, the
/// error line for a fault in each, and what to unlink.
struct Armed<'a> {
    ranges: [Range<usize>; 2],
    said: &'a [Vec<u8>; 2],
    unlink: Option<&'a CStr>,
}

/// The [`Armed`] on the stack of the `memcpy` running now; null otherwise.
static ARMED: AtomicPtr<Armed<'static>> = AtomicPtr::new(std::ptr::null_mut());

struct Disarm;

impl Drop for Disarm {
    fn drop(&mut self) {
        compiler_fence(Ordering::SeqCst);
        ARMED.store(std::ptr::null_mut(), Ordering::SeqCst);
    }
}

extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
    // SAFETY: the kernel passes a valid siginfo_t to a handler installed with SA_SIGINFO.
    let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
    // SAFETY: a non-null ARMED points to the Armed of the memcpy that this signal interrupts
    // (it runs on this thread, and ARMED is null again before that Armed goes).
    let armed = unsafe { ARMED.load(Ordering::SeqCst).as_ref() };
    // si_code > 0: raised by the kernel for a memory access, not sent with kill.
    if let Some(armed) = armed.filter(|_| code > 0) {
        let side = armed.ranges.iter().position(|range| range.contains(&addr));
        if let Some(said) = side.map(|i| &armed.said[i]) {
            // SAFETY: write, unlink and _exit are async-signal-safe (POSIX); the bytes and the
            // path are those of the Armed above. _exit does not return to the faulting memcpy.
            unsafe {
                libc::write(libc::STDERR_FILENO, said.as_ptr().cast(), said.len());
                if let Some(hidden) = armed.unlink {
                    libc::unlink(hidden.as_ptr());
                }
                libc::_exit(1);
            }
        }
    }
    // Not ours: what SIGBUS does without a handler, end the process.
    // SAFETY: signal(2) with SIG_DFL and raise(3) are async-signal-safe.
    unsafe {
        libc::signal(signal, libc::SIG_DFL);
        libc::raise(signal);
    }
}

fn install_bus_handler() {
    // SAFETY: an all-zero sigaction is a valid starting point (empty mask, no flags).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_sigbus as *const () as usize;
    action.sa_flags = libc::SA_SIGINFO;
    // SAFETY: the handler only reads what ARMED points to while it is valid, and makes
    // async-signal-safe calls; it stays valid for the life of the process. If installing
    // fails, SIGBUS keeps its default action: a fault still ends the process, without a word.
    unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
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
