//! Memory-mapped files: `mmap`, `munmap` and what `mycp3` and `mipc` build on them.
//!
//! | C (the slides)                              | here                                        |
//! |---------------------------------------------|---------------------------------------------|
//! | `open(path, flags, mode)`                   | [`crate::sys::open`]                        |
//! | `mmap(NULL, len, prot, flags, fd, offset)`  | [`mmap`] → a [`Mapping`]                    |
//! | `munmap(addr, len)`                         | dropping the [`Mapping`]                    |
//! | `memcpy(dst, src, len)` between two mappings| [`Mapping::copy_from`]                      |
//! | `madvise(addr, len, MADV_POPULATE_WRITE)`   | [`madvise_populate_write`]                  |
//! | `ftruncate(fd, len)`, `posix_fallocate(fd, 0, len)` | [`ftruncate`], [`posix_fallocate`]  |
//! | `PROT_READ`, `PROT_WRITE`, `MAP_SHARED`, `MAP_PRIVATE` | the constants of the same names  |
//!
//! Each of these calls goes through [`crate::trace::call`], so `--trace` shows it in C notation
//! with its real values (`mmap(NULL, 8, PROT_READ|PROT_WRITE, MAP_SHARED, 3, 0) = 0x7f…`) and
//! `--step` stops before it.
//!
//! A [`Mapping`] gives no Rust reference into its memory: the file behind a shared mapping can be
//! changed or truncated by another process at any moment, which no `&[u8]` may see. The only ways
//! in are the two things the exercises do: [`Mapping::copy_from`] (mycp3's `memcpy`) and
//! [`SharedLong`] (mipc's counter, an atomic).
//!
//! **SIGBUS.** Touching a page of a file mapping that lies past the end of the file — because the
//! file shrank after `mmap`, or because a page could not be allocated (a full disk) — is not an
//! error code but the signal SIGBUS, whose default action ends the process: the access never
//! completes, so no guarantee of Rust is broken, but the program ends without a word (mycp3
//! arms a handler that says why first: [`crate::copy`]).
//! ([`madvise_populate_write`] learns of such a page before the copy, as `EFAULT`.)

use std::ffi::c_void;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicIsize, Ordering};

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::sys::stat::{FileStat, SFlag};

pub use nix::sys::mman::{MapFlags, ProtFlags};

use super::trace;

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
/// made (no space left, or the file is shorter than the mapping): the SIGBUS the `memcpy`
/// would get, said as [`CANNOT_WRITE`].
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
        Err(Errno::EFAULT) => Err(anyhow::anyhow!(CANNOT_WRITE)),
        Err(e) => Err(e).context("madvise(MADV_POPULATE_WRITE)"),
    }
}

/// Why a mapping cannot be written: a page of its file cannot be made (SIGBUS).
pub const CANNOT_WRITE: &str = "the destination mapping cannot be written (SIGBUS): no space was \
                                left for a page, or its file was truncated";

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
    /// A page that is not backed by its file (see the module docs) raises SIGBUS, which ends the
    /// process unless a handler says otherwise (as mycp3's does: [`crate::copy`]).
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
        trace::call(
            || format!("memcpy({to:p}, {from:p}, {len})"),
            || {
                // SAFETY: both ranges are whole mappings owned by `self` and `source`, readable
                // and writable as checked above, and distinct (two mappings never overlap;
                // `&mut self` and `&source` are two objects). A page not backed by its file any
                // more raises SIGBUS, and the access never completes.
                unsafe { std::ptr::copy_nonoverlapping(from.cast::<u8>(), to.cast(), len) };
                Ok(())
            },
            |()| format!("{to:p}"),
        )?;
        Ok(())
    }
}

impl Drop for Mapping {
    /// `munmap(addr, len)`, made even after a termination signal (see [`trace::cleanup_call`]);
    /// it cannot fail for a mapping we made.
    fn drop(&mut self) {
        let _ = trace::cleanup_call(
            || format!("munmap({:p}, {})", self.addr(), self.len),
            // SAFETY: the range is exactly the mapping this object owns; nothing refers into it
            // (no references are handed out), and it is unmapped only once, here.
            || unsafe { nix::sys::mman::munmap(self.addr, self.len) },
            |()| "0".into(),
        );
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
}

// ---- what a file is -------------------------------------------------------------------------

/// What kind of file a `st_mode` says, in words.
pub(crate) fn kind(stat: &FileStat) -> &'static str {
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
    let stat = nix::sys::stat::fstat(fd).with_context(|| format!("fstat('{}')", path.display()))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::AsFd;

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
    fn flags_read_as_in_c() {
        assert_eq!(prot_names(PROT_READ | PROT_WRITE), "PROT_READ|PROT_WRITE");
        assert_eq!(
            map_names(MAP_SHARED | MAP_POPULATE),
            "MAP_SHARED|MAP_POPULATE"
        );
    }
}
