//! sipc2 — the client of a client–server pair over System V shared memory.
//!
//! Demonstrates: the client finds (or makes) the segment with key 0x9000+ID, writes its request
//! as text at offset 4 and only then sets the flag at offset 0 to 1 — an atomic store with
//! Release, so the server that sees the flag also sees the whole text (`ipclab::sipc::Sipc::put`).
//! It waits (politely: labs.md, "Busy waiting on one CPU") until the server sets the flag back
//! to 0, and prints the reply.
//!
//! System calls: shmget, shmat, shmctl (IPC_STAT), shmdt.
//! Run:     make sipc1 sipc2, then ./sipc1 in one terminal and ./sipc2 in another (either first).
//! Observe: ipcs -m (nattch);  strace -e trace=shmget,shmat,shmctl,shmdt ./sipc2

use std::process::ExitCode;

use clap::Parser;
use ipclab::cli::{IdOption, StatOption, TimeoutOption};
use ipclab::rt::out::warn;
use ipclab::rt::signals;
use ipclab::segment::Segment;
use ipclab::sipc::{self, SIPC_SIZE};
use ipclab::{out, outln};

/// Shared memory client: leaves one request for sipc1 in segment 0x9000+ID, prints the reply.
#[derive(Parser)]
#[command(version)]
struct Options {
    #[command(flatten)]
    id: IdOption,

    #[command(flatten)]
    timeout: TimeoutOption,

    #[command(flatten)]
    stat: StatOption,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), ask_server)
}

fn ask_server(options: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // so that Ctrl-C ends the wait and the segment is cleaned up
    let key = options.id.segment_key();
    let segment = Segment::get_or_create(key, SIPC_SIZE)?; // shmget(key, 1024, IPC_CREAT|0600)
    let stat = options.stat.printer();
    stat.after(&segment, "shmget")?;
    let attached = segment.attach()?; // shmat(shmid, NULL, 0)
    stat.after(&segment, "shmat")?;
    let client = sipc::Client::new(&segment, &attached)?;

    client.send(&format!("This is a request from {}.", std::process::id()))?; // then *flag = 1
    stat.after(&segment, "the request")?;
    out!("Sent a request.....")?;

    let reply = client.receive(options.timeout.deadline())?; // until *flag == 0
    outln!(
        "Received reply: {}",
        reply.as_ref().unwrap_or_else(|bad| &bad.shown)
    )?;
    if let Err(bad) = reply {
        warn(format_args!("reply: {bad}")); // after the line, which stays the C's
    }
    stat.after(&segment, "the reply")
} // `attached` is dropped here (shmdt); on an error or a signal, the last one out removes it
