//! Memory-mapped files: `mmap`, `munmap` and what `mycp3` and `mipc` build on them.
//!
//! | C (the slides)                              | here                                        |
//! |---------------------------------------------|---------------------------------------------|
//! | `open(path, flags, mode)`                   | [`crate::sys::open`]                        |
//! | `mmap(NULL, len, prot, flags, fd, offset)`  | [`mmap`] → a [`Mapping`]                    |
//! | `munmap(addr, len)`                         | dropping the [`Mapping`], or [`munmap`]     |
//! | `memcpy(dst, src, len)` between two mappings| [`Mapping::copy_from`]                      |
//! | `madvise(addr, len, MADV_POPULATE_WRITE)`   | [`madvise_populate_write`]                  |
//! | `ftruncate(fd, len)`, `posix_fallocate(fd, 0, len)` | [`ftruncate`], [`posix_fallocate`]  |
//! | `PROT_READ`, `PROT_WRITE`, `MAP_SHARED`, `MAP_PRIVATE` | the constants of the same names  |
//!
//! Each of these calls goes through [`crate::trace::call`], so `--trace` shows it in C notation
//! with its real values (`mmap(NULL, 8, PROT_READ|PROT_WRITE, MAP_SHARED, 3, 0) = 0x7f…`) and
//! `--step` stops before it; so do the `fchmod` and `linkat` of [`DestFile`] and the `open`,
//! `rename`, `unlink` and `close` of [`crate::sys`] that mycp3 and mipc use.
//!
//! A [`Mapping`] gives no Rust reference into its memory: the file behind a shared mapping can be
//! changed or truncated by another process at any moment, which no `&[u8]` may see. The only ways
//! in are the two things the exercises do: [`Mapping::copy_from`] (mycp3's `memcpy`) and
//! [`SharedLong`] (mipc's counter, an atomic).
//!
//! **SIGBUS.** Touching a page of a file mapping that lies past the end of the file — because the
//! file shrank after `mmap`, or because a page of the destination could not be allocated — is not
//! an error code but the signal SIGBUS, which kills the process. [`Mapping::copy_from`] catches
//! it for the two mappings it copies between: the faulting rest of the mapping is replaced by
//! zero pages, the copy runs to its end, and it returns a [`BusError`] instead of dying.
//! ([`madvise_populate_write`] learns of such a page before the copy, as `EFAULT`.)
//!
//! The second half of the module is `mycp3`'s: [`SourceFile`] (the file to copy, checked to be a
//! regular file) and [`DestFile`] (the copy, written beside DEST and renamed over it only when
//! complete, so that a failed or interrupted copy never leaves DEST half-written).

use std::ffi::c_void;
use std::fmt;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{compiler_fence, AtomicIsize, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, bail, Context};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, SFlag};

pub use nix::sys::mman::{MapFlags, ProtFlags};

use crate::signals;
use crate::{sys, trace};

/// Pages may be read.
pub const PROT_READ: ProtFlags = ProtFlags::PROT_READ;
/// Pages may be written.
pub const PROT_WRITE: ProtFlags = ProtFlags::PROT_WRITE;
/// Changes are shared: they reach the file, and every process that maps it sees them.
pub const MAP_SHARED: MapFlags = MapFlags::MAP_SHARED;
/// Changes are private: copy-on-write, each process (after `fork`, too) gets its own copy of a
/// page at its first write (mipc's question in labs.md is to try it).
pub const MAP_PRIVATE: MapFlags = MapFlags::MAP_PRIVATE;
/// Fault all pages in during `mmap` (one system call instead of one page fault per page).
pub const MAP_POPULATE: MapFlags = MapFlags::MAP_POPULATE;

// ---- the traced calls -----------------------------------------------------------------------

