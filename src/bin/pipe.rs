//! pipe — a parent sends one message to its child through a pipe.
//!
//! Demonstrates: `pipe` gives a read end and a write end; after `fork` both processes hold both
//! ends, so each closes the end it does not use. The child reads until end-of-file, which comes
//! only once *every* write end is closed — forget the child's `close(fd[1])` and it waits forever.
//!
//! System calls: pipe, fork, close, write, read, waitpid.
//! Run:     make pipe && ./pipe
//! Observe: strace -f -e trace=pipe2,clone,close,write,read,wait4 ./pipe   (labs.md, 1.)

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ipclab::sys::fd::{close, pipe, read, write_all};
use ipclab::{out, outln, process};
use nix::unistd::ForkResult;

/// A parent sends "Hello, World!" to its child through a pipe.
#[derive(Parser)]
#[command(version)]
struct Options {}

/// The message, without the C version's trailing NUL byte.
const MESSAGE: &[u8] = b"Hello, World!\n";

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), |_: Options| parent_sends_to_child())
}

fn parent_sends_to_child() -> anyhow::Result<()> {
    let (read_end, write_end) = pipe().context("pipe")?;

    match process::fork()? {
        ForkResult::Parent { child } => {
            close(read_end).context("close")?; // the parent only writes
            let sent = send(write_end);
            process::wait_child_after(child, sent)
        }
        ForkResult::Child => {
            close(write_end).context("close")?; // else our own write end keeps end-of-file away
            receive(read_end)
        }
    }
}

/// The parent's part: write the message, then close the write end (end-of-file for the child).
fn send(write_end: OwnedFd) -> anyhow::Result<()> {
    outln!("Parent: Send data to child")?;
    write_all(&write_end, MESSAGE).context("write (pipe to child)")?;
    close(write_end).context("close")
}

/// The child's part: read everything up to end-of-file, then print it.
fn receive(read_end: OwnedFd) -> anyhow::Result<()> {
    outln!("Child : Wait for parent to send data")?;
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match read(&read_end, &mut buf).context("read (pipe from parent)")? {
            0 => break, // end-of-file: every write end is closed
            n => data.extend_from_slice(&buf[..n]),
        }
    }
    close(read_end).context("close")?;
    out!("Child : Received data from parent: ")?;
    ipclab::rt::out::write_bytes(&data)
}
