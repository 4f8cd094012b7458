//! Bare loops: the simplest ping-pong of a mechanism — one `write` and one `read` (or one
//! flag each way) per message, 64 bytes, no checks, no signal handling in the loop — so that
//! what ipcbench's own loop costs on top (its checks, its generic link, its wait that also
//! watches for signals and a child that has gone) can be seen next to it. For shm-spin also
//! the simplest ring of 1 MiB chunks (`ring`), next to ipcbench's throughput measurement.
//!
//! Both are timed the same way (a clock read before and after each round trip; for the ring,
//! from the sender's first copy to the receiver's last sum), after the same warm-up, and the
//! comparison alternates them ([`compare`]), so a machine that is busier for a moment slows
//! both.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{
    AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::time::Instant;

use anyhow::{anyhow, bail, Context as _};
use ipclab::layout::message::MsgBuf;
use ipclab::process;
use ipclab::rt::signals;
use ipclab::sys::fd as sys;
use ipclab::sys::msg::{msgrcv, msgsnd, MsqId};
use nix::unistd::ForkResult;

use crate::data::Pool;
use crate::peer::{self, ChildGuard};
use crate::{links, Context, Latency, Mechanism, Observer, Run, Settings, Throughput, MESSAGE};

/// The mechanisms that have a bare loop.
pub const MECHANISMS: [Mechanism; 4] = [
    Mechanism::Pipe,
    Mechanism::Msgq,
    Mechanism::UnixSocket,
    Mechanism::ShmSpin,
];
/// The round trips of a bare loop (and of ipcbench's own loop next to it).
pub const ROUND_TRIPS: u64 = 20_000;
/// How many times each is run; the median counts.
pub const ROUNDS: usize = 5;
/// The chunks of the bare ring and of ipcbench's shm-spin throughput next to it.
pub const RING_CHUNK: usize = 1 << 20;
/// The bare ring's slots.
pub const RING_SLOTS: usize = 4;

/// A bare loop's figures next to ipcbench's own measurement of the same mechanism: for each,
/// the run with the median figure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Figures {
    /// 64-byte round trips (p50: lower is better).
    Latency { bare: Latency, ipcbench: Latency },
    /// [`RING_CHUNK`]s one way (GB/s: higher is better).
    Throughput {
        bare: Throughput,
        ipcbench: Throughput,
    },
}

/// A bare loop next to ipcbench's own measurement, and the target for their ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    pub mechanism: Mechanism,
    pub figures: Figures,
    /// The most ipcbench's p50 may be, or the least its throughput may be, as a multiple of
    /// the bare loop's.
    pub target: f64,
}

impl Comparison {
    /// ipcbench's figure as a multiple of the bare loop's.
    pub fn ratio(&self) -> f64 {
        match self.figures {
            Figures::Latency { bare, ipcbench } => ipcbench.p50_us / bare.p50_us,
            Figures::Throughput { bare, ipcbench } => ipcbench.gb_per_s / bare.gb_per_s,
        }
    }

    /// Whether the ratio meets the target: at most it for a latency, at least for a throughput.
    pub fn met(&self) -> bool {
        match self.figures {
            Figures::Latency { .. } => self.ratio() <= self.target,
            Figures::Throughput { .. } => self.ratio() >= self.target,
        }
    }
}