/// `mmap(NULL, length, prot, flags, fd, offset)`: maps `length` bytes of the file open as `fd`,
/// from `offset` (a multiple of the page size), wherever the kernel chooses. The mapping is
/// removed when the returned [`Mapping`] is dropped.
///
/// `MAP_FIXED` is refused (`EINVAL`): it would replace whatever is mapped at an address.
pub fn mmap(
    length: usize,
    prot: ProtFlags,
    flags: MapFlags,
    fd: BorrowedFd<'_>,
    offset: i64,
) -> nix::Result<Mapping> {
    trace::call(
        || {
            format!(
                "mmap(NULL, {length}, {}, {}, {}, {offset})",
                prot_names(prot),
                map_names(flags),
                fd.as_raw_fd()
            )
        },
        || {
            if flags.intersects(MapFlags::MAP_FIXED | MapFlags::MAP_FIXED_NOREPLACE) {
                return Err(Errno::EINVAL);
            }
            let length = std::num::NonZeroUsize::new(length).ok_or(Errno::EINVAL)?;
            // SAFETY: without MAP_FIXED the kernel picks an address where nothing is mapped, so
            // no memory of this program changes; the new mapping is owned by the `Mapping`
            // returned, which gives out no reference into it (see the module docs).
            let addr = unsafe { nix::sys::mman::mmap(None, length, prot, flags, fd, offset) }?;
            Ok(Mapping {
                addr,
                len: length.get(),
                prot,
            })
        },
        |mapping| format!("{:p}", mapping.addr()),
    )
}

/// `munmap(addr, len)`: removes `mapping`, reporting a failure (dropping it does the same
/// silently).
pub fn munmap(mapping: Mapping) -> nix::Result<()> {
    let mapping = std::mem::ManuallyDrop::new(mapping);
    mapping.unmap() // not dropped, so unmapped once
}

/// `ftruncate(fd, length)`: sets the file's size. Growing a file this way allocates no disk
/// blocks: they are allocated when a page is first written through a mapping, and if the disk is
/// full then, the writer gets SIGBUS. See [`posix_fallocate`].
pub fn ftruncate(fd: BorrowedFd<'_>, length: i64) -> nix::Result<()> {
    trace::call(
        || format!("ftruncate({}, {length})", fd.as_raw_fd()),
        || nix::unistd::ftruncate(fd, length),
        |()| "0".into(),
    )
}

/// `posix_fallocate(fd, offset, length)`: allocates the disk blocks of the range now (and grows
/// the file to cover it), so that a full disk is the error `ENOSPC` here instead of a SIGBUS in
/// the middle of the copy.
pub fn posix_fallocate(fd: BorrowedFd<'_>, offset: i64, length: i64) -> nix::Result<()> {
    trace::call(
        || format!("posix_fallocate({}, {offset}, {length})", fd.as_raw_fd()),
        || nix::fcntl::posix_fallocate(fd, offset, length),
        |()| "0".into(),
    )
}

/// `madvise(addr, len, MADV_POPULATE_WRITE)` (Linux 5.14): faults in every page of a writable
/// `mapping` at once, ready to be written — instead of two page faults per page during the
/// `memcpy` (one to read it in, one to make it writable). Without it the copy only takes longer,
/// so a kernel that does not know it (`EINVAL`) is no error. `EFAULT` means a page could not be
/// made (no space left, or the file is shorter than the mapping): the [`BusError`] the `memcpy`
/// would get.
pub fn madvise_populate_write(mapping: &Mapping) -> anyhow::Result<()> {
    let advice = nix::sys::mman::MmapAdvise::MADV_POPULATE_WRITE;
    let advised = trace::call(
        || {
            format!(
                "madvise({:p}, {}, MADV_POPULATE_WRITE)",
                mapping.addr(),
                mapping.len
            )
        },
        // SAFETY: the range is the whole mapping `mapping` owns; populating changes no content.
        || unsafe { nix::sys::mman::madvise(mapping.addr, mapping.len, advice) },
        |()| "0".into(),
    );
    match advised {
        Ok(()) | Err(Errno::EINVAL) => Ok(()),
        Err(Errno::EFAULT) => Err(BusError(Side::Destination).into()),
        Err(e) => Err(e).context("madvise(MADV_POPULATE_WRITE)"),
    }
}

/// `fchmod(fd, mode)`.
fn fchmod(fd: BorrowedFd<'_>, mode: Mode) -> nix::Result<()> {
    trace::call(
        || format!("fchmod({}, 0{:o})", fd.as_raw_fd(), mode.bits()),
        || nix::sys::stat::fchmod(fd, mode),
        |()| "0".into(),
    )
}

