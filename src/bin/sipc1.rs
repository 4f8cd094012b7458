//! sipc1 — the server of a client–server pair over System V shared memory.
//!
//! Demonstrates: two unrelated processes share one segment, found by its key 0x9000+ID. Its
//! first 4 bytes are a flag (0 empty, 1 a request is waiting), the text follows at offset 4.
//! The server waits until the flag is 1, marks the segment for removal (IPC_RMID: the client
//! stays attached until it has read the reply), writes its reply over the request, sets the
//! flag back to 0 and only then prints what it got. Whichever program starts first makes the
//! segment. The hand-off is `ipclab::sipc::Sipc::put` and `take`: why the flag is an atomic.
//!
//! System calls: shmget, shmat, shmctl (IPC_STAT, IPC_RMID), shmdt.
//! Run:     make sipc1 sipc2, then ./sipc1 in one terminal and ./sipc2 in another.
//! Observe: ipcs -m (nattch);  strace -e trace=shmget,shmat,shmctl,shmdt ./sipc1

use std::process::ExitCode;

use clap::Parser;
use ipclab::cli::{IdOption, StatOption, TimeoutOption};
use ipclab::peer::ServerLock;
use ipclab::rt::out::warn;
use ipclab::rt::signals;
use ipclab::segment::Segment;
use ipclab::sipc::{self, SIPC1, SIPC_SIZE};
use ipclab::stat::Stat;
use ipclab::{out, outln};

/// Shared memory server: answers one request that sipc2 leaves in segment 0x9000+ID.
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
    ipclab::cli::run(env!("CARGO_BIN_NAME"), serve)
}

fn serve(options: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // so that Ctrl-C ends the wait and the segment is cleaned up
    let key = options.id.segment_key();
    let _alive = ServerLock::take(SIPC1, key)?; // a second sipc1 on this key is refused
    let segment = Segment::get_or_create(key, SIPC_SIZE)?; // shmget(key, 1024, IPC_CREAT|0600)
    let stat = options.stat.printer();
    stat.after(&segment, "shmget")?;
    let attached = segment.attach()?; // shmat(shmid, NULL, 0)
    stat.after(&segment, "shmat")?;
    let server = sipc::Server::new(&segment, &attached)?; // no other server waits on it

    let request = server.next_request(options.timeout.deadline())?; // until *flag == 1
    let came = stat.block(&segment, "the request came")?;
    segment.remove()?; // shmctl(shmid, IPC_RMID, NULL): the key is free; we both stay attached
    server.reply(&format!("This is a reply from {}.", std::process::id()))?; // then *flag = 0

    // Only now print: a stdout that blocks or fails must not hold back the client's reply.
    Stat::print(came)?;
    let shown = request.as_ref().unwrap_or_else(|bad| &bad.shown);
    out!("Received request: {shown}.....")?;
    outln!("Replied.")?;
    if let Err(bad) = request {
        warn(format_args!("request: {bad}; answered anyway"));
    }
    stat.after(&segment, "the reply")
} // `attached` is dropped here (shmdt): the segment is gone once the client detaches too