/// Runs, for each mechanism of `settings` that has a bare loop, the bare loop and ipcbench's
/// latency measurement in turn, [`ROUNDS`] times each, `trips` round trips each — for shm-spin
/// also the bare `ring` and ipcbench's throughput of [`RING_CHUNK`]s — telling `observer`
/// what it is doing (a mechanism that fails is skipped, as in [`crate::measure_all`]).
pub fn compare(
    settings: &Settings,
    trips: u64,
    observer: &dyn Observer,
) -> anyhow::Result<Run<Comparison>> {
    signals::catch_termination()?;
    let pool = crate::data::Pool::new(RING_CHUNK);
    let mechanisms: Vec<Mechanism> = settings
        .mechanisms
        .iter()
        .copied()
        .filter(|m| MECHANISMS.contains(m))
        .collect();
    let compared = crate::each_mechanism(&mechanisms, observer, |mechanism| {
        let ring = mechanism == Mechanism::ShmSpin;
        let own = Settings {
            round_trips: Some(trips),
            throughput: ring,
            sizes: if ring { vec![RING_CHUNK] } else { Vec::new() },
            duration: None,
            ..settings.clone()
        };
        let (mut bare, mut bare_ring, mut ipcbench) = (Vec::new(), Vec::new(), Vec::new());
        for round in 1..=ROUNDS {
            observer.note(mechanism, &format!("bare loop {round}/{ROUNDS}"));
            bare.push(bare_loop(mechanism, trips, settings.id)?);
            if ring {
                observer.note(mechanism, &format!("bare ring {round}/{ROUNDS}"));
                bare_ring.push(ring_throughput(settings.id, &pool)?);
            }
            let context = Context {
                settings: &own,
                pool: &pool,
                note: &|what| {
                    observer.note(mechanism, &format!("ipcbench {what} {round}/{ROUNDS}"))
                },
            };
            ipcbench.push(crate::measure(mechanism, &context)?);
        }
        let latency = Figures::Latency {
            bare: median(bare, |l| l.p50_us),
            ipcbench: median(ipcbench.iter().map(|m| m.latency).collect(), |l| l.p50_us),
        };
        let target = if ring { 2.0 } else { 1.25 };
        let mut both = vec![Comparison {
            mechanism,
            figures: latency,
            target,
        }];
        if ring {
            let own = ipcbench.iter().flat_map(|m| m.throughput.clone()).collect();
            let throughput = Figures::Throughput {
                bare: median(bare_ring, |t| t.gb_per_s),
                ipcbench: median(own, |t| t.gb_per_s),
            };
            both.push(Comparison {
                mechanism,
                figures: throughput,
                target: 0.8,
            });
        }
        Ok(both)
    })?;
    Ok(Run {
        results: compared.results.into_iter().flatten().collect(),
        skipped: compared.skipped,
    })
}

/// The run with the median `figure`.
fn median<T: Copy>(mut runs: Vec<T>, figure: impl Fn(&T) -> f64) -> T {
    runs.sort_by(|a, b| figure(a).total_cmp(&figure(b)));
    runs[runs.len() / 2]
}

/// One bare loop of `trips` timed round trips (after the same warm-up as ipcbench's).
fn bare_loop(mechanism: Mechanism, trips: u64, id: u32) -> anyhow::Result<Latency> {
    let total = trips + crate::WARM_UP_TRIPS;
    let mut samples = Vec::with_capacity(total as usize);
    match mechanism {
        Mechanism::Pipe => {
            let (ping_in, ping_out) = sys::pipe().context("pipe")?;
            let (pong_in, pong_out) = sys::pipe().context("pipe")?;
            streams(
                [pong_in, ping_out],
                [ping_in, pong_out],
                total,
                &mut samples,
            )?
        }
        Mechanism::UnixSocket => {
            let (parents, childs) = links::socketpair().context("socketpair")?;
            let ends = |fd: OwnedFd| -> anyhow::Result<[OwnedFd; 2]> {
                let copy = fd.try_clone().context("dup")?;
                Ok([fd, copy])
            };
            streams(ends(parents)?, ends(childs)?, total, &mut samples)?
        }
        Mechanism::Msgq => {
            let queue = links::QueueOwner::create(id)?;
            messages(queue.id(), total, &mut samples)?
        }
        Mechanism::ShmSpin => {
            let owner = links::SegmentOwner::create(id, 4096)?;
            let attached = owner.segment.attach()?;
            let base = NonNull::new(attached.addr().cast_mut()).context("shmat gave NULL")?;
            // SAFETY: a new segment of one page (IPC_EXCL, mode 0600: zero-filled, this loop's
            // alone), attached by shmat at a page-aligned address for as long as `attached`
            // lives, which outlives the call; the child `flags` forks inherits the attachment.
            unsafe { flags(base, total, &mut samples) }?
        }
        other => bail!("{} has no bare loop", other.name()),
    }
    samples.drain(..crate::WARM_UP_TRIPS as usize);
    Ok(crate::percentiles(samples))
}

