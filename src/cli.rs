//! The command line, the top layer: the only module that knows clap.
//!
//! * The options common to several exercises, each a clap [`Args`] group to
//!   `#[command(flatten)]`: [`IdOption`] (`--id N`, env `IPCLAB_ID`), [`DirOption`] (`--dir DIR`),
//!   [`TimeoutOption`] (`--timeout SECS`), [`StatOption`] (`--stat`); and the classroom options
//!   every binary has ([`ClassroomOptions`]: `--trace`, `--step`, `--slow`).
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

use clap::builder::FalseyValueParser;
use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{Args, FromArgMatches, Parser};
use nix::sys::signal::Signal;

use crate::rt::exit::{self, Exit};
use crate::rt::wait::Deadline;
use crate::rt::{out, signals};
use crate::stat::Stat;
use crate::sys::ipc::{parse_lab_id, Key};
use crate::sys::trace::{step_at_name, Classroom, Refused};

/// `--id N`: which set of keys this run uses, so that several students (or tests) on one machine
/// do not meet in the same queue or segment.
#[derive(Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdOption {
    /// Lab ID (decimal or 0x-hex, below 0x1000): queue key 0x8000+ID, segment key 0x9000+ID
    #[arg(long = "id", value_name = "ID", env = "IPCLAB_ID", default_value = "0",
          value_parser = parse_lab_id)]
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

/// `--dir DIR`: the directory where the FIFO programs keep `.fifo` and `.fifo<PID>`.
#[derive(Args, Debug, Clone, PartialEq, Eq)]
pub struct DirOption {
    /// Directory of the FIFOs (`.fifo` and `.fifo<PID>`); server and client must use the same one
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub dir: PathBuf,
}

/// `--timeout SECS`: how long to wait for a peer before giving up (default: as long as it takes).
#[derive(Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeoutOption {
    /// Give up, cleaning up, after waiting SECS seconds for the peer (a reply, the next
    /// request) [default: wait forever]
    #[arg(long, value_name = "SECS", value_parser = parse_seconds, allow_negative_numbers = true)]
    pub timeout: Option<Duration>,
}

impl TimeoutOption {
    /// The deadline this option sets, counted from now.
    pub fn deadline(&self) -> Deadline {
        Deadline::within(self.timeout)
    }
}

/// `--stat`: the object's `msqid_ds` or `shmid_ds` after each step ([`crate::stat`]).
#[derive(Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatOption {
    /// Print the queue's or segment's IPC_STAT (msqid_ds, shmid_ds) after each step
    #[arg(long = "stat")]
    pub on: bool,
}

impl StatOption {
    /// The printer this option asks for.
    pub fn printer(&self) -> Stat {
        Stat::new(self.on)
    }
}

/// The longest `--slow` pause.
const SLOWEST: Duration = Duration::from_secs(60);

/// A number of seconds, as every option of the suite that takes one reads it (`10`, `0.5`,
/// `1e-3`): finite, not negative, and either zero — however it is written: `0`, `0.0`, `00` —
/// or at least a millisecond (less would round to nothing). What zero means is the option's.
/// A number too large to be a [`Duration`] is refused; a smaller but still huge one is
/// accepted: a deadline that far away is as good as none ([`Deadline::within`]).
fn seconds(text: &str) -> Result<Duration, String> {
    let not_a_number = || "expected a number of seconds".to_string();
    match text.trim().parse::<f64>().map_err(|_| not_a_number())? {
        secs if secs.is_nan() => Err(not_a_number()),
        secs if secs < 0.0 => {
            Err("expected a positive number of seconds, not a negative one".into())
        }
        0.0 => Ok(Duration::ZERO), // -0.0 too
        secs if secs.is_infinite() => {
            Err("expected a finite number of seconds (inf is not one)".into())
        }
        secs if secs < 0.001 => Err("expected at least 0.001 seconds".into()),
        secs => Duration::try_from_secs_f64(secs)
            .map_err(|_| "too large a number of seconds".to_string()),
    }
}

/// Parses a positive number of seconds such as `10` or `0.5`, as every option of the suite
/// reads seconds (at least a millisecond), zero refused: `--timeout`, and the waits of the
/// programs beside the lecture's.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    match seconds(text)? {
        secs if secs.is_zero() => Err("expected a positive number of seconds".into()),
        secs => Ok(secs),
    }
}

/// `--slow SECS`: seconds (see [`seconds`]), 0 for no slow motion, at most [`SLOWEST`]: a
/// pause made before every call that lasts longer looks like a hang, not slow motion.
fn parse_slow(text: &str) -> Result<Duration, String> {
    match seconds(text).map_err(|e| format!("{e} (or 0: no slow motion)"))? {
        slow if slow > SLOWEST => Err(format!(
            "at most {} seconds: the pause comes before every call, and a longer one looks \
             like a hang (--step waits for Enter instead)",
            SLOWEST.as_secs()
        )),
        slow => Ok(slow),
    }
}

