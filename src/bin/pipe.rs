//! pipe — a parent sends one message to its child through a pipe.
//!
//! Demonstrates: `pipe` gives a read end and a write end; after `fork` both processes hold both
//! ends, so each closes the end it does not use. The child reads until end-of-file, which comes
//! only once *every* write end is closed — forget the child's `close(fd[1])` and it waits forever.
//!
//! System calls: pipe, fork, close, write, read, waitpid.
//! Run:     make pipe && ./pipe
//! Observe: strace -f -e trace=pipe2,clone,close,write,read,wait4 ./pipe   (labs.md, "pipe")

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ipclab::{out, outln, process};
use nix::unistd::{pipe, ForkResult};

/// A parent sends "Hello, World!" to its child through a pipe.
#[derive(Parser)]
#[command(version)]
struct Options {}

/// The message, ending in a newline (the C version also sent its trailing NUL byte).
const MESSAGE: &[u8] = b"Hello, World!\n";

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), |_: Options| parent_sends_to_child())
}

fn parent_sends_to_child() -> anyhow::Result<()> {
    let (read_end, write_end) = pipe().context("pipe")?;

    // SAFETY: this program is single-threaded.
    match unsafe { process::fork() }? {
        ForkResult::Parent { child } => {
            drop(read_end); // close(fd[0]): the parent only writes
            let sent = send(write_end);
            process::wait_child_after(child, sent)
        }
        ForkResult::Child => {
            drop(write_end); // close(fd[1]): else our own write end keeps end-of-file away
            receive(read_end)
        }
    }
}

/// The parent's part: write the message, then close the write end (end-of-file for the child).
fn send(write_end: OwnedFd) -> anyhow::Result<()> {
    outln!("Parent: Send data to child")?;
    let mut pipe = File::from(write_end);
    pipe.write_all(MESSAGE).context("write (pipe to child)")
} // `pipe` is dropped here: close(fd[1])

/// The child's part: read everything up to end-of-file, then print it.
fn receive(read_end: OwnedFd) -> anyhow::Result<()> {
    outln!("Child : Wait for parent to send data")?;
    let mut data = Vec::new();
    File::from(read_end)
        .read_to_end(&mut data)
        .context("read (pipe from parent)")?;
    out!("Child : Received data from parent: ")?;
    ipclab::out::write_bytes(&data)
}
