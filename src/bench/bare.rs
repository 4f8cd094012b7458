//! Bare loops: the simplest ping-pong of a mechanism — one `write` and one `read` (or one
//! flag each way) per message, 64 bytes, no checks, no signal handling in the loop — so that
//! what ipcbench's own loop costs on top (its checks, its generic link, its wait that also
//! watches for signals and a child that has gone) can be seen next to it.
//!
//! Both are timed the same way (a clock read before and after each round trip), after the
//! same warm-up, and the comparison alternates them ([`compare`]), so a machine that is busier
//! for a moment slows both.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering::Acquire, Ordering::Release};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use nix::unistd::ForkResult;

use super::peer::{self, ChildGuard};
use super::{links, Context, Latency, Mechanism, Settings, MESSAGE};
use crate::layout::message::MsgBuf;
use crate::process;
use crate::rt::signals;
use crate::segment::Segment;
use crate::sys::fd as sys;
use crate::sys::ipc::Key;
use crate::sys::msg::{msgrcv, msgsnd, MsqId};

/// The mechanisms that have a bare loop.
pub const MECHANISMS: [Mechanism; 4] = [
    Mechanism::Pipe,
    Mechanism::Msgq,
    Mechanism::UnixSocket,
    Mechanism::ShmSpin,
];
/// The round trips of a bare loop (and of ipcbench's own loop next to it).
pub const ROUND_TRIPS: u64 = 20_000;
/// How many times each is run; the median p50 counts.
pub const ROUNDS: usize = 5;

/// A bare loop next to ipcbench's own latency measurement of the same mechanism.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub mechanism: Mechanism,
    /// The bare loop's run with the median p50.
    pub bare: Latency,
    /// ipcbench's run with the median p50.
    pub ipcbench: Latency,
    /// The most ipcbench's p50 may be, as a multiple of the bare loop's (the target).
    pub target: f64,
}

impl Comparison {
    /// ipcbench's p50 as a multiple of the bare loop's.
    pub fn ratio(&self) -> f64 {
        self.ipcbench.p50_us / self.bare.p50_us
    }
}

/// Runs, for each mechanism of `settings` that has a bare loop, the bare loop and ipcbench's
/// latency measurement in turn, [`ROUNDS`] times each, `trips` round trips each.
///
/// # Safety
/// It forks: the program must be single-threaded (see [`process::fork`]).
pub unsafe fn compare(
    settings: &Settings,
    trips: u64,
    note: &dyn Fn(Mechanism, &str),
) -> anyhow::Result<Vec<Comparison>> {
    signals::catch_termination()?;
    let own = Settings {
        round_trips: Some(trips),
        throughput: false,
        sizes: Vec::new(),
        ..settings.clone()
    };
    let pool = super::data::Pool::new(MESSAGE);
    let mut all = Vec::new();
    for &mechanism in settings
        .mechanisms
        .iter()
        .filter(|m| MECHANISMS.contains(m))
    {
        let (mut bare, mut ipcbench) = (Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            note(mechanism, &format!("bare loop {round}/{ROUNDS}"));
            // SAFETY: our caller guarantees a single-threaded program.
            let bare_run = unsafe { bare_loop(mechanism, trips, settings.id) };
            bare.push(bare_run.map_err(super::signal_first)?);
            let context = Context {
                settings: &own,
                pool: &pool,
                note: &|what| note(mechanism, &format!("ipcbench {what} {round}/{ROUNDS}")),
            };
            // SAFETY: as above.
            let own_run = unsafe { super::measure(mechanism, &context) };
            ipcbench.push(own_run.map_err(super::signal_first)?.latency);
        }
        all.push(Comparison {
            mechanism,
            bare: median(bare),
            ipcbench: median(ipcbench),
            target: if mechanism == Mechanism::ShmSpin {
                2.0
            } else {
                1.25
            },
        });
    }
    Ok(all)
}

/// The run with the median p50.
fn median(mut runs: Vec<Latency>) -> Latency {
    runs.sort_by(|a, b| a.p50_us.total_cmp(&b.p50_us));
    runs[runs.len() / 2]
}