// The classroom options every binary has (crate::sys::trace). A plain comment: a doc comment
// here would become the `about` text of every binary's --help.
#[derive(Args, Debug, Clone, Default, PartialEq)]
#[command(next_help_heading = "Classroom mode")]
pub struct ClassroomOptions {
    /// Print each lecture system call on stderr, in C notation with its real values
    #[arg(long, env = "IPCLAB_TRACE", value_parser = FalseyValueParser::new())]
    pub trace: bool,

    /// Show each lecture system call before it is made and wait for Enter on the terminal
    /// (c + Enter: run to the end)
    #[arg(long, env = "IPCLAB_STEP", value_parser = FalseyValueParser::new())]
    pub step: bool,

    /// Pause SECS seconds (at most 60) before each lecture system call, as slow motion, and
    /// trace it (0: no pause, no trace)
    #[arg(long, value_name = "SECS", env = "IPCLAB_SLOW", value_parser = parse_slow,
          allow_negative_numbers = true)]
    pub slow: Option<Duration>,

    /// Like --trace, each line after the time of day to the microsecond, and a call that waits
    /// also when it starts (IPCLAB_TRACE=time)
    #[arg(long)]
    pub trace_time: bool,

    /// Print the trace lines into PATH (another terminal such as /dev/pts/3, or a file) instead
    /// of stderr; implies --trace
    #[arg(long, value_name = "PATH", env = "IPCLAB_TRACE_TO")]
    pub trace_to: Option<PathBuf>,

    /// Stop only before these calls (and events such as *flag), e.g. msgrcv,shmctl; trace
    /// the others
    #[arg(
        long,
        value_name = "CALLS",
        env = "IPCLAB_STEP_AT",
        value_delimiter = ',',
        value_parser = step_at_name
    )]
    pub step_at: Vec<String>,
}

/// The environment variables the options read (each option's `env`): exported empty
/// (`export IPCLAB_ID=`) one means "not set". The tests' bench removes them from what it starts,
/// so that a variable exported in the tester's shell changes no test.
pub const ENVIRONMENT: [&str; 6] = [
    "IPCLAB_ID",
    "IPCLAB_TRACE",
    "IPCLAB_TRACE_TO",
    "IPCLAB_STEP",
    "IPCLAB_STEP_AT",
    "IPCLAB_SLOW",
];

/// The `main` of every binary: parse the options of `A` (plus [`ClassroomOptions`]), run
/// `exercise`, and turn its result into an exit status (see the table in the module docs).
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
    start(name);
    let mut command = ClassroomOptions::augment_args(A::command().name(name).bin_name(name));
    let matches = parse(&mut command);
    let options = A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let classroom = ClassroomOptions::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let time = classroom.trace_time || std::env::var("IPCLAB_TRACE").is_ok_and(|v| v == "time");
    let enabled = Classroom {
        trace: classroom.trace || time || classroom.trace_to.is_some(),
        time,
        trace_to: classroom.trace_to,
        step: classroom.step,
        step_at: classroom.step_at,
        slow: classroom.slow,
    }
    .enable();
    if let Err(refused) = enabled {
        let message = blamed(&command, &matches, refused);
        command.error(ErrorKind::InvalidValue, message).exit(); // status 2
    }
    let outcome = exercise(options);
    ExitCode::from(status(outcome, signals::caught()))
}

/// [`run`] for a tool that makes no lecture call (ipcwatch): no classroom options, and the
/// classroom variables exported in the shell mean nothing to it.
pub fn run_tool<A: Parser>(
    name: &'static str,
    tool: impl FnOnce(A) -> anyhow::Result<()>,
) -> ExitCode {
    start(name);
    let mut command = A::command().name(name).bin_name(name);
    let matches = parse(&mut command);
    let options = A::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    ExitCode::from(status(tool(options), signals::caught()))
}

/// What every program does first: it names itself for its messages, and takes an empty
/// variable (`export IPCLAB_ID=`) as unset, before its options are made from them.
fn start(name: &'static str) {
    out::set_program(name);
    for variable in ENVIRONMENT {
        if std::env::var_os(variable).is_some_and(|value| value.is_empty()) {
            std::env::remove_var(variable); // one thread at start: nobody reads it meanwhile
        }
    }
}

