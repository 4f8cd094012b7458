//! shm — where things live in a process's memory, and where a shared memory segment lands.
//!
//! Demonstrates: a zero-initialised global array lives in the program's bss (right after its
//! data), a malloc'd block on the heap, a local variable on the stack — and a System V segment,
//! attached with shmat, in a mapping of its own between heap and stack. The segment is made with
//! the key IPC_PRIVATE: no other process can find it by key; it is removed before the end.
//!
//! System calls: shmget, shmat, shmdt, shmctl (IPC_RMID).
//! Run:     make shm && ./shm          (./shm --maps: the /proc/self/maps line of each address)
//! Observe: strace -e trace=shmget,shmat,shmdt,shmctl ./shm

use std::process::ExitCode;

use clap::Parser;
use ipclab::outln;
use ipclab::rt::signals;
use ipclab::segment::Segment;
use ipclab::stat::maps_lines;

/// The C's `char array[ARRAY_SIZE]`: a global that starts as zeros, so it lives in the bss.
/// `static mut` (never written here) keeps it writable; an immutable static of zeros could end
/// up among the read-only data instead.
static mut ARRAY: [u8; ARRAY_SIZE] = [0; ARRAY_SIZE];
const ARRAY_SIZE: usize = 40000;
const MALLOC_SIZE: usize = 100000;
const SHM_SIZE: usize = 100000;

/// Prints where a global array, a local, a malloc'd block and an attached segment live.
#[derive(Parser)]
#[command(version)]
struct Options {
    /// Under each line, print the line of /proc/self/maps (the mapping) that holds it
    #[arg(long)]
    maps: bool,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), show_memory)
}

fn show_memory(options: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // so that Ctrl-C during --step still removes the segment
    let show = |what: String, start: *const u8, size: usize| -> anyhow::Result<()> {
        outln!("{what}")?;
        if options.maps {
            for line in maps_lines(start as usize, start as usize + size.max(1))? {
                outln!("    {line}")?;
            }
        }
        Ok(())
    };

    let array = &raw const ARRAY as *const u8;
    let end = array.wrapping_add(ARRAY_SIZE);
    show(
        format!("Array[] from {array:p} to {end:p}"),
        array,
        ARRAY_SIZE,
    )?;

    let shmid = 0; // the C prints the address of its local variable `shmid`
    let local = std::hint::black_box(&shmid) as *const i32 as *const u8;
    show(format!("Stack around {local:p}"), local, 1)?;

    let block: Vec<u8> = Vec::with_capacity(MALLOC_SIZE); // malloc(MALLOC_SIZE)
    let (start, end) = (block.as_ptr(), block.as_ptr().wrapping_add(MALLOC_SIZE));
    show(
        format!("Malloced from {start:p} to {end:p}"),
        start,
        MALLOC_SIZE,
    )?;

    let segment = Segment::create_private(SHM_SIZE)?; // shmget(IPC_PRIVATE, SHM_SIZE, 0600)
    let attached = segment.attach()?; // shmat(shmid, NULL, 0)
    let (start, end) = (attached.addr(), attached.addr().wrapping_add(SHM_SIZE));
    let line = format!("Shared memory attached from {start:p} to {end:p}");
    show(line, start, SHM_SIZE)
} // `attached` is dropped here (shmdt), then `segment` (shmctl IPC_RMID)
