//! sipc1 — the server of a client–server pair over System V shared memory.
//!
//! Demonstrates: two unrelated processes share one segment, found by its key 0x9000+ID. Its
//! first 4 bytes are a flag (0 empty, 1 a request is waiting), the text follows at offset 4.
//! The server waits until the flag is 1, writes its reply over the request, sets the flag back
//! to 0 and then prints what it got. The flag is an atomic: the C's plain `int` loop, compiled
//! with -O2, reads it once and spins for ever. Whichever program starts first makes the segment;
//! the server marks it for removal (IPC_RMID) once it has a live request — the client keeps it
//! attached until it has read the reply. No sleep(1). Two servers on one segment would both
//! answer in C: here a second sipc1 is refused (a lock file), and a server claims a request by
//! changing the flag from 1 to 2 in one atomic step before it answers.
//!
//! System calls: shmget, shmat, shmctl (IPC_STAT, IPC_RMID), shmdt.
//! Run:     make sipc1 sipc2, then ./sipc1 in one terminal and ./sipc2 in another.
//! Observe: ipcs -m (nattch);  strace -e trace=shmget,shmat,shmctl,shmdt ./sipc1

use std::process::ExitCode;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use anyhow::{bail, Context};
use clap::Parser;
use ipclab::server_lock::ServerLock;
use ipclab::shm::{self, Awaited, Segment, SipcOptions, StatReport, EMPTY, REQUEST, SIPC_SIZE};
use ipclab::shm::{SIPC1, TAKEN};
use ipclab::{cli, out, outln, signals};

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
    let _alive = ServerLock::take(SIPC1, key)?; // a second sipc1 on this key is refused
    let segment = Segment::get_or_create(key, SIPC_SIZE)?; // shmget(key, 1024, IPC_CREAT|0600)
    let stat = StatReport::new(&segment, options.stat);
    stat.after("shmget")?;
    let attached = segment.attach()?; // shmat(shmid, NULL, 0)
    let area = attached.sipc()?;
    stat.after("shmat")?;

    loop {
        segment
            .wait_until(options.timeout.deadline(), Awaited::NewPeer, || {
                area.flag.load(Acquire) != EMPTY // Acquire: the text written before it is seen
            })
            .with_context(|| format!("waiting for a request (segment {key})"))?;
        let now = segment.stat()?; // shmctl(shmid, IPC_STAT, &buf): is the client still there?
        let found = area.flag.load(Acquire); // after the look: it may have changed meanwhile
        match (found, now.nattch() > 1) {
            (REQUEST, true) => break,
            (EMPTY, _) => continue,
            // Only a segment marked for removal holds a claimed request (see below).
            (TAKEN, true) if now.removed() => {
                bail!("another server took the request in segment {key} first")
            }
            (_, true) => bail!("{}; {}", shm::unknown_flag(found, key), shm::FOREIGN_HINT),
            // Left by a process that has gone (a killed client; a C client stopped with
            // Ctrl-C): nobody else is attached. Clear it, say so, and wait for a live request.
            (REQUEST, false) => {
                let text = area.quoted_text();
                let _ = area.flag.compare_exchange(REQUEST, EMPTY, Relaxed, Relaxed);
                cli::warn(format_args!(
                    "stale request {text} in segment {key}: its client has gone (nobody else is \
                     attached); not answered"
                ));
            }
            (_, false) => {
                let _ = area.flag.compare_exchange(found, EMPTY, Relaxed, Relaxed);
                cli::warn(format_args!(
                    "{}, left by a process that has gone (nobody else is attached); reset to 0",
                    shm::unknown_flag(found, key)
                ));
            }
        }
    }
    let came = stat.line("the request came")?;
    segment.remove()?; // shmctl(shmid, IPC_RMID, NULL): the key is free; we both stay attached

    // Another server (a C one, or a sipc1 with another TMPDIR) may have seen the request too:
    // only the one that changes the flag from 1 to 2 ("being answered") answers it.
    if area
        .flag
        .compare_exchange(REQUEST, TAKEN, Acquire, Relaxed)
        .is_err()
    {
        bail!("another server took the request in segment {key} first");
    }
    let request = area.text();
    area.write_text(&format!("This is a reply from {}.", std::process::id()))?;
    area.flag.store(EMPTY, Release); // Release: the reply is complete before the flag says so

    // Only now print: a stdout that blocks or fails must not hold back the client's reply.
    let request = request.unwrap_or_else(|bad| {
        cli::warn(format_args!("request: {bad}; answered anyway"));
        bad.shown
    });
    if let Some(line) = came {
        outln!("{line}")?; // --stat
    }
    out!("Received request: {request}.....")?;
    outln!("Replied.")?;
    stat.after("the reply")?;
    Ok(())
} // `attached` is dropped here (shmdt): the segment is gone once the client detaches too