fn prot_names(prot: ProtFlags) -> String {
    let names = [
        (ProtFlags::PROT_READ, "PROT_READ"),
        (ProtFlags::PROT_WRITE, "PROT_WRITE"),
        (ProtFlags::PROT_EXEC, "PROT_EXEC"),
    ]
    .map(|(flag, name)| (i64::from(flag.bits()), name));
    trace::flags(i64::from(prot.bits()), &names, "PROT_NONE")
}

fn map_names(flags: MapFlags) -> String {
    let names = [
        (MapFlags::MAP_SHARED, "MAP_SHARED"),
        (MapFlags::MAP_PRIVATE, "MAP_PRIVATE"),
        (MapFlags::MAP_ANONYMOUS, "MAP_ANONYMOUS"),
        (MapFlags::MAP_POPULATE, "MAP_POPULATE"),
        (MapFlags::MAP_NORESERVE, "MAP_NORESERVE"),
    ]
    .map(|(flag, name)| (i64::from(flag.bits()), name));
    trace::flags(i64::from(flags.bits()), &names, "0")
}

/// The size of a page (the unit of mappings: an offset must be a multiple of it).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        size if size > 0 => size as usize,
        _ => 4096,
    }
}

/// Parses a size such as `65536`, `64K`, `16M` or `1G` (powers of 1024) and rounds it up to whole
/// pages: a window of a copy (mapping offsets must be multiples of the page size).
pub fn parse_window(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((at, c)) if c.is_ascii_alphabetic() => (&text[..at], c.to_ascii_uppercase()),
        _ => (text, ' '),
    };
    let factor: usize = match unit {
        ' ' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        _ => return Err("expected a number of bytes, optionally with K, M or G".into()),
    };
    let page = page_size();
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
    {
        Some(0) => Err("must be more than 0 bytes".into()),
        // Two windows are mapped at a time: keep that below a few GiB.
        Some(bytes) if bytes <= 1 << 30 => Ok(bytes.div_ceil(page) * page),
        Some(_) => Err("must be at most 1G".into()),
        None => Err("expected a number of bytes, optionally with K, M or G".into()),
    }
}

// ---- the mapping ----------------------------------------------------------------------------

/// One mapping made by [`mmap`]; `munmap` when dropped.
#[derive(Debug)]
pub struct Mapping {
    addr: NonNull<c_void>,
    len: usize,
    prot: ProtFlags,
}

impl Mapping {
    /// Where the mapping starts in this process's address space (`/proc/PID/maps` shows it).
    pub fn addr(&self) -> *const c_void {
        self.addr.as_ptr()
    }

    /// Its length in bytes, as given to [`mmap`].
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: `mmap` refuses a length of 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `memcpy(self, source, len)`: copies all of `source` into this mapping, which must be
    /// writable and as long.
    ///
    /// A SIGBUS while copying (a file shorter than its mapping: see the module docs) does not
    /// kill the process: the copy ends with a [`BusError`] saying which side was short. What was
    /// written into this mapping is then not to be trusted.
    pub fn copy_from(&mut self, source: &Mapping) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.prot.contains(PROT_WRITE) && source.prot.contains(PROT_READ),
            "memcpy: the destination mapping must be writable and the source readable"
        );
        anyhow::ensure!(
            self.len == source.len,
            "memcpy: mappings of {} and {} bytes",
            self.len,
            source.len
        );
        let (to, from, len) = (self.addr.as_ptr(), source.addr.as_ptr(), self.len);
        let fault = trace::call(
            || format!("memcpy({to:p}, {from:p}, {len})"),
            || {
                Ok(bus_guard::guarded(
                    [(from as usize, len), (to as usize, len)],
                    // SAFETY: both ranges are whole mappings owned by `self` and `source`,
                    // readable and writable as checked above, and distinct (two mappings never
                    // overlap; `&mut self` and `&source` are two objects). A page that is not
                    // backed by its file any more raises SIGBUS, which the guard turns into
                    // zero pages, so every access completes.
                    || unsafe { std::ptr::copy_nonoverlapping(from.cast::<u8>(), to.cast(), len) },
                ))
            },
            |fault| match fault {
                Some(side) => format!("{to:p} [{}]", BusError(*side)),
                None => format!("{to:p}"),
            },
        )?;
        match fault {
            Some(side) => Err(BusError(side).into()),
            None => Ok(()),
        }
    }

    /// `munmap`, made even after a termination signal (see [`trace::cleanup_call`]).
    fn unmap(&self) -> nix::Result<()> {
        trace::cleanup_call(
            || format!("munmap({:p}, {})", self.addr(), self.len),
            // SAFETY: the range is exactly the mapping this object owns; nothing refers into it
            // (no references are handed out), and it is unmapped only once (by drop, or by
            // `munmap`, which skips the drop).
            || unsafe { nix::sys::mman::munmap(self.addr, self.len) },
            |()| "0".into(),
        )
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let _ = self.unmap(); // cannot fail for a mapping we made
    }
}

