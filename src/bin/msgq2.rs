//! msgq2 — the client of a client–server pair over a System V message queue.
//!
//! Demonstrates: the client finds the server's queue by its key alone (0x8000 + --id) with
//! `msgget`, sends its request as a message of type 1 with `msgsnd`, and takes the reply — the
//! first message of type 2 — with `msgrcv`. Both directions share one queue: the type keeps
//! them apart. The client never creates the queue: without a server it fails at once.
//!
//! System calls: msgget, msgsnd, msgrcv (and msgctl IPC_STAT to check whose queue it is).
//! Run:     make msgq1 msgq2, then ./msgq1 in one terminal and ./msgq2 in another.
//! Observe: ./msgq2 --stat;  ./msgq2 --trace
//!          strace -e trace=msgget,msgsnd,msgrcv,msgctl ./msgq2

use std::process::ExitCode;

use clap::Parser;
use ipclab::cli::{IdOption, StatOption, TimeoutOption};
use ipclab::queue::{request_text, Message, Queue, REQUEST};
use ipclab::rt::out::warn;
use ipclab::rt::signals;
use ipclab::{out, outln};
use nix::unistd::getpid;

/// Message queue client: sends one request to msgq1 through the queue 0x8000+ID and prints the
/// reply.
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
    signals::catch_termination()?; // so that Ctrl-C ends the wait for the reply
    let (deadline, stat) = (options.timeout.deadline(), options.stat.printer());
    let queue = Queue::open(options.id.queue_key())?; // msgget(key, 0)
    stat.after(&queue, "msgget")?;

    // Any reply already waiting is an earlier exchange's, and msgrcv would take it first.
    let earlier_replies = queue.replies_waiting()?; // msgrcv(..., MSG_COPY): look, do not take
    let request = Message::new(REQUEST, &request_text(getpid()))?;
    queue.send(&request, deadline)?; // msgsnd(id, &msg, 128, ...)
    stat.after(&queue, "msgsnd")?;
    out!("Sent a request.....")?;

    let reply = queue.receive_reply(deadline)?; // msgrcv(id, &msg, 128, 2, ...)
    outln!(
        "Received reply: {}",
        reply.as_ref().unwrap_or_else(|bad| &bad.shown)
    )?;
    if earlier_replies > 0 {
        warn(format_args!(
            "{earlier_replies} reply(ies) already waited in queue {} before this request was \
             sent: the reply above may be an earlier exchange's, not the answer to this request",
            queue.key()
        ));
    }
    if let Err(bad) = reply {
        warn(format_args!("reply: {bad}")); // after the line, which stays the C's
    }
    stat.after(&queue, "msgrcv")
}
