//! mycp3 — copy a file through two memory mappings, one window at a time.
//!
//! Demonstrates: a file's bytes become memory. SOURCE is mapped for reading, DEST for reading and
//! writing, both MAP_SHARED, and one `memcpy` between the two mappings copies the data: no
//! `read`, no `write`, no buffer in between. The kernel loads SOURCE's pages and writes DEST's
//! back. Windows of 16 MiB (`--window`) keep the memory small for any file size.
//!
//! The C version's hazards, fixed: an empty SOURCE is copied (mmap of 0 bytes fails in C); DEST
//! being SOURCE is refused before anything is truncated; a SOURCE that is no regular file is
//! refused before DEST is touched; DEST's blocks are reserved first (posix_fallocate), so a full
//! disk is an error, not a SIGBUS; a SIGBUS anyway (SOURCE shrinking) is caught; the copy is made
//! without a name in DEST's directory (O_TMPFILE) and named and renamed over DEST only when
//! complete, so a failure or Ctrl-C leaves DEST as it was, and even kill -9 leaves no trace.
//!
//! System calls: open, posix_fallocate (or ftruncate), mmap, madvise, munmap, fchmod, linkat,
//! rename.
//! Run:     make mycp3 && ./mycp3 SOURCE DEST     (--trace shows each call with its values)
//! Observe: strace -e trace=openat,fallocate,mmap,madvise,munmap,read,write ./mycp3 labs.md copy

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ipclab::mman::{self, DestFile, SourceFile, MAP_POPULATE, MAP_SHARED, PROT_READ, PROT_WRITE};
use ipclab::signals;

/// Copies SOURCE to DEST through memory mappings (mmap, memcpy, munmap).
#[derive(Parser)]
#[command(version)]
struct Options {
    /// The file to copy (a regular file)
    source: PathBuf,

    /// The copy: a new file, or an existing one to replace
    dest: PathBuf,

    /// Bytes mapped at a time from each file (K, M, G: KiB, MiB, GiB; whole pages; at most 1G)
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = mman::parse_window)]
    window: usize,

    /// How DEST gets its size before the copy: fallocate reserves the disk blocks (a full disk
    /// is a clean error); ftruncate only sets the size, as the C version does (a full disk is
    /// found only while copying: the SIGBUS of the C version)
    #[arg(long, value_enum, value_name = "HOW", default_value = "fallocate")]
    reserve: Reserve,
}

#[derive(Clone, Copy, ValueEnum)]
enum Reserve {
    Fallocate,
    Ftruncate,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), copy)
}

fn copy(options: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // Ctrl-C ends the copy between windows; DEST stays as it was
    let source = SourceFile::open(&options.source)?; // open(SOURCE, O_RDONLY)
    let dest = DestFile::create(&options.dest, &source)?; // open(DEST's directory, O_RDWR|O_TMPFILE)

    let copied = copy_windows(&source, &dest, &options);
    signals::check()?; // stopped by a signal: exit 128+signal, nothing more to say
    copied.with_context(|| dest.untouched())?;
    dest.commit(source.permissions()) // fchmod, linkat (a hidden name), rename over DEST
} // on every error, dropping `dest` removes the unfinished copy

fn copy_windows(source: &SourceFile, dest: &DestFile, options: &Options) -> anyhow::Result<()> {
    let size = source.size();
    if size == 0 {
        return Ok(()); // nothing to map: mmap of 0 bytes is an error
    }
    match options.reserve {
        Reserve::Fallocate => mman::posix_fallocate(dest.fd(), 0, size as i64),
        Reserve::Ftruncate => mman::ftruncate(dest.fd(), size as i64),
    }
    .with_context(|| format!("reserving {size} bytes"))?;

    let mut offset = 0u64;
    while offset < size {
        signals::check()?;
        let len = (size - offset).min(options.window as u64) as usize;
        source.check_size(offset + len as u64)?; // mapping past its end would raise SIGBUS
        let at = offset as i64;
        let from = mman::mmap(len, PROT_READ, MAP_SHARED | MAP_POPULATE, source.fd(), at)
            .with_context(|| format!("mmap(SOURCE, offset {offset})"))?;
        let mut to = mman::mmap(len, PROT_READ | PROT_WRITE, MAP_SHARED, dest.fd(), at)
            .with_context(|| format!("mmap(DEST, offset {offset})"))?;
        mman::madvise_populate_write(&to)?; // all pages in, writable: faster than MAP_POPULATE
        to.copy_from(&from)?; // memcpy(to, from, len)
        offset += len as u64;
    } // each round ends with munmap of both windows
    Ok(())
}
