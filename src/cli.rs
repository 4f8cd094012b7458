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
//! | a program that cannot be run ([`CannotRun`]) | `NAME: cannot run 'X': reason`   | 127         |
//! | stopped by SIGINT/SIGTERM while waiting   | —                                   | 128+signal  |
//! | stdout closed early (`./sync \| head -1`) | —                                   | 0           |

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::OnceLock;
use std::time::Duration;

use clap::{Args, Parser};

use crate::out::StdoutClosed;
use crate::process::CannotRun;
use crate::signals::Interrupted;
use crate::sync::PeerGone;
use crate::wait::Deadline;

/// System V key of an exercise's message queue: `0x8000 + ID` (the C headers' `MY_ID`).
pub const QUEUE_KEY_BASE: i32 = 0x8000;
/// System V key of an exercise's shared memory segment: `0x9000 + ID`.
pub const SEGMENT_KEY_BASE: i32 = 0x9000;
/// IDs are below this, so queue keys and segment keys never overlap.
pub const ID_LIMIT: u32 = 0x1000;

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
    pub fn queue_key(&self) -> i32 {
        QUEUE_KEY_BASE + self.id as i32
    }

    /// The shared memory segment key, `0x9000 + ID`.
    pub fn segment_key(&self) -> i32 {
        SEGMENT_KEY_BASE + self.id as i32
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
        Ok(secs) if secs > 0.0 && secs.is_finite() => Duration::try_from_secs_f64(secs)
            .map_err(|_| "too large a number of seconds".to_string()),
        _ => Err("expected a positive number of seconds".into()),
    }
}

static PROGRAM: OnceLock<&'static str> = OnceLock::new();

/// The running binary's name, as errors and warnings show it.
pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("ipclab")
}

/// Prints a warning that does not stop the program: `NAME: message` on stderr.
pub fn warn(message: impl std::fmt::Display) {
    eprintln!("{}: {message}", program());
}

/// The `main` of every binary: parse the options of `A`, run `exercise`, and turn its result into
/// an exit status (see the table in the module docs).
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
    let _ = PROGRAM.set(name);
    let matches = A::command().name(name).bin_name(name).get_matches();
    let options = A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    match exercise(options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => ExitCode::from(report(&error)),
    }
}

/// Prints `error` the suite's way (if it is worth printing) and returns the exit status.
fn report(error: &anyhow::Error) -> u8 {
    crate::out::end_partial_line();
    if let Some(Interrupted(signal)) = error.chain().find_map(|e| e.downcast_ref()) {
        // The owned objects were removed on the way here; the shell knows why we stopped.
        return 128 + *signal as i32 as u8;
    }
    // Whoever read our output has gone (`./sync | head -1`): that is not an error. A peer that
    // vanished while our stdout is closed went away for the same reason.
    if caused_by::<StdoutClosed>(error)
        || (caused_by::<PeerGone>(error) && crate::out::stdout_is_closed())
    {
        return 0;
    }
    eprintln!("{}: {error:#}", program());
    if caused_by::<CannotRun>(error) {
        127
    } else {
        1
    }
}

/// Whether an error of type `E` is anywhere in `error`'s chain of causes.
pub(crate) fn caused_by<E: std::error::Error + 'static>(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| cause.is::<E>())
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(id.queue_key(), 0x8005);
        assert_eq!(id.segment_key(), 0x9005);
    }

    #[test]
    fn timeouts_are_positive_seconds() {
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-3").is_err());
        assert!(parse_seconds("inf").is_err());
        assert!(parse_seconds("soon").is_err());
    }
}
