//! Memory-mapped files: `mmap` ([`mmap`] → a [`Mapping`]), `munmap` (dropping it), `memcpy`
//! between two mappings ([`Mapping::copy_from`]), `madvise`, `ftruncate`, `posix_fallocate`.
//!
//! A [`Mapping`] gives no plain Rust reference into its memory: the file behind a shared
//! mapping can be changed or truncated by another process at any moment, which no `&[u8]` may
//! see. The only ways in are what the exercises do: [`Mapping::copy_from`] (mycp3's `memcpy`)
//! and [`Mapping::as_long`] (mipc's counter, an atomic). A page past the end of its file (it
//! shrank, or the disk is full) raises SIGBUS instead of an error code ([`crate::copy`]).

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::os::fd::BorrowedFd;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::AtomicIsize;

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::sys::mman::MmapAdvise;
use nix::sys::stat::SFlag;

pub use nix::sys::mman::{MapFlags, ProtFlags};

use super::fd::{other_kind, raw, zero};
use super::trace::{self, Pause};

/// Pages may be read.
pub const PROT_READ: ProtFlags = ProtFlags::PROT_READ;
/// Pages may be written.
pub const PROT_WRITE: ProtFlags = ProtFlags::PROT_WRITE;
/// Changes are shared: they reach the file, and every process that maps it sees them.
pub const MAP_SHARED: MapFlags = MapFlags::MAP_SHARED;
/// Changes are private: copy-on-write, each process gets its own copy of a page it writes.
pub const MAP_PRIVATE: MapFlags = MapFlags::MAP_PRIVATE;
/// Fault all pages in during `mmap`, instead of one page fault per page.
pub const MAP_POPULATE: MapFlags = MapFlags::MAP_POPULATE;

/// `mmap(NULL, length, prot, flags, fd, offset)`: maps `length` bytes of the file open as `fd`
/// from `offset` (a multiple of the page size). `MAP_FIXED`, which would replace whatever is
/// mapped at an address, is refused (`EINVAL`).
pub fn mmap(
    length: usize,
    prot: ProtFlags,
    flags: MapFlags,
    fd: BorrowedFd<'_>,
    offset: i64,
) -> nix::Result<Mapping> {
    let describe = || {
        let (shown_prot, shown_flags, fd) = (prot_names(prot), map_names(flags), raw(&fd));
        format!("mmap(NULL, {length}, {shown_prot}, {shown_flags}, {fd}, {offset})")
    };
    let make = || {
        if flags.intersects(MapFlags::MAP_FIXED | MapFlags::MAP_FIXED_NOREPLACE) {
            return Err(Errno::EINVAL);
        }
        let len = NonZeroUsize::new(length).ok_or(Errno::EINVAL)?;
        // SAFETY: without MAP_FIXED the kernel picks an address where nothing is mapped, so no
        // memory of this program changes; the new mapping is owned by the `Mapping` returned,
        // which gives out no plain reference into it (see the module docs).
        let addr = unsafe { nix::sys::mman::mmap(None, len, prot, flags, fd, offset) }?;
        let len = length;
        Ok(Mapping { addr, len, prot })
    };
    trace::call(describe, make, |mapping| format!("{:p}", mapping.addr()))
}

/// `ftruncate(fd, length)`: sets the file's size. Growing a file this way allocates no disk
/// blocks: a page written through a mapping gets one then, or SIGBUS ([`posix_fallocate`]).
pub fn ftruncate(fd: BorrowedFd<'_>, length: i64) -> nix::Result<()> {
    let describe = || format!("ftruncate({}, {length})", raw(&fd));
    let make = || nix::unistd::ftruncate(fd, length);
    zero(describe, make, Pause::EndedBySignal)
}

/// `posix_fallocate(fd, offset, length)`: allocates the disk blocks of the range now (and grows
/// the file to cover it): a full disk is `ENOSPC` here, not a SIGBUS during the copy.
pub fn posix_fallocate(fd: BorrowedFd<'_>, offset: i64, length: i64) -> nix::Result<()> {
    let describe = || format!("posix_fallocate({}, {offset}, {length})", raw(&fd));
    let make = || nix::fcntl::posix_fallocate(fd, offset, length);
    zero(describe, make, Pause::EndedBySignal)
}