/// The command line, parsed by `command` (a usage error ends the program with status 2). A
/// bad value in a variable is blamed on the variable, not on the option the user did not type.
fn parse(command: &mut clap::Command) -> clap::ArgMatches {
    let typed: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let error = match command.try_get_matches_from_mut(&typed) {
        Ok(matches) => return matches,
        Err(error) => error,
    };
    let failed = error
        .get(clap::error::ContextKind::InvalidArg)
        .map(|arg| arg.to_string());
    let from_environment = command.get_arguments().find_map(|arg| {
        let (long, variable) = (arg.get_long()?, arg.get_env()?);
        let named = failed.as_deref()?.starts_with(&format!("--{long}"));
        let given = typed.iter().any(|word| {
            word.to_str()
                .is_some_and(|w| w == format!("--{long}") || w.starts_with(&format!("--{long}=")))
        });
        let value = std::env::var_os(variable)?;
        (named && !given).then(|| (variable.to_string_lossy().into_owned(), value))
    });
    match from_environment {
        Some((variable, value)) => {
            let why = std::error::Error::source(&error).map_or(String::new(), |e| format!(": {e}"));
            let value = value.to_string_lossy();
            let message = format!("{variable}={value:?} in the environment is not valid{why}");
            command.error(ErrorKind::InvalidValue, message).exit()
        }
        None => error.exit(),
    }
}

/// What to say when classroom mode is refused: its message, and for a stepping option that no
/// one typed — it came from a variable exported in the shell (`IPCLAB_STEP=1`) — which one.
fn blamed(command: &clap::Command, matches: &clap::ArgMatches, refused: Refused) -> String {
    let option = refused
        .stepping
        .and_then(|option| option.strip_prefix("--"));
    let arg = command
        .get_arguments()
        .find(|arg| option.is_some() && arg.get_long() == option);
    let from_environment = arg.filter(|arg| {
        matches.value_source(arg.get_id().as_str()) == Some(ValueSource::EnvVariable)
    });
    match from_environment.and_then(clap::Arg::get_env) {
        Some(variable) => format!(
            "{refused} ({} is set in the environment: unset it)",
            variable.to_string_lossy()
        ),
        None => refused.message,
    }
}

/// The exit status of a program whose exercise gave `outcome`, printing its error the suite's
/// way if it is worth printing.
///
/// A termination signal that was caught decides the status (128+signal, without a word), whatever
/// failed on the way out because of it — a call whose `--step` pause it ended (`EINTR`), a child
/// it stopped, a peer that went away on the same signal's path ([`Exit::echo`]), the last
/// cleanup — unless the error says otherwise itself ([`Exit`]: a server that stops on Ctrl-C
/// with status 0).
fn status(outcome: anyhow::Result<()>, caught: Option<Signal>) -> u8 {
    let signalled = caught.map(|signal| 128 + signal as i32 as u8);
    let error = match outcome {
        Ok(()) => return signalled.unwrap_or(0),
        Err(error) => error,
    };
    out::end_partial_line();
    let exit = exit::exit_of(&error).filter(|exit| !(exit.is_echo() && signalled.is_some()));
    let quiet = exit.map_or(signalled.is_some(), Exit::is_quiet);
    if !quiet {
        out::error_line(format_args!("{error:#}"));
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
        let peer_gone = || Err(Exit::echo(std::fmt::Error).into());
        assert_eq!(status(peer_gone(), None), 1);
        assert_eq!(status(peer_gone(), Some(Signal::SIGTERM)), 143);
    }

    #[test]
    fn keys_are_the_c_headers_keys() {
        let id = IdOption { id: 5 };
        assert_eq!(id.queue_key(), Key::queue(5));
        assert_eq!(id.segment_key(), Key::segment(5));
    }

    #[test]
    fn timeouts_are_positive_finite_seconds() {
        assert_eq!(parse_seconds("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_seconds("0.25"), Ok(Duration::from_millis(250)));
        assert!(parse_seconds("0").is_err());
        assert!(parse_seconds("-3").is_err());
        assert!(parse_seconds("inf").unwrap_err().contains("finite"));
        assert!(parse_seconds("soon").is_err());
        assert!(parse_seconds("1e-12").is_err(), "rounds to nothing");
        assert!(parse_seconds("-3").unwrap_err().contains("negative"));
        assert!(parse_seconds("nan").is_err());
        assert!(parse_seconds("1e300").unwrap_err().contains("too large"));
        assert!(parse_seconds("1e10").is_ok(), "a deadline as good as none");
    }

    #[test]
    fn slow_motion_is_off_at_any_zero_and_at_most_a_minute() {
        for zero in ["0", "0.0", "00", "0e0", " 0 ", "-0"] {
            assert_eq!(parse_slow(zero), Ok(Duration::ZERO), "{zero}");
        }
        assert_eq!(parse_slow("0.5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_slow("60"), Ok(Duration::from_secs(60)));
        assert!(parse_slow("").unwrap_err().contains("or 0"));
        assert!(parse_slow("-1").unwrap_err().contains("negative"));
        for huge in ["61", "1e10", "1e300"] {
            assert!(parse_slow(huge).is_err(), "{huge}");
        }
        assert!(parse_slow("1e10")
            .unwrap_err()
            .contains("at most 60 seconds"));
    }
}
