//! sipc2 — the client of a client–server pair over System V shared memory.
//!
//! Demonstrates: the client finds (or makes) the segment with key 0x9000+ID, writes its request
//! as text at offset 4 and only then sets the flag at offset 0 to 1 — an atomic store with
//! Release, so the server that sees the flag also sees the whole text. It waits until the server
//! sets the flag back to 0 and prints the reply. The wait spins briefly, then yields the CPU,
//! then sleeps a little: on one CPU the server can only answer while the client lets it run.
//!
//! System calls: shmget, shmat, shmctl (IPC_STAT), shmdt.
//! Run:     make sipc1 sipc2, then ./sipc1 in one terminal and ./sipc2 in another (either first).
//! Observe: ipcs -m (nattch);  strace -e trace=shmget,shmat,shmctl,shmdt ./sipc2

use std::process::ExitCode;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};

use anyhow::{bail, Context};
use clap::Parser;
use ipclab::shm::TAKEN;
use ipclab::shm::{self, Awaited, Segment, SipcOptions, StatReport, EMPTY, REQUEST, SIPC_SIZE};
use ipclab::{cli, out, outln, signals};

/// Shared memory client: leaves one request for sipc1 in segment 0x9000+ID, prints the reply.
#[derive(Parser)]
#[command(version)]
struct Options {
    #[command(flatten)]
    sipc: SipcOptions,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), ask_server)
}

fn ask_server(Options { sipc: options }: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // so that Ctrl-C ends the wait and the segment is cleaned up
    let key = options.id.segment_key();
    let segment = Segment::get_or_create(key, SIPC_SIZE)?; // shmget(key, 1024, IPC_CREAT|0600)
    let stat = StatReport::new(&segment, options.stat);
    stat.after("shmget")?;
    let attached = segment.attach()?; // shmat(shmid, NULL, 0)
    let area = attached.sipc()?;
    stat.after("shmat")?;

    // The C has no lock: a request already waiting is another client's, unless that client
    // has gone (nobody else attached) — then it is stale, and ours replaces it.
    let found = area.flag.load(Acquire);
    if found != EMPTY {
        let others = segment.others_attached()?;
        match found {
            REQUEST if others => bail!(
                "another request is waiting in segment {key} (another sipc2?); try again later"
            ),
            REQUEST => cli::warn(format_args!(
                "replacing a stale request {} in segment {key}: its client has gone",
                area.quoted_text()
            )),
            _ if others => bail!("{}; {}", shm::unknown_flag(found, key), shm::FOREIGN_HINT),
            _ => cli::warn(format_args!(
                "{}, left by a process that has gone (nobody else is attached); replacing it",
                shm::unknown_flag(found, key)
            )),
        }
    }
    area.write_text(&format!("This is a request from {}.", std::process::id()))?;
    // Release: the text is complete before the flag says so. Another client that wrote at the
    // same moment has changed the flag first: then its text and ours are mixed, so give up.
    if area
        .flag
        .compare_exchange(found, REQUEST, Release, Relaxed)
        .is_err()
    {
        bail!("another sipc2 sent a request to segment {key} at the same time; try again");
    }
    stat.after("the request")?;
    out!("Sent a request.....")?;

    // 2 (TAKEN): a server has claimed the request and is writing its reply.
    let waiting = || format!("waiting for the reply (segment {key})");
    segment
        .wait_until(options.timeout.deadline(), Awaited::AttachedPeer, || {
            !matches!(area.flag.load(Acquire), REQUEST | TAKEN)
        })
        .with_context(waiting)?;
    let flag = area.flag.load(Acquire);
    if flag != EMPTY {
        bail!(
            "{}: {}; {}",
            waiting(),
            shm::unknown_flag(flag, key),
            shm::FOREIGN_HINT
        );
    }
    segment.leave_removal_to_peer(); // removing it is the server's job (ours did already)
    let reply = area.text();
    outln!(
        "Received reply: {}",
        reply.as_ref().unwrap_or_else(|bad| &bad.shown)
    )?;
    if let Err(bad) = reply {
        cli::warn(format_args!("reply: {bad}")); // after the line, which stays the C's
    }
    stat.after("the reply")?;
    Ok(())
} // `attached` is dropped here (shmdt); on an error or a signal, the last one out removes it