/// `madvise(addr, len, MADV_POPULATE_WRITE)` (Linux 5.14): faults in every page of a writable
/// `mapping` at once, instead of two faults per page during the `memcpy` (a kernel without it,
/// `EINVAL`, only copies slower). `EFAULT`, a page that cannot be made, is the SIGBUS the
/// `memcpy` would get: [`CANNOT_WRITE`].
pub fn madvise_populate_write(mapping: &Mapping) -> anyhow::Result<()> {
    let (addr, len) = (mapping.addr, mapping.len);
    let describe = || format!("madvise({addr:p}, {len}, MADV_POPULATE_WRITE)");
    // SAFETY: the range is the whole mapping `mapping` owns; populating changes no content.
    let make = || unsafe { nix::sys::mman::madvise(addr, len, MmapAdvise::MADV_POPULATE_WRITE) };
    match zero(describe, make, Pause::EndedBySignal) {
        Ok(()) | Err(Errno::EINVAL) => Ok(()),
        Err(Errno::EFAULT) => bail!(CANNOT_WRITE),
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
    pub fn copy_from(&mut self, source: &Mapping) -> anyhow::Result<()> {
        let (to, from, len) = (self.addr.as_ptr(), source.addr.as_ptr(), self.len);
        anyhow::ensure!(
            self.prot.contains(PROT_WRITE) && source.prot.contains(PROT_READ) && len == source.len,
            "memcpy({to:p}, {from:p}, {len}): needs a writable mapping as long as the readable one"
        );
        let describe = || format!("memcpy({to:p}, {from:p}, {len})");
        let make = || {
            // SAFETY: both ranges are whole mappings owned by `self` and `source`, readable and
            // writable as checked above, and distinct (two mappings never overlap; `&mut self`
            // and `&source` are two objects). A page not backed by its file raises SIGBUS, and
            // the access never completes.
            unsafe { std::ptr::copy_nonoverlapping(from.cast::<u8>(), to.cast(), len) };
            Ok(())
        };
        trace::call(describe, make, |()| format!("{to:p}"))?;
        Ok(())
    }

    /// The C `long` at the start of this readable and writable mapping: mipc's counter. An
    /// atomic, as another process may write the memory too (`/proc/PID/mem`).
    pub fn as_long(&self) -> anyhow::Result<&AtomicIsize> {
        let size = std::mem::size_of::<libc::c_long>();
        anyhow::ensure!(
            self.prot.contains(PROT_READ | PROT_WRITE) && self.len >= size,
            "counter ({:p}): needs a readable and writable mapping of {size} bytes",
            self.addr
        );
        // SAFETY: the mapping is page-aligned, readable, writable and at least one `long` long
        // (checked above), and outlives the reference; every access through it is atomic.
        Ok(unsafe { AtomicIsize::from_ptr(self.addr.as_ptr().cast()) })
    }
}

// `long` is as wide as a pointer on every Linux target, so it is an `AtomicIsize`.
const _: () = assert!(std::mem::size_of::<libc::c_long>() == std::mem::size_of::<isize>());

impl Drop for Mapping {
    /// `munmap(addr, len)`, a cleanup call (made even after a termination signal).
    fn drop(&mut self) {
        let (addr, len) = (self.addr, self.len);
        let describe = || format!("munmap({addr:p}, {len})");
        // SAFETY: the range is exactly the mapping this object owns; nothing refers into it
        // (no plain references are handed out), and it is unmapped only once, here.
        let _ = zero(
            describe,
            || unsafe { nix::sys::mman::munmap(addr, len) },
            Pause::NeverEnds,
        );
    }
}

/// Fails unless the file open as `fd` at `path` is a character device, as `/dev/zero` is (a
/// regular file put in its place maps as a file: SIGBUS on the first access).
pub fn check_char_device(fd: BorrowedFd<'_>, path: &Path) -> anyhow::Result<()> {
    let stat = nix::sys::stat::fstat(fd).with_context(|| format!("fstat('{}')", path.display()))?;
    match other_kind(&stat, SFlag::S_IFCHR) {
        Some(kind) => bail!(
            "{}: is {kind}, not a character device: mapping it would not give zero-filled memory \
             (an empty file raises SIGBUS)",
            path.display()
        ),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::sync::atomic::Ordering;

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
        let mapping = map(file.as_file(), 8, PROT_READ | PROT_WRITE);
        let counter = mapping.as_long().unwrap();
        assert_eq!(counter.fetch_add(1, Ordering::SeqCst), 0);
        assert_eq!(counter.fetch_add(1, Ordering::SeqCst), 1);
        drop(mapping);
        assert_eq!(std::fs::read(file.path()).unwrap()[..8], 2i64.to_ne_bytes());
        assert!(map(file.as_file(), 8, PROT_READ).as_long().is_err());
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
