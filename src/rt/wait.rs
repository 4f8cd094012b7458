//! Waiting for a peer: with a deadline, and never through a termination signal.
//!
//! Every blocking wait of the suite goes through here, so `--timeout` and Ctrl-C behave the same
//! in every program:
//! * [`poll`] waits until a file descriptor is ready, the [`Deadline`] passes ([`TimedOut`]), or
//!   a termination signal arrives ([`super::signals::Interrupted`]);
//! * [`spin_until`] waits for a change in shared memory, pausing politely ([`Backoff`]) between
//!   looks, under the same two limits.

use std::fmt;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::signals;

/// The moment a wait gives up, or never (the C programs' behaviour, the default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    at: Option<Instant>,
    allowed: Option<Duration>,
}

impl Deadline {
    /// No deadline: wait as long as it takes.
    pub const NEVER: Deadline = Deadline {
        at: None,
        allowed: None,
    };

    /// A deadline `allowed` from now; `None` means [`Deadline::NEVER`].
    pub fn within(allowed: Option<Duration>) -> Deadline {
        Deadline {
            // A deadline too far to represent (`--timeout 1e19`) is as good as none.
            at: allowed.and_then(|d| Instant::now().checked_add(d)),
            allowed,
        }
    }

    /// The earlier of `instant` and `deadline`, as a deadline (for waking up in between).
    fn at(instant: Instant, deadline: Deadline) -> Deadline {
        match deadline.at {
            Some(at) if at <= instant => deadline,
            _ => Deadline {
                at: Some(instant),
                allowed: None,
            },
        }
    }

    /// The time left, `None` if there is no deadline. Zero once it has passed.
    pub fn remaining(&self) -> Option<Duration> {
        self.at
            .map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn has_passed(&self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// Fails with [`TimedOut`] if the deadline has passed.
    pub fn check(&self) -> Result<(), TimedOut> {
        match self.allowed {
            Some(allowed) if self.has_passed() => Err(TimedOut(allowed)),
            _ => Ok(()),
        }
    }
}

/// A wait gave up at its deadline (`--timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut(pub Duration);

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "timed out after {} s (--timeout)", self.0.as_secs_f64())
    }
}

impl std::error::Error for TimedOut {}

/// How long a wait for a peer lasts before it says what it waits for (once, on stderr). It
/// decides nothing: the wait goes on as before.
pub const MOMENT: Duration = Duration::from_secs(2);

/// One wait for a peer, as every wait of the suite is made: it ends at its [`Deadline`]
/// ([`TimedOut`]) and as soon as a termination signal has been caught
/// ([`super::signals::Interrupted`]), and once it has lasted a [`MOMENT`] it says what it waits
/// for (`msgq2: waiting for the reply from pid 4711 (msgq1)`), if told ([`Wait::saying`]).
/// A wait for a file descriptor uses [`Wait::poll`]; a wait for a change no descriptor announces
/// (shared memory, a call made with `IPC_NOWAIT`) looks, then [`Wait::pause`]s politely.
pub struct Wait<'a> {
    deadline: Deadline,
    what: Option<&'a dyn Fn() -> String>,
    say_at: Option<Instant>,
    backoff: Backoff,
}

