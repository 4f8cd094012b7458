//! sync — a parent and its child take turns, five rounds, with the course's synclib.
//!
//! Demonstrates: two processes synchronised by two pipes. `TELL_WAIT` makes the pipes before
//! `fork`; `TELL_CHILD`/`TELL_PARENT` write one byte, `WAIT_CHILD`/`WAIT_PARENT` block reading it.
//!
//! System calls: pipe, fork, close, write, read, waitpid (see `ipclab::sync`).
//! Run:     make sync && ./sync          (try ./sync | cat: the lines still come one by one)
//! Observe: strace -f -e trace=pipe2,clone,close,write,read,wait4 ./sync --loops 1

use std::process::ExitCode;

use clap::Parser;
use ipclab::cli::TimeoutOption;
use ipclab::sync::{ChildSide, ParentSide, TellWait};
use ipclab::{outln, process};
use nix::unistd::ForkResult;

/// A parent and its child take turns, synchronised through two pipes (TELL_WAIT & co.).
#[derive(Parser)]
#[command(version)]
struct Options {
    /// Number of rounds
    #[arg(long, value_name = "N", default_value_t = 5)]
    loops: u32,

    #[command(flatten)]
    timeout: TimeoutOption,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), take_turns)
}

fn take_turns(options: Options) -> anyhow::Result<()> {
    let tell_wait = TellWait::new()?.with_timeout(options.timeout.timeout); // TELL_WAIT()

    match process::fork()? {
        ForkResult::Parent { child } => {
            let turns = parent(tell_wait.into_parent(), options.loops);
            process::wait_child_after(child, turns)
        }
        ForkResult::Child => child(tell_wait.into_child(), options.loops),
    }
}

fn parent(sync: ParentSide, loops: u32) -> anyhow::Result<()> {
    for _ in 0..loops {
        sync.tell_child()?; // TELL_CHILD()
        outln!("Parent: Tell to child")?;
        outln!("Parent: Wait for child to tell")?;
        sync.wait_child()?; // WAIT_CHILD()
    }
    Ok(())
}

fn child(sync: ChildSide, loops: u32) -> anyhow::Result<()> {
    for _ in 0..loops {
        outln!("Child: Wait for parent to tell")?;
        sync.wait_parent()?; // WAIT_PARENT()
        sync.tell_parent()?; // TELL_PARENT()
        outln!("Child: Tell to parent")?;
    }
    Ok(())
}
