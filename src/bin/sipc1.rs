//! sipc1 — the server of a client–server pair over System V shared memory.
//!
//! Demonstrates: two unrelated processes share one segment, found by its key 0x9000+ID. Its
//! first 4 bytes are a flag (0 empty, 1 a request is waiting), the text follows at offset 4.
//! The server waits until the flag is 1, prints the request, writes its reply over it and sets
//! the flag back to 0. The flag is an atomic: the C's plain `int` loop, compiled with -O2, reads
//! it once and spins for ever. Whichever program starts first makes the segment; the server
//! marks it for removal (IPC_RMID) once it has a live request — the client keeps it attached
//! until it has read the reply. No sleep(1).
//!
//! System calls: shmget, shmat, shmctl (IPC_STAT, IPC_RMID), shmdt.
//! Run:     make sipc1 sipc2, then ./sipc1 in one terminal and ./sipc2 in another.
//! Observe: ipcs -m (nattch);  strace -e trace=shmget,shmat,shmctl,shmdt ./sipc1

use std::process::ExitCode;
use std::sync::atomic::Ordering::{Acquire, Release};

use anyhow::Context;
use clap::Parser;
use ipclab::cli;
use ipclab::shm::{Segment, SipcOptions, StatReport, EMPTY, REQUEST, SIPC_SIZE};
use ipclab::{out, outln, signals};

/// Shared memory server: answers one request that sipc2 leaves in segment 0x9000+ID.
#[derive(Parser)]
#[command(version)]
struct Options {
    #[command(flatten)]
    sipc: SipcOptions,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), serve)
}

fn serve(Options { sipc: options }: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // so that Ctrl-C ends the wait and the segment is cleaned up
    let key = options.id.segment_key();
    let segment = Segment::get_or_create(key, SIPC_SIZE)?; // shmget(key, 1024, IPC_CREAT|0600)
    let stat = StatReport::new(&segment, options.stat);
    stat.after("shmget")?;
    let attached = segment.attach()?; // shmat(shmid, NULL, 0)
    let area = attached.sipc()?;
    stat.after("shmat")?;

    let request = loop {
        segment
            .wait_until(options.timeout.deadline(), || {
                area.flag.load(Acquire) == REQUEST // Acquire: the text written before it is seen
            })
            .with_context(|| format!("waiting for a request (segment {key})"))?;
        // A request whose client has gone (killed; a C client stopped with Ctrl-C) is left
        // in a segment nobody else is attached to: say so, and wait for a live one.
        if segment.others_attached()? {
            break area.text();
        }
        let stale = area.quoted_text();
        area.flag.store(EMPTY, Release); // first: a client that reads our warning finds it free
        cli::warn(format_args!(
            "stale request {stale} in segment {key}: its client has gone (nobody else is \
             attached); not answered"
        ));
    };
    stat.after("the request came")?;
    let request = request.unwrap_or_else(|bad| {
        cli::warn(format_args!("request: {bad}; answered anyway"));
        bad.shown
    });
    segment.remove()?; // shmctl(shmid, IPC_RMID, NULL): the key is free; we both stay attached

    // A stdout that fails (>/dev/full) must not cost the waiting client its reply.
    let printed = out!("Received request: {request}.....");
    area.write_text(&format!("This is a reply from {}.", std::process::id()))?;
    area.flag.store(EMPTY, Release); // Release: the reply is complete before the flag says so
    printed?;
    outln!("Replied.")?;
    stat.after("the reply")?;
    Ok(())
} // `attached` is dropped here (shmdt): the segment is gone once the client detaches too