/// Which side of a copy a SIGBUS hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The mapping read from.
    Source,
    /// The mapping written to.
    Destination,
}

/// A copy between mappings hit SIGBUS: the file behind one of them is shorter than its
/// mapping (it was truncated while mapped, or — for the destination — a page could not be
/// allocated, e.g. on a full disk).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusError(pub Side);

impl fmt::Display for BusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Side::Source => f.write_str(
                "SIGBUS reading the source mapping: the file shrank while it was being copied",
            ),
            Side::Destination => f.write_str(
                "the destination mapping cannot be written (SIGBUS): no space was left for a \
                 page, or its file was truncated",
            ),
        }
    }
}

impl std::error::Error for BusError {}

/// Turns a SIGBUS inside the two ranges of one copy into zero pages and a note of which range it
/// was, instead of the end of the process.
mod bus_guard {
    use super::*;

    /// The guarded ranges while a copy runs, `[start, end)` each; all 0 otherwise.
    static RANGES: [AtomicUsize; 4] = [const { AtomicUsize::new(0) }; 4];
    /// Which range faulted during the current copy: 0 none, 1 the first, 2 the second.
    static FAULT: AtomicU8 = AtomicU8::new(0);
    static PAGE_SIZE: AtomicUsize = AtomicUsize::new(4096);
    /// One guarded copy at a time (the ranges are global, as the signal handler is).
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    static INSTALLED: OnceLock<()> = OnceLock::new();