impl<'a> Wait<'a> {
    /// A wait that starts now and gives up at `deadline`.
    pub fn new(deadline: Deadline) -> Wait<'a> {
        Wait {
            deadline,
            what: None,
            say_at: None,
            backoff: Backoff::new(),
        }
    }

    /// Says `what()` on stderr (`waiting for …`) once the wait has lasted a [`MOMENT`].
    pub fn saying(mut self, what: &'a dyn Fn() -> String) -> Wait<'a> {
        self.what = Some(what);
        self.say_at = Instant::now().checked_add(MOMENT);
        self
    }

    /// When the wait gives up.
    pub fn deadline(&self) -> Deadline {
        self.deadline
    }

    /// Fails if a termination signal has been caught or the deadline has passed; says what it
    /// waits for when it is time.
    pub fn check(&mut self) -> anyhow::Result<()> {
        signals::check()?;
        self.deadline.check()?;
        if let (Some(at), Some(what)) = (self.say_at, self.what) {
            if Instant::now() >= at {
                self.say_at = None;
                super::out::notice(format_args!("waiting for {}", what()));
            }
        }
        Ok(())
    }

    /// The pause between two looks of a polling wait ([`Backoff`]).
    pub fn pause(&mut self) {
        self.backoff.pause(self.deadline);
    }

    /// Looks until `condition` holds — for a change another process makes in shared memory,
    /// where there is no descriptor to [`Wait::poll`] — pausing politely between looks.
    pub fn until(&mut self, mut condition: impl FnMut() -> bool) -> anyhow::Result<()> {
        while !condition() {
            self.check()?;
            self.pause();
        }
        Ok(())
    }

    /// Waits until one of `watched` (a descriptor and the events wanted) is ready, and returns
    /// the events that happened for each, in the same order. A signal that arrived just before
    /// the call still ends it (the self-pipe of [`signals`]).
    pub fn poll(
        &mut self,
        watched: &[(BorrowedFd<'_>, PollFlags)],
    ) -> anyhow::Result<Vec<PollFlags>> {
        loop {
            self.check()?;
            let until = match self.say_at.map(|at| Deadline::at(at, self.deadline)) {
                Some(sooner) => sooner,
                None => self.deadline,
            };
            let wake = signals::wake_fd();
            let mut fds: Vec<PollFd> = watched
                .iter()
                .map(|&(fd, events)| PollFd::new(fd, events))
                .chain(
                    wake.as_ref()
                        .map(|w| PollFd::new(w.as_fd(), PollFlags::POLLIN)),
                )
                .collect();
            match nix::poll::poll(&mut fds, poll_timeout(until)) {
                Ok(0) | Err(Errno::EINTR) => continue, // see check
                Ok(_) => {}
                Err(e) => return Err(anyhow::Error::new(e).context("poll")),
            }
            let ready: Vec<PollFlags> = fds[..watched.len()]
                .iter()
                .map(|fd| fd.revents().unwrap_or(PollFlags::empty()))
                .collect();
            if ready.iter().all(PollFlags::is_empty) {
                // Only the self-pipe woke us: the signal is recorded, check ends the wait.
                if let Some(wake) = &wake {
                    signals::drain(wake.as_fd());
                }
                continue;
            }
            return Ok(ready);
        }
    }
}

/// The errno with which a C call that waited would have ended where a wait of the suite ended
/// with `error`, for the trace of the call the wait belongs to: `EINTR` once a termination
/// signal is caught (the suite's handlers do not restart calls), `ETIMEDOUT` at the deadline
/// (C's calls have none: the errno that names it), else the errno the wait failed with.
pub fn errno_of(error: &anyhow::Error) -> Errno {
    match (signals::caught(), error.downcast_ref::<Errno>()) {
        (Some(_), _) => Errno::EINTR,
        _ if error.is::<TimedOut>() => Errno::ETIMEDOUT,
        (None, Some(errno)) => *errno,
        (None, None) => Errno::EIO,
    }
}

/// The `outcome` of a wait made as part of a traced call (a `read` that waits for its writer,
/// `crate::sys::fd::read_waiting`), as that call's result: a failed wait fails the call with
/// its errno ([`errno_of`]), and its error is kept in `kept`, for the caller to report.
pub fn in_call<T>(outcome: anyhow::Result<T>, kept: &mut anyhow::Result<()>) -> nix::Result<T> {
    outcome.map_err(|error| {
        let errno = errno_of(&error);
        *kept = Err(error);
        errno
    })
}

/// Waits until one of `watched` is ready (see [`Wait::poll`]), until `deadline`.
pub fn poll(
    watched: &[(BorrowedFd<'_>, PollFlags)],
    deadline: Deadline,
) -> anyhow::Result<Vec<PollFlags>> {
    Wait::new(deadline).poll(watched)
}

fn poll_timeout(deadline: Deadline) -> PollTimeout {
    match deadline.remaining() {
        None => PollTimeout::NONE,
        // Round up, so that a wait does not wake a little early and spin until the deadline.
        Some(left) => {
            let millis = left.as_nanos().div_ceil(1_000_000);
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// How many rounds a [`Backoff`] spins on the CPU, then how many it yields it, before it sleeps.
const SPIN_ROUNDS: u32 = 100;
const YIELD_ROUNDS: u32 = 100;
/// The first sleep of a [`Backoff`], the longest in its first second, and the longest after.
const FIRST_NAP: Duration = Duration::from_micros(10);
const QUICK_NAP: Duration = Duration::from_millis(1);
const LONG_NAP: Duration = Duration::from_millis(5);

/// The pauses of a polite busy wait, for a change that no descriptor announces (a flag in
/// shared memory, a message fetched with `IPC_NOWAIT`): a few rounds with the CPU's spin hint
/// (the answer often comes within microseconds), then rounds that `yield` the CPU (on one CPU
/// the peer can only answer when we let it run: an unyielding spin stalls for a whole scheduler
/// tick per hand-off), then sleeps from 10 µs doubling to 1 ms, and to 5 ms once the wait has
/// lasted a second (a peer that has not started yet costs almost nothing).
#[derive(Debug)]
pub struct Backoff {
    round: u32,
    nap: Duration,
    started: Instant,
}

impl Backoff {
    /// The pauses of a wait that starts now.
    pub fn new() -> Backoff {
        Backoff {
            round: 0,
            nap: FIRST_NAP,
            started: Instant::now(),
        }
    }

    /// The next pause, cut short at `deadline`.
    pub fn pause(&mut self, deadline: Deadline) {
        if self.round < SPIN_ROUNDS {
            std::hint::spin_loop();
        } else if self.round < SPIN_ROUNDS + YIELD_ROUNDS {
            std::thread::yield_now();
        } else {
            std::thread::sleep(
                deadline
                    .remaining()
                    .map_or(self.nap, |left| left.min(self.nap)),
            );
            let longest = match self.started.elapsed() < Duration::from_secs(1) {
                true => QUICK_NAP,
                false => LONG_NAP,
            };
            self.nap = (self.nap * 2).min(longest);
        }
        self.round = self.round.saturating_add(1);
    }
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff::new()
    }
}

/// Waits until `condition` holds (see [`Wait::until`]), until `deadline`.
pub fn spin_until(deadline: Deadline, condition: impl FnMut() -> bool) -> anyhow::Result<()> {
    Wait::new(deadline).until(condition)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn a_deadline_that_never_comes_never_passes() {
        assert_eq!(Deadline::NEVER.remaining(), None);
        assert!(Deadline::NEVER.check().is_ok());
        assert_eq!(Deadline::within(None), Deadline::NEVER);
    }

    #[test]
    fn poll_times_out_at_the_deadline() {
        let (reader, _writer) = nix::unistd::pipe().unwrap();
        let started = Instant::now();
        let deadline = Deadline::within(Some(Duration::from_millis(50)));
        let error = poll(&[(reader.as_fd(), PollFlags::POLLIN)], deadline).unwrap_err();
        assert!(error.is::<TimedOut>(), "{error:#}");
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn poll_reports_which_descriptor_is_ready() {
        let (idle, _idle_writer) = nix::unistd::pipe().unwrap();
        let (busy, busy_writer) = nix::unistd::pipe().unwrap();
        nix::unistd::write(&busy_writer, b"x").unwrap();
        let ready = poll(
            &[
                (idle.as_fd(), PollFlags::POLLIN),
                (busy.as_fd(), PollFlags::POLLIN),
            ],
            Deadline::within(Some(Duration::from_secs(10))),
        )
        .unwrap();
        assert_eq!(ready, vec![PollFlags::empty(), PollFlags::POLLIN]);
    }

    #[test]
    fn spin_until_returns_once_another_thread_sets_the_flag() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let flag = std::sync::Arc::new(AtomicBool::new(false));
        let setter = std::sync::Arc::clone(&flag);
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            setter.store(true, Ordering::Release);
        });
        let mut rounds = 0u32;
        spin_until(Deadline::within(Some(Duration::from_secs(10))), || {
            rounds += 1;
            flag.load(Ordering::Acquire)
        })
        .unwrap();
        thread.join().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(20));
        // It slept between rounds: 20 ms of spinning would take far more rounds.
        assert!(rounds < 10_000, "{rounds} rounds: it never slept");
    }

    #[test]
    fn spin_until_gives_up_at_the_deadline() {
        let started = Instant::now();
        let deadline = Deadline::within(Some(Duration::from_millis(30)));
        let error = spin_until(deadline, || false).unwrap_err();
        assert!(error.is::<TimedOut>(), "{error:#}");
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
