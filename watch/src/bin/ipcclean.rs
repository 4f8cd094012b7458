//! ipcclean — remove what a killed program of one lab left behind, and only that.
//!
//! `kill -9` cannot be caught: a program killed so leaves its queue (0x8000+ID), its segment
//! (0x9000+ID), ipcbench's semaphore set and FIFO directory, the `.fifo*` files in DIR, a
//! server's lock file. A System V object stays until the machine reboots. This removes each of
//! them that no live process uses, and says so; one in use (a server still running, a C program
//! of the course) is left, naming who uses it (`ipcwatch::clean`).
//!
//! Run:     make ipcclean ID=5      (or ./ipcclean --id 5 --dir DIR)
//!          ./ipcclean --check      (remove nothing: exit 1 if anything of the lab exists)

use std::process::ExitCode;

use clap::Parser;
use ipclab::cli::{DirOption, IdOption};
use ipclab::outln;
use ipclab::rt::exit::Exit;
use ipclab::rt::out::warn;
use ipcwatch::clean;
use ipcwatch::lab::Lab;

/// Removes the leftovers of lab ID (queue, segment, semaphore set, FIFOs in DIR, lock files,
/// ipcbench's FIFO directory) that no live process uses, and says what it removed and left.
#[derive(Parser)]
#[command(version)]
struct Options {
    #[command(flatten)]
    id: IdOption,

    #[command(flatten)]
    dir: DirOption,

    /// Remove nothing: name each object of the lab on stderr, exit 1 if there is any
    #[arg(long)]
    check: bool,

    /// Print the lab's queue and segment keys (`0x8005 0x9005`) and exit: the one parser of a
    /// lab ID, for scripts
    #[arg(long, conflicts_with = "check")]
    keys: bool,
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), clean_up)
}

fn clean_up(options: Options) -> anyhow::Result<()> {
    if options.keys {
        return outln!("{}", clean::keys(options.id.id));
    }
    let lab = Lab {
        id: options.id.id,
        dir: options.dir.dir,
    };
    let found = clean::survey(&lab).map_err(anyhow::Error::msg)?;
    if options.check {
        for thing in &found {
            warn(format_args!("left behind: {}", thing.what));
        }
        return match found.is_empty() {
            true => Ok(()),
            false => Err(Exit::quiet(1, Left).into()),
        };
    }
    let mut left = 0;
    for thing in &found {
        match &thing.in_use {
            Some(why) => {
                left += 1;
                warn(format_args!("left {}: {why}", thing.what));
            }
            None => match thing.remove() {
                Ok(true) => outln!("removed {}", thing.what)?,
                Ok(false) => outln!("{} had gone meanwhile", thing.what)?,
                Err(why) => {
                    left += 1;
                    warn(format_args!("could not remove {}: {why}", thing.what));
                }
            },
        }
    }
    if found.is_empty() {
        outln!(
            "nothing of lab {} is left (dir {})",
            lab.id,
            lab.dir.display()
        )?;
    }
    match left {
        0 => Ok(()),
        _ => Err(Exit::quiet(1, Left).into()),
    }
}

/// Something of the lab stays (in use, or not removable): said already, line by line.
#[derive(Debug)]
struct Left;

impl std::fmt::Display for Left {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("something of the lab is left")
    }
}

impl std::error::Error for Left {}