    extern "C" fn on_sigbus(signal: libc::c_int, info: *mut libc::siginfo_t, _: *mut c_void) {
        let saved = Errno::last_raw();
        // SAFETY: the kernel passes a valid siginfo_t to a handler installed with SA_SIGINFO.
        let (code, addr) = unsafe { ((*info).si_code, (*info).si_addr() as usize) };
        let page = PAGE_SIZE.load(Ordering::Relaxed);
        for (which, range) in RANGES.chunks(2).enumerate() {
            let (start, end) = (
                range[0].load(Ordering::SeqCst),
                range[1].load(Ordering::SeqCst),
            );
            // si_code > 0: raised by the kernel for a memory access, not sent with kill.
            if code > 0 && start <= addr && addr < end {
                let from = addr & !(page - 1);
                // SAFETY: [from, end) lies inside a mapping that the interrupted copy owns and
                // that nothing else refers to; MAP_FIXED replaces just that part of it by
                // private zero pages, so the faulting access can complete. mmap is a plain
                // system call, safe to make in a handler.
                let fixed = unsafe {
                    libc::mmap(
                        from as *mut c_void,
                        end - from,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                        -1,
                        0,
                    )
                };
                if fixed != libc::MAP_FAILED {
                    FAULT.store(which as u8 + 1, Ordering::SeqCst);
                    Errno::set_raw(saved);
                    return;
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

    fn install() {
        INSTALLED.get_or_init(|| {
            PAGE_SIZE.store(page_size(), Ordering::Relaxed);
            // SAFETY: an all-zero sigaction is a valid starting point (empty mask, no flags).
            let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
            action.sa_sigaction = on_sigbus as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO;
            // SAFETY: the handler only reads atomics and makes async-signal-safe calls, and it
            // stays valid for the life of the process. If installing fails, SIGBUS keeps its
            // default action: the copy still works, a fault still ends the process.
            unsafe { libc::sigaction(libc::SIGBUS, &action, std::ptr::null_mut()) };
        });
    }

    /// Runs `copy`, which touches only the two `(start, length)` ranges, with SIGBUS in them
    /// turned into zero pages; returns which range faulted first, if any.
    pub(super) fn guarded(ranges: [(usize, usize); 2], copy: impl FnOnce()) -> Option<Side> {
        install();
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
        FAULT.store(0, Ordering::SeqCst);
        for (i, (start, len)) in ranges.into_iter().enumerate() {
            RANGES[2 * i].store(start, Ordering::SeqCst);
            RANGES[2 * i + 1].store(start + len, Ordering::SeqCst);
        }
        // The handler runs on this thread: keep the copy between arming and disarming.
        compiler_fence(Ordering::SeqCst);
        copy();
        compiler_fence(Ordering::SeqCst);
        for range in &RANGES {
            range.store(0, Ordering::SeqCst);
        }
        match FAULT.swap(0, Ordering::SeqCst) {
            0 => None,
            1 => Some(Side::Source),
            _ => Some(Side::Destination),
        }
    }
}

// ---- mipc's counter -------------------------------------------------------------------------

/// A C `long` at the start of a shared, writable mapping — mipc's counter, which parent and
/// child both see after `fork` because the mapping is `MAP_SHARED`.
///
/// It is an atomic: the two processes take turns (the synclib orders them), but another process
/// may write the memory too (`/proc/PID/mem`), and an atomic makes every access well defined.
#[derive(Debug)]
pub struct SharedLong {
    mapping: Mapping,
}

// `long` is as wide as a pointer on every Linux target, so it is an `AtomicIsize`.
const _: () = assert!(std::mem::size_of::<libc::c_long>() == std::mem::size_of::<isize>());

impl SharedLong {
    /// The `long` at the start of `mapping`, which must be readable, writable and long enough.
    pub fn new(mapping: Mapping) -> anyhow::Result<SharedLong> {
        anyhow::ensure!(
            mapping.prot.contains(PROT_READ | PROT_WRITE)
                && mapping.len >= std::mem::size_of::<libc::c_long>(),
            "a counter needs a readable and writable mapping of at least {} bytes",
            std::mem::size_of::<libc::c_long>()
        );
        Ok(SharedLong { mapping })
    }

    fn atomic(&self) -> &AtomicIsize {
        // SAFETY: the mapping is page-aligned, readable, writable and at least one `long` long
        // (checked in `new`), and lives as long as `self`; all accesses are atomic.
        unsafe { AtomicIsize::from_ptr(self.mapping.addr.as_ptr().cast()) }
    }

    /// The value now.
    pub fn get(&self) -> i64 {
        self.atomic().load(Ordering::SeqCst) as i64
    }

    /// `(*ptr)++` of the C version's `update()`: adds one and returns the value before.
    pub fn update(&self) -> i64 {
        self.atomic().fetch_add(1, Ordering::SeqCst) as i64
    }

    /// The mapping the counter lives in.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }
}

// ---- mycp3's two files ----------------------------------------------------------------------

/// What kind of file a `st_mode` says, in words.
fn kind(stat: &FileStat) -> &'static str {
    match SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFREG => "a regular file",
        SFlag::S_IFDIR => "a directory",
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFLNK => "a symbolic link",
        _ => "of an unknown kind",
    }
}

/// Fails unless the file open as `fd` at `path` is a character device, as `/dev/zero` is: a
/// regular file put in its place maps as a file (an empty one: SIGBUS on the first access).
pub fn check_char_device(fd: BorrowedFd<'_>, path: &Path) -> anyhow::Result<()> {
    let stat = nix::sys::stat::fstat(fd).with_context(|| format!("fstat({})", quoted(path)))?;
    if stat.st_mode & SFlag::S_IFMT.bits() != SFlag::S_IFCHR.bits() {
        bail!(
            "{}: is {}, not a character device: mapping it would not give zero-filled memory \
             (an empty file raises SIGBUS)",
            path.display(),
            kind(&stat)
        );
    }
    Ok(())
}

fn is_regular(stat: &FileStat) -> bool {
    stat.st_mode & SFlag::S_IFMT.bits() == SFlag::S_IFREG.bits()
}

fn quoted(path: &Path) -> String {
    format!("'{}'", path.display())
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

/// The file to copy: a regular file, open for reading.
#[derive(Debug)]
pub struct SourceFile {
    path: PathBuf,
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
        let name = || format!("SOURCE {}", quoted(path));
        let stat = nix::sys::stat::stat(path).with_context(name)?;
        if !is_regular(&stat) {
            bail!(
                "{}: is {}; mycp3 copies regular files only",
                name(),
                kind(&stat)
            );
        }
        // O_NONBLOCK: should the path be swapped for a FIFO meanwhile, open does not block.
        let fd = sys::open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())
            .with_context(|| format!("open({})", quoted(path)))?;
        let file = File::from(fd);
        let stat = nix::sys::stat::fstat(&file).with_context(|| format!("fstat({})", name()))?;
        if !is_regular(&stat) {
            bail!(
                "{}: is {}; mycp3 copies regular files only",
                name(),
                kind(&stat)
            );
        }
        if is_made_when_read(&file, &stat) {
            bail!(
                "{}: its content is made when it is read (a /proc or /sys file), and such a \
                 file cannot be mapped: copy it with cp",
                name()
            );
        }
        Ok(SourceFile {
            path: path.to_owned(),
            file,
            stat,
        })
    }

    /// The descriptor, for [`mmap`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// Its size when it was opened.
    pub fn size(&self) -> u64 {
        self.stat.st_size as u64
    }

    /// Its permission bits (rwx for user, group, others).
    pub fn permissions(&self) -> Mode {
        Mode::from_bits_truncate(self.stat.st_mode & 0o777)
    }

    /// Fails if the file is now shorter than `needed` bytes: mapping it there would raise
    /// SIGBUS.
    pub fn check_size(&self, needed: u64) -> anyhow::Result<()> {
        let now = nix::sys::stat::fstat(&self.file)
            .with_context(|| format!("fstat(SOURCE {})", quoted(&self.path)))?;
        if (now.st_size as u64) < needed {
            bail!(
                "SOURCE {}: shrank while being copied (from {} to {} bytes); nothing changed",
                self.path.display(),
                self.size(),
                now.st_size
            );
        }
        Ok(())
    }
}

/// The copy being made: a new file in DEST's directory that gets its name only by
/// [`DestFile::commit`], once complete, and is removed if it is dropped before (an error, or a
/// termination signal on its way up). So DEST is either untouched or the whole copy.
///
/// The file is made without a name (`O_TMPFILE`), so that even a copy killed with `kill -9`
/// leaves nothing behind; at the end `linkat` gives it a hidden name beside DEST, and `rename`
/// puts it in DEST's place at once. Where the file system cannot make a file without a name,
/// it has the hidden name from the start (`.NAME.mycp3-PID`), and a `kill -9` leaves it.
#[derive(Debug)]
pub struct DestFile {
    /// DEST as the user gave it.
    given: PathBuf,
    /// Where the copy goes: DEST, or the file a symbolic link DEST points to.
    target: PathBuf,
    /// Whether DEST existed (and is replaced) or is new.
    existed: bool,
    /// The hidden name beside DEST that the copy has before it is renamed to DEST.
    hidden: PathBuf,
    /// Whether the copy has the hidden name now (from the start, without `O_TMPFILE`).
    named: bool,
    file: File,
    committed: bool,
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
        let name = || format!("DEST {}", quoted(dest));
        let existing = nix::sys::stat::stat(dest);
        let target = match existing {
            Ok(stat) => {
                if (stat.st_dev, stat.st_ino) == (source.stat.st_dev, source.stat.st_ino) {
                    bail!(
                        "{}: is the same file as SOURCE {} (same device and inode); nothing \
                         changed",
                        name(),
                        quoted(&source.path)
                    );
                }
                if !is_regular(&stat) {
                    bail!(
                        "{}: is {}; mycp3 writes regular files only",
                        name(),
                        kind(&stat)
                    );
                }
                nix::unistd::access(dest, nix::unistd::AccessFlags::W_OK).with_context(name)?;
                match std::fs::symlink_metadata(dest) {
                    // A symbolic link stays one: the copy replaces the file it points to.
                    Ok(link) if link.file_type().is_symlink() => {
                        std::fs::canonicalize(dest).with_context(name)?
                    }
                    _ => dest.to_owned(),
                }
            }
            Err(Errno::ENOENT) if !ends_with_a_name(dest) => {
                bail!("{}: names a directory; give the name of the copy", name())
            }
            Err(Errno::ENOENT) if nix::sys::stat::lstat(dest).is_ok() => {
                bail!(
                    "{}: is a symbolic link to nowhere; not writing through it",
                    name()
                )
            }
            Err(Errno::ENOENT) => dest.to_owned(),
            Err(e) => return Err(e).with_context(name),
        };
        let dir = match target.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        let file_name = target
            .file_name()
            .map(OsStrExt::as_bytes)
            .unwrap_or(b"copy");
        // Hidden, named after DEST and this process; cut so that it stays a valid name.
        let mut hidden_name = b".".to_vec();
        hidden_name.extend_from_slice(&file_name[..file_name.len().min(200)]);
        hidden_name.extend_from_slice(format!(".mycp3-{}", std::process::id()).as_bytes());
        let hidden = dir.join(std::ffi::OsStr::from_bytes(&hidden_name));
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
        let fd = fd.map_err(|errno| match errno {
            Errno::ENOENT => anyhow!("{}: directory {} does not exist", name(), quoted(dir)),
            Errno::ENOTDIR => anyhow!("{}: {} is not a directory", name(), quoted(dir)),
            _ => anyhow!(errno).context(format!(
                "{}: cannot create the copy in directory {}",
                name(),
                quoted(dir)
            )),
        })?;
        Ok(DestFile {
            given: dest.to_owned(),
            target,
            existed: existing.is_ok(),
            hidden,
            named,
            file: File::from(fd),
            committed: false,
        })
    }