/// Forks a child that runs `child` and exits: 0 if it returned true.
fn fork_child(child: impl FnOnce() -> bool) -> anyhow::Result<ChildGuard> {
    peer::watch_next_child()?;
    let parent = nix::unistd::getpid();
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
fn streams(
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
    let guard = fork_child(echo)?;
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
fn messages(queue: MsqId, total: u64, samples: &mut Vec<u32>) -> anyhow::Result<()> {
    let echo = || {
        let mut buf = MsgBuf::<MESSAGE>::empty();
        (0..total).all(|_| {
            msgrcv(queue, &mut buf, MESSAGE, 1, 0) == Ok(MESSAGE) && {
                buf.mtype = 2;
                msgsnd(queue, &buf, MESSAGE, 0).is_ok()
            }
        })
    };
    let guard = fork_child(echo)?;
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
/// `base` must be a page of shared memory, page-aligned, readable and writable for the whole
/// call, zero-filled (the flag is 0), and touched by no process but this one and the child it
/// forks.
unsafe fn flags(base: NonNull<u8>, total: u64, samples: &mut Vec<u32>) -> anyhow::Result<()> {
    // SAFETY: offset 0 of the page is 4-aligned, valid for the whole call (the caller's
    // promise), and only ever accessed atomically, by both processes.
    let flag = unsafe { AtomicU32::from_ptr(base.as_ptr().cast()) };
    // SAFETY: offset 64 of the page holds the 64 bytes of the message.
    let text = unsafe { base.as_ptr().add(64) };
    let wait_for = |wanted: u32| peer::spin_then_yield(|| flag.load(Acquire) == wanted);
    let echo = || {
        let mut buf = [0u8; MESSAGE];
        for _ in 0..total {
            if !wait_for(1) {
                return false; // a signal the parent had caught before it forked
            }
            // SAFETY: the flag says the message is ours until we set 2 (Acquire above).
            unsafe {
                std::ptr::copy_nonoverlapping(text, buf.as_mut_ptr(), MESSAGE);
                std::ptr::copy_nonoverlapping(buf.as_ptr(), text, MESSAGE);
            }
            flag.store(2, Release);
        }
        true
    };
    let guard = fork_child(echo)?;
    let message = [7u8; MESSAGE];
    let mut answer = [0u8; MESSAGE];
    for _ in 0..total {
        let start = Instant::now();
        // SAFETY: the message area is ours while the flag is not 1 (the child answered).
        unsafe { std::ptr::copy_nonoverlapping(message.as_ptr(), text, MESSAGE) };
        flag.store(1, Release);
        if !wait_for(2) {
            return Err(stopped("the child has ended"));
        }
        // SAFETY: the child has answered (Acquire) and waits for the next 1.
        unsafe { std::ptr::copy_nonoverlapping(text, answer.as_mut_ptr(), MESSAGE) };
        samples.push(start.elapsed().as_nanos() as u32);
    }
    guard.finish()
}

/// One run of the bare ring ([`ring`]) in a System V segment like shm-spin's.
fn ring_throughput(id: u32, pool: &Pool) -> anyhow::Result<Throughput> {
    let owner = links::SegmentOwner::create(id, RING + RING_SLOTS * RING_CHUNK)?;
    let attached = owner.segment.attach()?;
    let base = NonNull::new(attached.addr().cast_mut()).context("shmat gave NULL")?;
    let count = crate::TOTAL_BYTES / RING_CHUNK as u64;
    // SAFETY: a new segment (IPC_EXCL, mode 0600: zero-filled, this loop's alone) of the size
    // `ring` needs, attached by shmat at a page-aligned address for as long as `attached`
    // lives, which outlives the call; the child `ring` forks inherits the attachment.
    unsafe { ring(base, pool.chunk(0, RING_CHUNK), count) }
}

/// Where the bare ring's slots start in its segment (a counter each before, on lines of their
/// own: head at 0, tail at 64, the receiver's end time at 128 and its sum at 192).
const RING: usize = 4096;

/// The bare ring — the simplest C ring: [`RING_SLOTS`] slots of [`RING_CHUNK`] bytes, a head
/// and a tail counter. The sender waits for a free slot, copies `source` into it (`memcpy`)
/// and moves the head; the receiver waits for the head, adds up every 8-byte word of the
/// slot where it lies and moves the tail. After a warm-up pass over the ring, the clock runs
/// from the sender's first copy of `count` chunks to the receiver's last sum (its end time
/// comes back through the segment); the sum must be that of as many sources as were sent.
///
/// # Safety
/// `base` must be shared memory, page-aligned, readable and writable for
/// `RING + RING_SLOTS * RING_CHUNK` bytes for the whole call, zero-filled (the counters are 0),
/// and touched by no process but this one and the child it forks.
unsafe fn ring(base: NonNull<u8>, source: &[u8], count: u64) -> anyhow::Result<Throughput> {
    anyhow::ensure!(
        source.len() == RING_CHUNK,
        "a source of {} bytes",
        source.len()
    );
    // SAFETY: the four counters are 8-aligned (the base is page-aligned), inside the area,
    // valid for the whole call, and only ever accessed atomically.
    let counter = |at: usize| unsafe { AtomicU64::from_ptr(base.as_ptr().add(at).cast()) };
    let (head, tail, end, sum) = (counter(0), counter(64), counter(128), counter(192));
    // SAFETY: slot `n % RING_SLOTS` lies inside the area.
    let slot = |n: u64| unsafe {
        base.as_ptr()
            .add(RING + (n as usize % RING_SLOTS) * RING_CHUNK)
    };
    let words = |bytes: &[u8]| -> u64 {
        let words = bytes
            .chunks_exact(8)
            .map(|w| u64::from_ne_bytes(w.try_into().unwrap_or_default()));
        words.fold(0, u64::wrapping_add)
    };
    let warm = crate::warm_up_chunks(RING_CHUNK);
    let total = warm + count;
    let receive = || {
        let mut total_sum = 0u64;
        for n in 0..total {
            if !peer::spin_then_yield(|| head.load(Acquire) > n) {
                return false; // a signal the parent had caught before it forked
            }
            // SAFETY: the sender published slot n (Acquire) and leaves it alone until the tail
            // has moved past it.
            let chunk = unsafe { std::slice::from_raw_parts(slot(n), RING_CHUNK) };
            total_sum = total_sum.wrapping_add(words(chunk));
            tail.store(n + 1, Release);
        }
        sum.store(total_sum, Relaxed);
        end.store(crate::now_ns(), Release);
        true
    };
    let guard = fork_child(receive)?;
    let send = |chunks: std::ops::Range<u64>| -> anyhow::Result<()> {
        for n in chunks {
            if !peer::spin_then_yield(|| n - tail.load(Acquire) < RING_SLOTS as u64) {
                return Err(stopped("the child has ended"));
            }
            // SAFETY: slot n is free (the receiver's tail is past its last use, Acquire) and
            // `source` is private memory of the same length.
            unsafe { std::ptr::copy_nonoverlapping(source.as_ptr(), slot(n), RING_CHUNK) };
            head.store(n + 1, Release);
        }
        Ok(())
    };
    send(0..warm)?;
    if !peer::spin_then_yield(|| tail.load(Acquire) == warm) {
        return Err(stopped("the child has ended"));
    }
    let start = crate::now_ns();
    send(warm..total)?;
    guard.finish()?;
    let ns = end.load(Acquire).saturating_sub(start);
    Ok(Throughput {
        bytes: RING_CHUNK,
        total_bytes: count * RING_CHUNK as u64,
        gb_per_s: (count * RING_CHUNK as u64) as f64 / ns.max(1) as f64,
        verified: sum.load(Relaxed) == words(source).wrapping_mul(total),
    })
}