/// One bare loop of `trips` timed round trips (after the same warm-up as ipcbench's).
///
/// # Safety
/// As for [`compare`].
unsafe fn bare_loop(mechanism: Mechanism, trips: u64, id: u32) -> anyhow::Result<Latency> {
    let total = trips + super::WARM_UP_TRIPS;
    let mut samples = Vec::with_capacity(total as usize);
    match mechanism {
        Mechanism::Pipe => {
            let (ping_in, ping_out) = sys::pipe().context("pipe")?;
            let (pong_in, pong_out) = sys::pipe().context("pipe")?;
            // SAFETY: as for this function.
            unsafe {
                streams(
                    [pong_in, ping_out],
                    [ping_in, pong_out],
                    total,
                    &mut samples,
                )
            }?
        }
        Mechanism::UnixSocket => {
            let (parents, childs) = links::socketpair().context("socketpair")?;
            let ends = |fd: OwnedFd| -> anyhow::Result<[OwnedFd; 2]> {
                let copy = fd.try_clone().context("dup")?;
                Ok([fd, copy])
            };
            // SAFETY: as for this function.
            unsafe { streams(ends(parents)?, ends(childs)?, total, &mut samples) }?
        }
        Mechanism::Msgq => {
            let queue = links::QueueOwner::create(Key::queue(id))?;
            // SAFETY: as for this function.
            unsafe { messages(queue.id(), total, &mut samples) }?
        }
        Mechanism::ShmSpin => {
            let segment = Segment::create(Key::segment(id), 4096)?;
            let attached = segment.attach()?;
            let base = NonNull::new(attached.addr().cast_mut()).context("shmat gave NULL")?;
            // SAFETY: a page made for this loop and attached before fork, used only by the two
            // processes, each as `flags` says, while `attached` lives (it outlives the call).
            unsafe { flags(base, total, &mut samples) }?
        }
        other => bail!("{} has no bare loop", other.name()),
    }
    samples.drain(..super::WARM_UP_TRIPS as usize);
    Ok(super::percentiles(samples))
}

/// Forks a child that runs `child` and exits: 0 if it returned true.
///
/// # Safety
/// As for [`compare`].
unsafe fn fork_child(child: impl FnOnce() -> bool) -> anyhow::Result<ChildGuard> {
    peer::watch_next_child()?;
    let parent = nix::unistd::getpid();
    // SAFETY: our caller guarantees a single-threaded program.
    match process::fork()? {
        ForkResult::Child => {
            let ready = peer::die_with_parent(parent).unwrap_or(false)
                && peer::leave_signals_to_parent().is_ok();
            std::process::exit(if ready && child() { 0 } else { 1 })
        }
        ForkResult::Parent { child } => Ok(ChildGuard::new(child)),
    }
}

/// What a loop that stopped says: a caught signal, or the child gone.
fn stopped(what: &str) -> anyhow::Error {
    match signals::check() {
        Err(interrupted) => interrupted.into(),
        Ok(()) => anyhow!("bare loop: {what}"),
    }
}

/// A call made again after `EINTR` (the child's `SIGCHLD` may interrupt a `read` whose data
/// has arrived), unless a termination signal was caught. A child that has ended closed its
/// ends: the call then returns end-of-file rather than wait.
fn again<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(nix::errno::Errno::EINTR) if signals::caught().is_none() => {}
            other => return other,
        }
    }
}

/// The bare loop over two byte streams: the parent reads `parent[0]` and writes `parent[1]`,
/// the child the same with `child`.
///
/// # Safety
/// As for [`compare`].
unsafe fn streams(
    parent: [OwnedFd; 2],
    child: [OwnedFd; 2],
    total: u64,
    samples: &mut Vec<u32>,
) -> anyhow::Result<()> {
    use nix::unistd::{read, write};
    let echo = move || {
        let mut buf = [0u8; MESSAGE];
        (0..total).all(|_| {
            read(&child[0], &mut buf) == Ok(MESSAGE) && write(&child[1], &buf) == Ok(MESSAGE)
        })
    };
    // SAFETY: as for this function.
    let guard = unsafe { fork_child(echo) }?;
    let message = [7u8; MESSAGE];
    let mut answer = [0u8; MESSAGE];
    for _ in 0..total {
        let start = Instant::now();
        match again(|| write(&parent[1], &message)) {
            Ok(MESSAGE) => {}
            other => return Err(stopped(&format!("write: {other:?}"))),
        }
        match again(|| read(&parent[0], &mut answer)) {
            Ok(MESSAGE) => {}
            other => return Err(stopped(&format!("read: {other:?}"))),
        }
        samples.push(start.elapsed().as_nanos() as u32);
    }
    guard.finish()
}

