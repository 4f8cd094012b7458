//! What every binary shares on its command line and at its exit.
//!
//! * The options common to several exercises, each a clap [`Args`] group to `#[command(flatten)]`:
//!   [`IdOption`] (`--id N`, env `IPCLAB_ID`), [`DirOption`] (`--dir DIR`) and
//!   [`TimeoutOption`] (`--timeout SECS`).
//! * [`run`], the one `main` of every binary: it parses the options, runs the exercise and turns
//!   its outcome into the suite's exit status and error line:
//!
//! | outcome                                   | stderr                              | status      |
//! |-------------------------------------------|-------------------------------------|-------------|
//! | success                                   | —                                   | 0           |
//! | bad usage (clap)                          | clap's message                      | 2           |
//! | runtime error                             | `NAME: what failed (object): reason` | 1          |
//! | an error that carries its own status ([`Exit`]) | as it says                    | its own     |
//!
//! Errors that carry their own status are made where they happen: a termination signal while
//! waiting (128+signal, quiet), stdout closed early (`./sync | head -1`: 0, quiet), a program
//! that cannot be run (127). This module knows none of them by type.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{Args, FromArgMatches, Parser};

use nix::sys::signal::Signal;

use crate::error::{self, Exit};
use crate::sysv::{Key, ID_LIMIT};
use crate::trace::ClassroomOptions;
use crate::wait::Deadline;

/// `--id N`: which set of keys this run uses, so that several students (or tests) on one machine
/// do not meet in the same queue or segment.
#[derive(Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdOption {
    /// Lab ID (decimal or 0x-hex, below 0x1000): queue key 0x8000+ID, segment key 0x9000+ID
    #[arg(long = "id", value_name = "ID", env = "IPCLAB_ID", default_value = "0",
          value_parser = parse_id)]
    pub id: u32,
}

impl IdOption {
    /// The message queue key, `0x8000 + ID`.
    pub fn queue_key(&self) -> Key {
        Key::queue(self.id)
    }

    /// The shared memory segment key, `0x9000 + ID`.
    pub fn segment_key(&self) -> Key {
        Key::segment(self.id)
    }
}

/// Parses an ID in decimal or `0x` hex and checks it is below [`ID_LIMIT`].
pub fn parse_id(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(id) if id < ID_LIMIT => Ok(id),
        Ok(_) => Err(format!("must be below {ID_LIMIT:#x}")),
        Err(_) => Err("expected a number in decimal or 0x-hex".into()),
    }
}

/// `--dir DIR`: the directory where the FIFO programs keep `.fifo` and `.fifo<PID>`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DirOption {
    /// The directory of `.fifo` and the clients' `.fifo<PID>`.
    #[arg(
        long,
        value_name = "DIR",
        default_value = ".",
        help = "Directory of the FIFOs (.fifo and .fifo<PID>); server and client must use the same one"
    )]
    pub dir: PathBuf,
}

/// `--timeout SECS`: how long to wait for a peer before giving up (default: as long as it takes).
#[derive(Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutOption {
    /// Give up, cleaning up, after waiting SECS seconds for the peer (a reply, the next
    /// request) [default: wait forever]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds)]
    pub timeout: Option<Duration>,
}

impl TimeoutOption {
    /// The deadline this option sets, counted from now.
    pub fn deadline(&self) -> Deadline {
        Deadline::within(self.timeout)
    }
}

/// Parses a positive number of seconds such as `10` or `0.5`.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    match text.trim().parse::<f64>() {
        Ok(secs) if secs >= 0.001 && secs.is_finite() => Duration::try_from_secs_f64(secs)
            .map_err(|_| "too large a number of seconds".to_string()),
        Ok(secs) if secs > 0.0 => Err("expected at least 0.001 seconds".into()),
        _ => Err("expected a positive number of seconds".into()),
    }
}

pub use crate::out::program;

/// Prints a warning that does not stop the program: `NAME: message` on stderr (never panics,
/// even when stderr is closed or full).
pub fn warn(message: impl std::fmt::Display) {
    crate::out::error_line(format_args!("{message}"));
}

/// The `main` of every binary: parse the options of `A` (plus the classroom options of
/// [`crate::trace`], which every binary has), run `exercise`, and turn its result into an exit
/// status (see the table in the module docs).
///
/// ```no_run
/// use clap::Parser;
/// /// Says hello.
/// #[derive(Parser)]
/// struct Options {}
///
/// fn main() -> std::process::ExitCode {
///     ipclab::cli::run("hello", |_: Options| {
///         ipclab::outln!("Hello")?;
///         Ok(())
///     })
/// }
/// ```
pub fn run<A: Parser>(
    name: &'static str,
    exercise: impl FnOnce(A) -> anyhow::Result<()>,
) -> ExitCode {
    crate::out::set_program(name);
    let mut command = ClassroomOptions::augment_args(A::command().name(name).bin_name(name));
    let matches = command.get_matches_mut();
    let options = A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let classroom = ClassroomOptions::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(message) = classroom.enable() {
        command.error(ErrorKind::InvalidValue, message).exit(); // status 2
    }
    let outcome = exercise(options);
    ExitCode::from(status(outcome, crate::signals::caught()))
}

/// The exit status of a program whose exercise gave `outcome`, printing its error the suite's
/// way if it is worth printing.
///
/// A termination signal that was caught decides the status (128+signal, without a word), whatever
/// failed on the way out because of it — a call whose `--step` pause it ended (`EINTR`), a child
/// it stopped, the last cleanup — unless the error says otherwise itself ([`Exit`]: a server
/// that stops on Ctrl-C with status 0).
fn status(outcome: anyhow::Result<()>, caught: Option<Signal>) -> u8 {
    let signalled = caught.map(|signal| 128 + signal as i32 as u8);
    let error = match outcome {
        Ok(()) => return signalled.unwrap_or(0),
        Err(error) => error,
    };
    crate::out::end_partial_line();
    let exit = error::exit_of(&error);
    let quiet = exit.map_or(signalled.is_some(), Exit::is_quiet);
    if !quiet {
        crate::out::error_line(format_args!("{error:#}"));
    }
    match (exit, signalled) {
        (Some(exit), _) => exit.status(),
        (None, Some(status)) => status,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_signal_decides_the_status_unless_the_error_says_otherwise() {
        let failed = || Err(anyhow::anyhow!("open(x): EINTR"));
        assert_eq!(status(Ok(()), None), 0);
        assert_eq!(status(failed(), None), 1);
        assert_eq!(status(Ok(()), Some(Signal::SIGINT)), 130);
        assert_eq!(status(failed(), Some(Signal::SIGTERM)), 143);
        let stopped = Err(Exit::quiet(0, std::fmt::Error).into());
        assert_eq!(status(stopped, Some(Signal::SIGINT)), 0);
    }

    #[test]
    fn ids_are_decimal_or_hex_and_below_the_limit() {
        assert_eq!(parse_id("5"), Ok(5));
        assert_eq!(parse_id("0x1f"), Ok(31));
        assert_eq!(parse_id("0xfff"), Ok(0xfff));
        assert!(parse_id("0x1000").is_err());
        assert!(parse_id("4096").is_err());
        assert!(parse_id("-1").is_err());
        assert!(parse_id("five").is_err());
    }

    #[test]
    fn keys_are_the_c_headers_keys() {
        let id = IdOption { id: 5 };
        assert_eq!(id.queue_key(), Key::queue(5));
        assert_eq!(id.segment_key(), Key::segment(5));
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-3").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("1e-12").is_err(), "rounds to nothing");
    }
}