    /// The descriptor of the new file, for [`posix_fallocate`] and [`mmap`].
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// What a copy that stops now leaves of DEST, for its error message: `DEST 'x' left as it
    /// was` or `DEST 'x' not created`.
    pub fn untouched(&self) -> String {
        let what = match self.existed {
            true => "left as it was",
            false => "not created",
        };
        format!("DEST {} {what}", quoted(&self.given))
    }

    /// Gives the copy its permission bits, and its name: DEST (`linkat` to the hidden name,
    /// if it has none yet, then `rename` over DEST).
    pub fn commit(mut self, permissions: Mode) -> anyhow::Result<()> {
        signals::check()?; // a signal during the last window: stop before DEST changes
        let untouched = self.untouched();
        let failed = |call: &str| format!("{untouched}: {call}");
        fchmod(self.fd(), permissions).with_context(|| failed("fchmod"))?;
        if !self.named {
            link_unnamed(self.fd(), &self.hidden).with_context(|| failed("linkat"))?;
            self.named = true;
        }
        sys::rename(&self.hidden, &self.target).with_context(|| failed("rename"))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for DestFile {
    fn drop(&mut self) {
        if self.named && !self.committed {
            let _ = sys::unlink(&self.hidden);
        } // one without a name goes when it is closed
    }
}

/// `linkat(AT_FDCWD, "/proc/self/fd/N", AT_FDCWD, path, AT_SYMLINK_FOLLOW)`: gives the file
/// without a name open as `fd` (`O_TMPFILE`) the name `path`.
fn link_unnamed(fd: BorrowedFd<'_>, path: &Path) -> nix::Result<()> {
    let open_file = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    trace::call(
        || {
            format!(
                "linkat(AT_FDCWD, {}, AT_FDCWD, {}, AT_SYMLINK_FOLLOW)",
                trace::string(open_file.as_os_str().as_bytes(), 80),
                trace::string(path.as_os_str().as_bytes(), 80)
            )
        },
        || {
            let (here, follow) = (nix::fcntl::AT_FDCWD, AtFlags::AT_SYMLINK_FOLLOW);
            nix::unistd::linkat(here, &open_file, here, path, follow)
        },
        |()| "0".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_of(len: usize, byte: u8) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(&vec![byte; len]).unwrap();
        file
    }

    fn map(file: &File, len: usize, prot: ProtFlags) -> Mapping {
        mmap(len, prot, MAP_SHARED, file.as_fd(), 0).unwrap()
    }

    #[test]
    fn a_copy_between_mappings_reaches_the_file() {
        let (from, to) = (file_of(10_000, b'x'), file_of(10_000, 0));
        let source = map(from.as_file(), 10_000, PROT_READ);
        let mut dest = map(to.as_file(), 10_000, PROT_READ | PROT_WRITE);
        dest.copy_from(&source).unwrap();
        drop(dest);
        assert_eq!(std::fs::read(to.path()).unwrap(), vec![b'x'; 10_000]);
    }

    #[test]
    fn a_source_that_shrinks_while_mapped_is_a_bus_error_not_a_crash() {
        let (from, to) = (file_of(5 * 4096, b'x'), file_of(5 * 4096, 0));
        let source = map(from.as_file(), 5 * 4096, PROT_READ);
        let mut dest = map(to.as_file(), 5 * 4096, PROT_READ | PROT_WRITE);
        from.as_file().set_len(4096).unwrap();
        let error = dest.copy_from(&source).unwrap_err();
        assert_eq!(
            error.downcast_ref::<BusError>(),
            Some(&BusError(Side::Source))
        );
        // The guard is disarmed again, and a second copy that fits works.
        let (small_from, small_to) = (file_of(4096, b'y'), file_of(4096, 0));
        let mut small_dest = map(small_to.as_file(), 4096, PROT_READ | PROT_WRITE);
        small_dest
            .copy_from(&map(small_from.as_file(), 4096, PROT_READ))
            .unwrap();
    }

    #[test]
    fn a_destination_truncated_while_mapped_is_a_bus_error() {
        let (from, to) = (file_of(3 * 4096, b'x'), file_of(3 * 4096, 0));
        let source = map(from.as_file(), 3 * 4096, PROT_READ);
        let mut dest = map(to.as_file(), 3 * 4096, PROT_READ | PROT_WRITE);
        to.as_file().set_len(0).unwrap();
        let error = dest.copy_from(&source).unwrap_err();
        assert_eq!(
            error.downcast_ref::<BusError>(),
            Some(&BusError(Side::Destination))
        );
    }

    #[test]
    fn copies_need_equal_lengths_and_the_right_protections() {
        let file = file_of(8192, 1);
        let read_only = map(file.as_file(), 4096, PROT_READ);
        let mut also_read_only = map(file.as_file(), 4096, PROT_READ);
        assert!(also_read_only.copy_from(&read_only).is_err());
        let mut writable = map(file.as_file(), 8192, PROT_READ | PROT_WRITE);
        assert!(writable.copy_from(&read_only).is_err());
    }

    #[test]
    fn mmap_refuses_a_zero_length_and_map_fixed() {
        let file = file_of(4096, 1);
        let fd = file.as_file().as_fd();
        assert_eq!(
            mmap(0, PROT_READ, MAP_SHARED, fd, 0).unwrap_err(),
            Errno::EINVAL
        );
        let fixed = MAP_SHARED | MapFlags::MAP_FIXED;
        assert_eq!(
            mmap(4096, PROT_READ, fixed, fd, 0).unwrap_err(),
            Errno::EINVAL
        );
    }

    #[test]
    fn a_shared_long_counts_in_the_file() {
        let file = file_of(4096, 0);
        let counter = SharedLong::new(map(file.as_file(), 8, PROT_READ | PROT_WRITE)).unwrap();
        assert_eq!(counter.update(), 0);
        assert_eq!(counter.update(), 1);
        assert_eq!(counter.get(), 2);
        assert!(SharedLong::new(map(file.as_file(), 8, PROT_READ)).is_err());
    }

    #[test]
    fn windows_are_whole_pages() {
        let page = page_size();
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

    #[test]
    fn flags_read_as_in_c() {
        assert_eq!(prot_names(PROT_READ | PROT_WRITE), "PROT_READ|PROT_WRITE");
        assert_eq!(
            map_names(MAP_SHARED | MAP_POPULATE),
            "MAP_SHARED|MAP_POPULATE"
        );
    }
}