/// The bare loop over a message queue: the parent sends type 1 and receives type 2, the child
/// the other way round; both block in the calls.
///
/// # Safety
/// As for [`compare`].
unsafe fn messages(queue: MsqId, total: u64, samples: &mut Vec<u32>) -> anyhow::Result<()> {
    let echo = || {
        let mut buf = MsgBuf::<MESSAGE>::empty();
        (0..total).all(|_| {
            msgrcv(queue, &mut buf, MESSAGE, 1, 0) == Ok(MESSAGE) && {
                buf.mtype = 2;
                msgsnd(queue, &buf, MESSAGE, 0).is_ok()
            }
        })
    };
    // SAFETY: as for this function.
    let guard = unsafe { fork_child(echo) }?;
    let message = MsgBuf::<MESSAGE>::with_bytes(1, &[7; MESSAGE]).context("message")?;
    let mut answer = MsgBuf::<MESSAGE>::empty();
    for _ in 0..total {
        let start = Instant::now();
        links::again("msgsnd", |_| msgsnd(queue, &message, MESSAGE, 0))?;
        let nowait = |nowait: bool| if nowait { libc::IPC_NOWAIT } else { 0 };
        links::again("msgrcv", |no| {
            msgrcv(queue, &mut answer, MESSAGE, 2, nowait(no))
        })?;
        samples.push(start.elapsed().as_nanos() as u32);
    }
    guard.finish()
}

/// The bare loop over shared memory: a flag word at offset 0 (1: a message for the child,
/// 2: its answer), the message at offset 64; each side spins, then yields, until the flag is
/// its turn.
///
/// # Safety
/// `base` must be a page of shared memory, readable and writable, used by no one else while
/// the loop runs; and as for [`compare`].
unsafe fn flags(base: NonNull<u8>, total: u64, samples: &mut Vec<u32>) -> anyhow::Result<()> {
    // SAFETY: offset 0 of the page is 4-aligned, and only ever accessed atomically.
    let flag = unsafe { AtomicU32::from_ptr(base.as_ptr().cast()) };
    // SAFETY: offset 64 of the page holds the 64 bytes of the message.
    let text = unsafe { base.as_ptr().add(64) };
    let wait_for = |wanted: u32, parent: bool| {
        let mut spins = 0u32;
        while flag.load(Acquire) != wanted {
            if spins < 100 {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
                if parent && (peer::child_ended() || signals::caught().is_some()) {
                    return flag.load(Acquire) == wanted;
                }
            }
        }
        true
    };
    let echo = || {
        let mut buf = [0u8; MESSAGE];
        for _ in 0..total {
            wait_for(1, false);
            // SAFETY: the flag says the message is ours until we set 2 (Acquire above).
            unsafe {
                std::ptr::copy_nonoverlapping(text, buf.as_mut_ptr(), MESSAGE);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), text, MESSAGE);
            }
            flag.store(2, Release);
        }
        true
    };
    // SAFETY: as for this function.
    let guard = unsafe { fork_child(echo) }?;
    let message = [7u8; MESSAGE];
    let mut answer = [0u8; MESSAGE];
    for _ in 0..total {
        let start = Instant::now();
        // SAFETY: the message area is ours while the flag is not 1 (the child answered).
        unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), text, MESSAGE) };
        flag.store(1, Release);
        if !wait_for(2, true) {
            return Err(stopped("the child has ended"));
        }
        // SAFETY: the child has answered (Acquire) and waits for the next 1.
        unsafe { std::ptr::copy_nonoverlapping(text, answer.as_mut_ptr(), MESSAGE) };
        samples.push(start.elapsed().as_nanos() as u32);
    }
    guard.finish()
}
