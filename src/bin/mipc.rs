//! mipc — parent and child count in turns, in memory they share through mmap of /dev/zero.
//!
//! Demonstrates: `mmap` of `/dev/zero` with MAP_SHARED gives zero-filled memory that stays
//! shared across `fork`: both processes see the same `long`, not copies of it. The synclib
//! makes them take turns: the parent finds the even values, the child the odd ones.
//!
//! System calls: open, fstat, mmap, close, fork, then pipe write/read for the turns, munmap,
//! waitpid.
//! Run:     make mipc && ./mipc          (./mipc --loops 1000 | tail -2)
//! Observe: strace -f -e trace=openat,mmap,clone,write,read,munmap,wait4 ./mipc --loops 2

use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::AtomicIsize;

use anyhow::Context;
use clap::Parser;
use ipclab::cli::TimeoutOption;
use ipclab::rt::exit::caused_by;
use ipclab::rt::signals;
use ipclab::sync::{ChildSide, ParentSide, PeerGone, TellWait};
use ipclab::sys::fd as sys;
use ipclab::sys::mman::{self, MAP_SHARED, PROT_READ, PROT_WRITE};
use ipclab::{outln, process};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::ForkResult;

/// Parent and child increment a counter they share through mmap of /dev/zero, taking turns.
#[derive(Parser)]
#[command(version)]
struct Options {
    /// Number of steps: the parent prints the even values, the child the odd ones, 0 to N-1
    #[arg(long, value_name = "N", default_value_t = 10)]
    loops: u32,

    #[command(flatten)]
    timeout: TimeoutOption,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), count)
}

fn count(options: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // so that Ctrl-C and kill end both processes' waits
    let dev_zero = Path::new("/dev/zero");
    let zero = sys::open(dev_zero, OFlag::O_RDWR, Mode::empty()).context("open(/dev/zero)")?;
    mman::check_char_device(zero.as_fd(), dev_zero)?; // a plain file there: SIGBUS, not zeros
    let size = std::mem::size_of::<libc::c_long>();
    let area = mman::mmap(size, PROT_READ | PROT_WRITE, MAP_SHARED, zero.as_fd(), 0)
        .context("mmap(/dev/zero)")?;
    sys::close(zero).context("close(/dev/zero)")?; // the mapping stays
    let counter = area.as_long()?; // long *ptr = area;

    let tell_wait = TellWait::new()?.with_timeout(options.timeout.timeout); // TELL_WAIT()
    match process::fork()? {
        ForkResult::Parent { child } => {
            let sync = tell_wait.into_parent();
            let turns = parent(&sync, counter, options.loops);
            if turns.as_ref().is_err_and(|e| !caused_by::<PeerGone>(e)) {
                // The parent failed, or a signal stops it: the child may wait for a turn that
                // will not come, or be stopped. End it before its pipes close, so that it goes
                // quietly and the parent's error is the one reported.
                process::end_child(child);
            }
            drop(sync);
            process::wait_child_after(child, turns)
        }
        ForkResult::Child => child(&tell_wait.into_child(), counter, options.loops),
    }
} // munmap, in each process

fn parent(sync: &ParentSide, counter: &AtomicIsize, loops: u32) -> anyhow::Result<()> {
    for expected in (0..loops).step_by(2) {
        let value = check(mman::post_increment(counter)?, expected, "parent")?; // (*ptr)++
        outln!("Parent: counter={value}")?;
        if expected + 1 < loops {
            sync.tell_child()?; // TELL_CHILD()
            sync.wait_child()?; // WAIT_CHILD()
        }
    }
    Ok(())
}

fn child(sync: &ChildSide, counter: &AtomicIsize, loops: u32) -> anyhow::Result<()> {
    for expected in (1..loops).step_by(2) {
        sync.wait_parent()?; // WAIT_PARENT()
        let value = check(mman::post_increment(counter)?, expected, "child")?; // (*ptr)++
        outln!("Child : counter={value}")?;
        sync.tell_parent()?; // TELL_PARENT()
    }
    Ok(())
}

/// The value found before adding one, if it is the one `who` expects at this turn.
fn check(found: isize, expected: u32, who: &str) -> anyhow::Result<isize> {
    if found as i64 != i64::from(expected) {
        anyhow::bail!("Counter mismatch: the {who} expected {expected}, found {found}");
    }
    Ok(found)
}
