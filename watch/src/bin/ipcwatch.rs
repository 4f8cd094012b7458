//! ipcwatch — one lab's IPC objects, live, for the projector.
//!
//! Shows what `ipcs` cannot: only the objects of one lab ID — its message queue (0x8000+ID), its
//! shared memory segment (0x9000+ID) with the sipc flag and text, ipcbench's semaphore set, the
//! FIFOs in DIR — and who uses each: the last sender and receiver, the processes attached, who
//! holds a FIFO open, whether a server holds its lock, and what each process of the lab waits in
//! (`wchan`). Redrawn 5 times a second; a line that changed is bold.
//!
//! It only looks: it never attaches the segment (`shm_nattch` and `shm_lpid` stay as they are;
//! the bytes are read through `/proc/PID/mem` of a process that has it attached), never takes a
//! lock, never opens a FIFO.
//!
//! Run:     make ipcwatch && ./ipcwatch --id 5     (q or Ctrl-C quits; --once: one snapshot)
//! Observe: strace -f -e trace=shmat,flock,msgrcv ./ipcwatch --once  (none: it only reads /proc)

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::Parser;
use ipclab::cli::{DirOption, IdOption};
use ipclab::rt::clock::time_of_day;
use ipclab::rt::wait::{Deadline, TimedOut, Wait};

use ipclab::rt::{out, signals};
use ipcwatch::lab::Lab;
use ipcwatch::screen::{self, WIDTH};
use ipcwatch::terminal::{self, Keys};
use nix::poll::PollFlags;

/// Shows one lab's IPC objects and who uses them, redrawn in place: its message queue, its
/// shared memory segment (the sipc flag and text), ipcbench's semaphore set, the FIFOs in DIR,
/// the servers' locks and the lab's processes. It only looks. q or Ctrl-C quits.
#[derive(Parser)]
#[command(version)]
struct Options {
    #[command(flatten)]
    id: IdOption,

    #[command(flatten)]
    dir: DirOption,

    /// Look again every SECS seconds [default: 0.2]. With stdout not a terminal: print a
    /// snapshot each time, the lines that changed marked with *
    #[arg(long, value_name = "SECS", value_parser = ipclab::cli::parse_seconds,
          allow_negative_numbers = true)]
    interval: Option<Duration>,

    /// Print one snapshot and exit (what happens anyway when stdout is not a terminal and no
    /// --interval is given)
    #[arg(long, conflicts_with = "interval")]
    once: bool,
}

/// Five times a second: a step of a pair shows at once.
const INTERVAL: Duration = Duration::from_millis(200);

fn main() -> ExitCode {
    ipclab::cli::run_tool(env!("CARGO_BIN_NAME"), watch)
}

fn watch(options: Options) -> anyhow::Result<()> {
    // A termination signal ends a wait, and the terminal is given back. (Ctrl-C in the live
    // view is a key, not a SIGINT: terminal.rs.)
    signals::catch_termination()?;
    let lab = Lab {
        id: options.id.id,
        dir: options.dir.dir,
    };
    let terminal = std::io::stdout().is_terminal();
    let watched = match (options.once, terminal, options.interval) {
        (true, _, _) | (false, false, None) => once(&lab),
        (false, false, Some(interval)) => snapshots(&lab, interval),
        (false, true, interval) => live(&lab, interval.unwrap_or(INTERVAL)),
    };
    signals::stop_on_ctrl_c(watched) // a SIGINT or SIGTERM is a way to stop, as q: status 0
}

/// One snapshot on stdout.
fn once(lab: &Lab) -> anyhow::Result<()> {
    let mut lines = vec![screen::header(lab, &clock(), WIDTH)];
    lines.extend(screen::draw(lab, &lab.look(), WIDTH));
    ipclab::outln!("{}", lines.join("\n"))
}

