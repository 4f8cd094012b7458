//! fifos — the server of a client–server pair over FIFOs (named pipes).
//!
//! Demonstrates: a FIFO is a pipe with a name in the file system, so unrelated processes can
//! open it. The server makes `.fifo` with `mkfifo` and reads 160-byte requests from it; each
//! names the client's own FIFO `.fifo<PID>`, which the server opens to write the reply. It also
//! opens `.fifo` for writing itself, so `read` never sees end-of-file between clients, and locks
//! it with `flock`, so that one server only serves a directory. Ctrl-C stops it, removing `.fifo`.
//!
//! System calls: mkfifo, open, flock, read, write, close, unlink.
//! Run:     make fifos fifoc, then ./fifos in one terminal and ./fifoc in another.
//! Observe: ls -l .fifo (type p)
//!          strace -e trace=mknodat,openat,flock,renameat2,read,write,unlink ./fifos

use std::process::ExitCode;

use clap::Parser;
use ipclab::cli::{DirOption, TimeoutOption};
use ipclab::fifo::ServerFifo;
use ipclab::rt::out::warn;
use ipclab::rt::signals;
use ipclab::{out, outln};

/// FIFO server: answers each request that fifoc sends through .fifo, until Ctrl-C.
#[derive(Parser)]
#[command(version)]
struct Options {
    #[command(flatten)]
    dir: DirOption,

    /// Stop by itself after replying to N requests [default: run until Ctrl-C]
    #[arg(long, value_name = "N")]
    count: Option<u64>,

    #[command(flatten)]
    timeout: TimeoutOption,
}

fn main() -> ExitCode {
    // Ctrl-C (or kill) is how a server stops, at any moment: exit 0, as in the C.
    ipclab::cli::run(env!("CARGO_BIN_NAME"), |options| {
        signals::stop_on_ctrl_c(serve(options))
    })
}

fn serve(options: Options) -> anyhow::Result<()> {
    signals::catch_termination()?; // so that Ctrl-C ends a wait and .fifo is removed
    let mut server = ServerFifo::create(&options.dir.dir)?; // mkfifo(".fifo", 0600), open, flock
    let reply = format!("This is a reply from {}.", std::process::id());
    let served = answer_requests(&mut server, &reply, &options);
    // Stopped while printing (stdout gone): the requests already read still get their reply.
    for request in server.take_unanswered() {
        if let Err(e) = server.send_reply(&request, &reply) {
            warn(format_args!("{e:#}; no reply sent"));
        }
    }
    served
} // `server` is dropped here: unlink(".fifo")

fn answer_requests(server: &mut ServerFifo, reply: &str, options: &Options) -> anyhow::Result<()> {
    let mut left = options.count.unwrap_or(u64::MAX);
    while left > 0 {
        // read(".fifo"), never more than the requests still to answer
        let request = match server.receive(left, options.timeout.deadline())? {
            Ok(request) => request,
            Err(bad) => {
                warn(format_args!("{bad:#}; skipped")); // the client's problem, never our end
                continue;
            }
        };
        let heading = out!("Received request: {}.....", request.shown());
        // open(".fifo<PID>"), write: even if printing failed, the client gets its reply
        let sent = server.send_reply(&request, reply);
        heading?;
        match sent {
            Ok(()) => {
                outln!("Replied.")?;
                if let Err(bad) = &request.text {
                    let from = &request.reply_fifo;
                    warn(format_args!("request({from}): {bad}; answered anyway"));
                }
                left -= 1;
            }
            Err(e) => {
                outln!()?; // end the line, then say why on stderr
                signals::check()?; // stopped there (Ctrl-C at its prompt): that is the news
                warn(format_args!("{e:#}; no reply sent"));
            }
        }
    }
    Ok(())
}
