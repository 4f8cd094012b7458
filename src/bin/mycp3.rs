//! mycp3 — copy a file through two memory mappings, one window at a time.
//!
//! Demonstrates: a file's bytes become memory. SOURCE is mapped for reading, DEST for reading and
//! writing, both MAP_SHARED, and one `memcpy` between the two mappings copies the data: no
//! `read`, no `write`, no buffer in between. Windows of 16 MiB (`--window`) keep the memory
//! small; the holes of a sparse SOURCE (`lseek` SEEK_DATA/SEEK_HOLE) stay holes in DEST.
//! The copy becomes DEST only when complete (labs.md, 8., says why).
//!
//! System calls: open, ftruncate, lseek, posix_fallocate, mmap, madvise, munmap, fchmod, linkat,
//! rename.
//! Run:     make mycp3 && ./mycp3 SOURCE DEST     (--trace shows each call with its values)
//! Observe: strace -e trace=openat,lseek,mmap,munmap,read,write ./mycp3 labs.md copy

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use ipclab::copy::{self, DestFile, SourceFile};
use ipclab::rt::signals;
use ipclab::sys::mman::{self, MAP_POPULATE, MAP_SHARED, PROT_READ, PROT_WRITE};

/// Copies SOURCE to DEST through memory mappings (mmap, memcpy, munmap).
#[derive(Parser)]
#[command(version)]
struct Options {
    /// The file to copy (a regular file)
    source: PathBuf,

    /// The copy: a new file, or an existing one to replace
    dest: PathBuf,

    /// Bytes mapped at a time from each file (K, M, G: KiB, MiB, GiB; whole pages; at most 1G)
    #[arg(long, value_name = "SIZE", default_value = "16M", value_parser = copy::parse_window)]
    window: usize,

    /// How DEST's disk blocks are had: fallocate reserves them before copying (a full disk is a
    /// clean error); ftruncate only sets the size, as the C version does (a full disk: SIGBUS)
    #[arg(long, value_enum, value_name = "HOW", default_value = "fallocate")]
    reserve: Reserve,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
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
    let dest = DestFile::create(&options.dest, &source)?; // open(DEST's dir, O_RDWR|O_TMPFILE)

    let copied = copy_windows(&source, &dest, &options);
    signals::check()?; // stopped by a signal: exit 128+signal, nothing more to say
    copied.with_context(|| dest.untouched())?;
    dest.commit(source.permissions()) // fchmod, linkat to DEST (or to a hidden name, rename)
} // on every error, dropping `dest` removes the unfinished copy

fn copy_windows(source: &SourceFile, dest: &DestFile, options: &Options) -> anyhow::Result<()> {
    mman::ftruncate(dest.fd(), source.size() as i64).context("ftruncate")?; // all a hole so far
    let mut offset = 0;
    while let Some(data) = source.data_from(offset)? {
        // lseek(SEEK_DATA), lseek(SEEK_HOLE): the next data; the hole before it stays a hole
        let length = data.end - data.start;
        if options.reserve == Reserve::Fallocate {
            mman::posix_fallocate(dest.fd(), data.start as i64, length as i64)
                .with_context(|| format!("reserving {length} bytes"))?;
        }
        for at in data.clone().step_by(options.window) {
            let len = (data.end - at).min(options.window as u64) as usize;
            copy_window(source, dest, at as i64, len)?;
        }
        offset = data.end;
    }
    Ok(())
}

fn copy_window(source: &SourceFile, dest: &DestFile, at: i64, len: usize) -> anyhow::Result<()> {
    signals::check()?;
    let from = mman::mmap(len, PROT_READ, MAP_SHARED | MAP_POPULATE, source.fd(), at)
        .with_context(|| format!("mmap(SOURCE, offset {at})"))?;
    let mut to = mman::mmap(len, PROT_READ | PROT_WRITE, MAP_SHARED, dest.fd(), at)
        .with_context(|| format!("mmap(DEST, offset {at})"))?;
    mman::madvise_populate_write(&to)?; // all pages in, writable: faster than MAP_POPULATE
    dest.memcpy(&mut to, &from) // memcpy(to, from, len); a SIGBUS ends mycp3 cleanly
} // munmap of both windows
