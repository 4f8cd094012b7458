//! mymore — `ls -l | more` built by hand.
//!
//! Demonstrates what a shell does for a pipeline: `pipe`, then `fork`; the child puts the write
//! end on its stdout with `dup2` and becomes `ls -l` with `exec`; the parent puts the read end on
//! its stdin and becomes the pager. Neither program knows it is talking to a pipe. The pager
//! (`--pager`, `$PAGER`, else `more`) is a command line for `sh -c`, as git and man read it.
//!
//! System calls: pipe, fork, dup2, close, execv.
//! Run:     make mymore && ./mymore          (q quits the pager)
//!          ./mymore --pager cat -- ls -l /usr/bin
//! Observe: strace -f -e trace=pipe2,clone,dup2,close,execve ./mymore --pager cat

use std::ffi::OsString;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use ipclab::process::{self, ExecCheck, Program};
use ipclab::sys::fd::{close, dup2_stdin, dup2_stdout, open, pipe};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::unistd::ForkResult;

/// Pages the output of a command through a pipe, as the shell's `ls -l | more` does.
#[derive(Parser)]
#[command(version)]
struct Options {
    /// Pager that reads the listing on its stdin (a command line for `sh -c`)
    #[arg(long, value_name = "COMMAND", env = "PAGER", default_value = "more")]
    pager: String,

    /// Command whose output is paged [default: ls -l]
    #[arg(last = true, value_name = "COMMAND")]
    command: Vec<OsString>,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), page_through_pipe)
}

fn page_through_pipe(options: Options) -> anyhow::Result<()> {
    let command = match options.command.is_empty() {
        true => vec!["ls".into(), "-l".into()],
        false => options.command,
    };
    // Look both programs up first, so that a typo is reported before anything runs.
    let command = Program::find(&command)?;
    let pager = Program::shell_command(&options.pager)?; // sh -c "$PAGER", as git and man do

    let (read_end, write_end) = pipe().context("pipe")?;
    let exec_check = ExecCheck::new()?; // the child's exec closes it, or reports why it failed

    match process::fork()? {
        ForkResult::Child => {
            close(read_end).context("close")?;
            dup2_stdout(&write_end).context("dup2 (pipe onto stdout)")?;
            close(write_end).context("close")?; // stdout is the pipe now; the spare must go
            exec_check.exec(&command)
        }
        ForkResult::Parent { child } => {
            close(write_end).context("close")?; // else the pager never sees end-of-file
            exec_check.wait_for_exec(&command, child)?; // exit 127 here, before the pager
            dup2_stdin(&read_end).context("dup2 (pipe onto stdin)")?;
            close(read_end).context("close")?;
            let failed = pager.exec();
            // Only reached if exec failed: close the pipe so the command stops, and reap it.
            let null = open(Path::new("/dev/null"), OFlag::O_RDONLY, Mode::empty());
            dup2_stdin(null.context("open(/dev/null)")?).context("dup2 (/dev/null onto stdin)")?;
            let _ = process::wait_child(child);
            Err(failed)
        }
    }
}
