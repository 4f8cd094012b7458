//! fifoc — the client of a client–server pair over FIFOs (named pipes).
//!
//! Demonstrates: the client makes its own FIFO `.fifo<PID>` for the answer *before* it asks,
//! writes one 160-byte request into the server's `.fifo` (one write below PIPE_BUF is atomic, so
//! many clients never mix their requests), then reads the reply from its own FIFO and removes it.
//!
//! System calls: mkfifo, open, flock, write, read, close, unlink.
//! Run:     make fifos fifoc, then ./fifos in one terminal and ./fifoc in another.
//! Observe: strace -e trace=mknodat,openat,flock,write,read,unlink ./fifoc

use std::process::ExitCode;

use clap::Parser;
use ipclab::cli::{DirOption, TimeoutOption};
use ipclab::fifo::{ClientFifo, ToServer};
use ipclab::layout::record::Record;
use ipclab::rt::signals;
use ipclab::{out, outln};
use nix::unistd::getpid;

/// FIFO client: sends one request to fifos through .fifo and prints the reply.
#[derive(Parser)]
#[command(version)]
struct Options {
    #[command(flatten)]
    dir: DirOption,

    #[command(flatten)]
    timeout: TimeoutOption,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), ask_server)
}

fn ask_server(options: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // so that Ctrl-C ends the wait and .fifo<PID> is removed
    let deadline = options.timeout.deadline();
    let pid = getpid();

    let reply_fifo = ClientFifo::create(&options.dir.dir, pid)?; // mkfifo(".fifo<PID>"), flock
    let server = ToServer::connect(&options.dir.dir)?; // open(".fifo", O_WRONLY)
    let request = Record::new(reply_fifo.name(), &format!("This is a request from {pid}."))?;
    server.send(&request, deadline)?; // write
    out!("Sent a request.....")?;

    let reply = reply_fifo.receive(&server, deadline)?; // read
    outln!("Received reply: {}", reply.text())?;
    Ok(())
} // `reply_fifo` is dropped here: unlink(".fifo<PID>")