/// A snapshot every `interval`, one after the other, each line that was not in the one before
/// marked with `* ` (for a log, or a terminal that is not one: `| cat`), until a signal.
fn snapshots(lab: &Lab, interval: Duration) -> anyhow::Result<()> {
    let mut previous: Option<Vec<String>> = None;
    loop {
        let lines = screen::draw(lab, &lab.look(), WIDTH - 2);
        let marks = screen::changed(previous.as_deref(), &lines);
        let mut text = screen::header(lab, &clock(), WIDTH) + "\n";
        for (line, marked) in lines.iter().zip(marks) {
            text.push_str(if marked { "* " } else { "  " });
            text.push_str(line);
            text.push('\n');
        }
        ipclab::outln!("{text}")?; // a blank line between two snapshots
        previous = Some(lines);
        pause(interval, None)?;
    }
}

/// The screen redrawn in place every `interval` until `q` (or Ctrl-C); the terminal as it was
/// afterwards, the last screen left above the shell's prompt.
fn live(lab: &Lab, interval: Duration) -> anyhow::Result<()> {
    let mut keys = Keys::take()?;
    let quit = if keys.is_some() {
        "q: quit"
    } else {
        "Ctrl-C: quit"
    };
    out::write_bytes(b"\x1b[H\x1b[2J")?;
    let watched = redraw_until_quit(lab, interval, keys.as_mut(), quit);
    drop(keys); // the terminal's settings back
    let _ = out::write_bytes(b"\n");
    watched
}

fn redraw_until_quit(
    lab: &Lab,
    interval: Duration,
    mut keys: Option<&mut Keys>,
    quit: &str,
) -> anyhow::Result<()> {
    let mut previous: Option<Vec<String>> = None;
    let mut last_size = None;
    let mut clear = false;
    loop {
        if let Some(keys) = &keys {
            if !keys.in_foreground() {
                // Sent to the background (Ctrl-Z, `bg`): drawing would cover the shell's lines,
                // and reading a key would stop us (SIGTTIN). Wait to be brought back (`fg`).
                clear = true; // then the whole screen is drawn again
                pause(interval, None)?;
                continue;
            }
            keys.keep();
        }
        let size = terminal::size(std::io::stdout().as_fd()).unwrap_or((24, WIDTH));
        // A resized terminal may have moved what was drawn; the shell drew over it meanwhile.
        if clear || last_size.is_some_and(|last| last != size) {
            out::write_bytes(b"\x1b[2J")?;
            clear = false;
        }
        last_size = Some(size);
        let width = size.1.min(WIDTH);
        let body = screen::draw(lab, &lab.look(), width);
        let mut marked = vec![false]; // the header's clock changes every second
        marked.extend(screen::changed(previous.as_deref(), &body));
        let mut lines = vec![screen::header(lab, &format!("{}  {quit}", clock()), width)];
        lines.extend(body.iter().cloned());
        out::write_bytes(terminal::redraw(&lines, &marked, size).as_bytes())?;
        previous = Some(body);
        if pause(interval, keys.as_deref_mut())? {
            return Ok(());
        }
    }
}

/// Waits `interval`, or until a key is pressed: whether it was one that quits (`q`), or the
/// terminal has gone.
fn pause(interval: Duration, keys: Option<&mut Keys>) -> anyhow::Result<bool> {
    let mut wait = Wait::new(Deadline::within(Some(interval)));
    let ready = match &keys {
        Some(keys) => wait.poll(&[(keys.fd(), PollFlags::POLLIN)]),
        None => wait.poll(&[]),
    };
    // Sent to the background during the wait, it leaves the keys to the shell: a read would
    // stop it (SIGTTIN).
    let keys = keys.filter(|keys| keys.in_foreground());
    match ready {
        Ok(_) => Ok(keys.is_some_and(|keys| match keys.read() {
            // 3: Ctrl-C, a key in the live view (terminal.rs)
            Some(pressed) => pressed.iter().any(|&key| matches!(key, b'q' | b'Q' | 3)),
            None => true, // the terminal has gone: nobody watches
        })),
        Err(error) if error.is::<TimedOut>() => Ok(false),
        Err(error) => Err(error),
    }
}

/// The time of day, `10:31:22`.
fn clock() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    time_of_day(libc::time_t::try_from(now.as_secs()).unwrap_or(libc::time_t::MAX))
}
