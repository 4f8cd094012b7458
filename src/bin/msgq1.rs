//! msgq1 — the server of a client–server pair over a System V message queue.
//!
//! Demonstrates: a message queue lives in the kernel under a numeric key (0x8000 + --id), not
//! in the file system. The server makes it with `msgget`, takes one request — a message of
//! type 1 — with `msgrcv`, answers with a message of type 2 through the same queue, and removes
//! the queue with `msgctl(IPC_RMID)` once the client has taken the reply. Ctrl-C, or `kill`,
//! removes the queue too.
//!
//! System calls: msgget, msgrcv, msgsnd, msgctl.
//! Run:     make msgq1 msgq2, then ./msgq1 in one terminal and ./msgq2 in another.
//! Observe: ipcs -q while it waits;  ./msgq1 --stat;  ./msgq1 --trace
//!          strace -e trace=msgget,msgsnd,msgrcv,msgctl ./msgq1

use std::process::ExitCode;

use clap::Parser;
use ipclab::cli::{IdOption, StatOption, TimeoutOption};
use ipclab::queue::{reply_text, Message, Queue, Request, REPLY};
use ipclab::rt::out::warn;
use ipclab::rt::signals;
use ipclab::stat::Stat;
use ipclab::{out, outln};
use nix::unistd::getpid;

/// Message queue server: answers one request that msgq2 sends through the queue 0x8000+ID.
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
    signals::catch_termination()?; // so that Ctrl-C ends a wait and the queue is removed
    let (deadline, stat) = (options.timeout.deadline(), options.stat.printer());
    let queue = Queue::create(options.id.queue_key())?; // msgget(key, IPC_CREAT|IPC_EXCL|0600)
    stat.after(&queue, "msgget")?;

    // Type 1 only: a reply (type 2) waiting in the queue is not ours to take.
    let request = queue.receive_request(deadline)?; // msgrcv(id, &msg, 128, 1, ...)
    let received = stat.block(&queue, "msgrcv")?;
    let reply = Message::new(REPLY, &reply_text(getpid()))?;
    queue.send(&reply, deadline)?; // msgsnd(id, &msg, 128, ...): answer first, then print
    let replied = stat.block(&queue, "msgsnd")?;

    // Even if printing fails, the reply stays until it has been taken.
    let printed = report(&request, received, replied);

    // Removing the queue now would destroy the reply before the client has read it: wait
    // until it has been taken (msgctl IPC_STAT), not a fixed sleep(1).
    let taken = queue.wait_until_taken(request.sender, deadline)?;
    printed?;
    if let Some(warning) = taken? {
        warn(warning);
    }
    stat.after(&queue, "the reply was taken")
} // `queue` is dropped here: msgctl(id, IPC_RMID, NULL)

/// What the server prints once it has answered (`--stat` blocks taken before).
fn report(
    request: &Request,
    received: Option<String>,
    replied: Option<String>,
) -> anyhow::Result<()> {
    Stat::print(received)?;
    out!("Received request: {}.....", request.shown())?;
    outln!("Replied.")?;
    if let Err(bad) = &request.text {
        warn(format_args!("request: {bad}; answered anyway"));
    }
    Stat::print(replied)
}
