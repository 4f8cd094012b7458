//! ipcbench: every mechanism of the lecture measured side by side, between two processes.
//!
//! A package of its own, beside the lecture crate [`ipclab`] whose mechanisms it measures
//! through its public API (students building and reading the exercises do not see it). Only
//! what it alone uses lives here: System V semaphores ([`sem`], for `shm-sem`).
//!
//! For each mechanism ([`Mechanism`]) the parent makes the objects (pipes, FIFOs in a temporary
//! directory, a socket pair, a queue, a segment and semaphores, a mapping of `/dev/zero`),
//! forks, and then, talking to the child over the mechanism:
//! * **latency**: sends a 64-byte message that the child sends straight back, many times, and
//!   times each round trip (median and 99th percentile);
//! * **throughput**: sends chunks of each size one way as fast as it can while the child
//!   receives them at the same time, computes a checksum of every byte and compares it with
//!   the checksum of the chunk it expects ([`data`]). The clock runs from the parent's first
//!   `send` to the child's last check.
//!
//! `memcpy` is one process copying the same chunks (each copy checked too, outside the clock),
//! without any IPC: the limit the others are measured against.
//!
//! Orders and reports between the two processes go over pipes of their own ([`control`]). The
//! child owns nothing and dies with its parent; the parent notices at once when the child has
//! gone ([`peer`]). Every object has an owner in the parent that removes it on every path,
//! also when a termination signal ends a wait.

pub mod bare;
pub mod control;
pub mod data;
pub mod links;
pub mod output;
pub mod peer;
pub mod report;
pub mod sem;

use std::hint::black_box;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{ForkResult, UnlinkatFlags};

use ipclab::process;
use ipclab::rt::exit::Exit;
use ipclab::rt::signals;
use ipclab::rt::wait::{self, Deadline};
use ipclab::sys::fd as sys;
use ipclab::sys::mman::{self, MAP_SHARED, PROT_READ, PROT_WRITE};

use self::control::{Command, Control, End, Report};
use self::data::{Checksum, Pool, PATTERNS};
use self::links::{Link, QueueOwner, Shared, Side, Stream, Turns};
use self::peer::ChildGuard;
use self::sem::SemSet;

/// The mechanisms, in the order of the lecture, and `memcpy` last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Mechanism {
    /// pipe(2)
    Pipe,
    /// a named pipe (mkfifo) in a temporary directory
    Fifo,
    /// a UNIX-domain socket pair
    UnixSocket,
    /// a System V message queue (chunks above msgmax split into several messages)
    Msgq,
    /// System V shared memory, atomic counters, spin then yield (the sipc protocol)
    ShmSpin,
    /// System V shared memory with System V semaphores
    ShmSem,
    /// mmap of /dev/zero, shared across fork (the mipc way), atomic counters
    MmapDevzero,
    /// one process copying memory: the limit
    Memcpy,
}

impl Mechanism {
    /// Every mechanism, in the order of the table.
    pub const ALL: [Mechanism; 8] = [
        Mechanism::Pipe,
        Mechanism::Fifo,
        Mechanism::UnixSocket,
        Mechanism::Msgq,
        Mechanism::ShmSpin,
        Mechanism::ShmSem,
        Mechanism::MmapDevzero,
        Mechanism::Memcpy,
    ];

    /// The name in the output (and on the command line).
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Pipe => "pipe",
            Mechanism::Fifo => "fifo",
            Mechanism::UnixSocket => "unix-socket",
            Mechanism::Msgq => "msgq",
            Mechanism::ShmSpin => "shm-spin",
            Mechanism::ShmSem => "shm-sem",
            Mechanism::MmapDevzero => "mmap-devzero",
            Mechanism::Memcpy => "memcpy",
        }
    }
}

/// The size of a latency message.
pub const MESSAGE: usize = 64;
/// The chunk sizes measured by default.
pub const DEFAULT_SIZES: [usize; 3] = [4 << 10, 64 << 10, 1 << 20];
/// How much a throughput measurement moves by default (per chunk size).
pub const TOTAL_BYTES: u64 = 256 << 20;
/// How long a latency measurement runs by default.
pub const LATENCY_TIME: Duration = Duration::from_millis(500);
/// A default throughput measurement stops early rather than take longer than this (a very
/// slow mechanism, a very busy machine): its `total_bytes` says how much it moved.
pub const MAX_THROUGHPUT_TIME: Duration = Duration::from_secs(3);
/// How many bytes the `memcpy` row copies between two clock reads.
const COPY_GROUP_BYTES: usize = 256 << 10;
/// The untimed warm-up before each throughput measurement.
const WARM_UP_BYTES: usize = 8 << 20;
/// The untimed round trips before each latency measurement.
const WARM_UP_TRIPS: u64 = 200;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The mechanisms, in order.
    pub mechanisms: Vec<Mechanism>,
    /// The chunk sizes of the throughput measurements.
    pub sizes: Vec<usize>,
    /// How long each measurement runs; `None`: [`LATENCY_TIME`] for latency, [`TOTAL_BYTES`]
    /// per throughput measurement.
    pub duration: Option<Duration>,
    /// A fixed number of timed round trips instead (the bare-loop comparison).
    pub round_trips: Option<u64>,
    /// Whether to measure throughput at all.
    pub throughput: bool,
    /// The lab ID: queue key 0x8000+ID, segment and semaphore set key 0x9000+ID.
    pub id: u32,
    /// Test option: the sender flips one byte of the first chunk of each batch, after its
    /// checksum was taken (the receiver must notice).
    pub corrupt_one_byte: bool,
}

/// A latency measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Latency {
    pub round_trips: u64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// A throughput measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throughput {
    /// The chunk size.
    pub bytes: usize,
    pub total_bytes: u64,
    pub gb_per_s: f64,
    /// Whether every chunk (warm-up included) arrived with the checksum expected.
    pub verified: bool,
}

/// Everything measured of one mechanism.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    pub mechanism: Mechanism,
    pub latency: Latency,
    pub throughput: Vec<Throughput>,
}

/// What a measurement needs besides its link.
struct Context<'a> {
    settings: &'a Settings,
    pool: &'a Pool,
    /// Says what is being measured now (the progress line).
    note: &'a dyn Fn(&str),
}

impl Context<'_> {
    fn largest(&self) -> usize {
        self.settings
            .sizes
            .iter()
            .copied()
            .max()
            .unwrap_or(0)
            .max(MESSAGE)
    }
}

/// What a run says while it goes: what it is measuring now, and each mechanism it skips.
pub trait Observer {
    /// `mechanism` is being measured: `what` (`latency`, `throughput, 4 KiB chunks`…).
    fn note(&self, mechanism: Mechanism, what: &str);

    /// `mechanism` could not be measured (`error`, e.g. its key is in use); the others are.
    fn skipped(&self, mechanism: Mechanism, error: &anyhow::Error);
}

/// What a run measured (in the order of the mechanisms), and the mechanisms it skipped.
#[derive(Debug)]
pub struct Run<T> {
    pub results: Vec<T>,
    pub skipped: Vec<Mechanism>,
}

impl<T> Run<T> {
    /// Ok if every mechanism was measured; else the error that ends the program with status 1
    /// and no other word (the observer said why each was skipped, when it was).
    pub fn outcome(&self) -> anyhow::Result<()> {
        match self.skipped.is_empty() {
            true => Ok(()),
            false => Err(Exit::quiet(1, Skipped(self.skipped.clone())).into()),
        }
    }
}

/// The mechanisms a run could not measure.
#[derive(Debug)]
pub struct Skipped(pub Vec<Mechanism>);

impl std::fmt::Display for Skipped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|m| m.name()).collect();
        write!(f, "not measured: {}", names.join(", "))
    }
}

impl std::error::Error for Skipped {}

/// `measure(mechanism)` for each of `mechanisms` in turn. One that fails is skipped — the
/// `observer` says why, at once — and the others still run; a caught termination signal ends
/// the run.
fn each_mechanism<T>(
    mechanisms: &[Mechanism],
    observer: &dyn Observer,
    mut measure: impl FnMut(Mechanism) -> anyhow::Result<T>,
) -> anyhow::Result<Run<T>> {
    let mut run = Run {
        results: Vec::new(),
        skipped: Vec::new(),
    };
    for &mechanism in mechanisms {
        match measure(mechanism) {
            Ok(result) => run.results.push(result),
            Err(error) => {
                signals::check()?; // what failed may have failed because we are stopping
                observer.skipped(mechanism, &error);
                run.skipped.push(mechanism);
            }
        }
    }
    Ok(run)
}

/// Measures every mechanism of `settings`, telling `observer` what it is doing.
pub fn measure_all(settings: &Settings, observer: &dyn Observer) -> anyhow::Result<Run<Measured>> {
    signals::catch_termination()?;
    let largest = settings.sizes.iter().copied().max().unwrap_or(0);
    let pool = Pool::new(largest.max(MESSAGE));
    each_mechanism(&settings.mechanisms, observer, |mechanism| {
        let context = Context {
            settings,
            pool: &pool,
            note: &|what| observer.note(mechanism, what),
        };
        measure(mechanism, &context)
    })
}

/// Measures one mechanism.
fn measure(mechanism: Mechanism, context: &Context) -> anyhow::Result<Measured> {
    let largest = context.largest();
    let (latency, throughput) = match mechanism {
        Mechanism::Memcpy => memcpy(context)?,
        Mechanism::Pipe => {
            let (ping_in, ping_out) = sys::pipe().context("pipe")?;
            let (pong_in, pong_out) = sys::pipe().context("pipe")?;
            pair(context, move |side| {
                Ok(match side {
                    Side::Parent => Stream::new(pong_in, ping_out, largest),
                    Side::Child => Stream::new(ping_in, pong_out, largest),
                })
            })?
        }
        Mechanism::Fifo => {
            let fifos = FifoDir::create(context.settings.id)?;
            let (ping, pong) = (fifos.ping.clone(), fifos.pong.clone());
            pair(context, move |side| open_fifos(&ping, &pong, side, largest))?
        } // the FIFOs and their directory are removed here (in the parent only)
        Mechanism::UnixSocket => {
            let (parents, childs) = links::socketpair().context("socketpair")?;
            pair(context, move |side| {
                let socket = match side {
                    Side::Parent => parents,
                    Side::Child => childs,
                };
                let output = socket.try_clone().context("dup (socket)")?;
                Ok(Stream::new(socket, output, largest))
            })?
        }
        Mechanism::Msgq => {
            let queue = QueueOwner::create(context.settings.id)?;
            pair(context, |side| Ok(links::Queue::new(&queue, side)))?
        } // removed here (in the parent only)
        Mechanism::ShmSpin | Mechanism::ShmSem => {
            let owner =
                links::SegmentOwner::create(context.settings.id, links::area_size(largest))?;
            let attached = owner.segment.attach()?;
            let semaphores = match mechanism {
                Mechanism::ShmSem => Some(SemSet::create(context.settings.id, links::SEMAPHORES)?),
                _ => None,
            };
            let base = NonNull::new(attached.addr().cast_mut()).context("shmat gave NULL")?;
            let link = |side| {
                let turns = match &semaphores {
                    Some(set) => Turns::Semaphores(set),
                    None => Turns::Spin,
                };
                // SAFETY: a new segment of `area_size` bytes (IPC_EXCL, mode 0600: zero-filled,
                // this measurement's alone), attached by shmat at a page-aligned address before
                // fork; only the two processes use it, each through its side's link, while
                // `attached` lives (it outlives `pair`).
                Ok(unsafe { Shared::new(base, attached.size(), side, turns) })
            };
            pair(context, link)?
        } // detached, then the set and the segment removed (in the parent only)
        Mechanism::MmapDevzero => {
            let zero = sys::open(Path::new("/dev/zero"), OFlag::O_RDWR, Mode::empty())
                .context("open(/dev/zero)")?;
            let len = links::area_size(largest);
            let mapping = mman::mmap(len, PROT_READ | PROT_WRITE, MAP_SHARED, zero.as_fd(), 0)
                .context("mmap(/dev/zero)")?;
            drop(zero);
            let base = NonNull::new(mapping.addr().cast_mut().cast()).context("mmap gave NULL")?;
            let link = |side| {
                // SAFETY: a MAP_SHARED mapping of /dev/zero (zero-filled, page-aligned, readable
                // and writable, `area_size` bytes) made before fork, shared by the two processes
                // only, each through its side's link, while `mapping` lives (it outlives `pair`).
                Ok(unsafe { Shared::new(base, mapping.len(), side, Turns::Spin) })
            };
            pair(context, link)?
        }
    };
    Ok(Measured {
        mechanism,
        latency,
        throughput,
    })
}

/// Parses a chunk size (`--size`): a number of bytes, with K or M for KiB or MiB; 1 byte to
/// 64 MiB.
pub fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let (digits, factor) = match text.to_ascii_uppercase().strip_suffix(['K', 'M']) {
        Some(_) if text.ends_with(['k', 'K']) => (&text[..text.len() - 1], 1 << 10),
        Some(_) => (&text[..text.len() - 1], 1 << 20),
        None => (text, 1),
    };
    match digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
    {
        Some(bytes @ 1..=0x400_0000) => Ok(bytes),
        Some(_) => Err("must be between 1 byte and 64M".into()),
        None => Err("expected a number of bytes, optionally with K or M".into()),
    }
}

// ---- the two processes ----------------------------------------------------------------------

/// Forks; the child answers and receives through the link `make` gives it, the parent
/// measures through its own.
fn pair<L: Link>(
    context: &Context,
    make: impl FnOnce(Side) -> anyhow::Result<L>,
) -> anyhow::Result<(Latency, Vec<Throughput>)> {
    let control = Control::new()?;
    peer::watch_next_child()?;
    let parent = nix::unistd::getpid();
    match process::fork()? {
        ForkResult::Child => {
            let served = (|| {
                if !peer::die_with_parent(parent)? {
                    return Ok(());
                }
                peer::leave_signals_to_parent()?;
                let control = control.child();
                let mut link = make(Side::Child)?;
                control.ready()?;
                serve(&mut link, &control, context.pool)
            })();
            // End here: the objects on the stack are the parent's to remove.
            std::process::exit(match served {
                Ok(()) => 0,
                // The parent has stopped (and says why): nothing to add.
                Err(error) if peer_stopped(&error) => 1,
                Err(error) => {
                    ipclab::rt::out::warn(format_args!("receiving process: {error:#}"));
                    1
                }
            })
        }
        ForkResult::Parent { child } => {
            let child = ChildGuard::new(child);
            let control = control.parent();
            let mut link = make(Side::Parent)?;
            let measured = control
                .wait_ready() // a FIFO read before its writer has opened it reads end-of-file
                .and_then(|()| drive(&mut link, &control, context));
            let measured = match measured {
                Ok(measured) => measured,
                Err(error) => {
                    drop(child); // killed before our ends close: it has nothing to say
                                 // whatever failed, an object removed under us is why
                    return Err(link.removed().map_or(error, anyhow::Error::new));
                }
            };
            control.order(Command::Quit)?;
            drop(link);
            child.finish().context("the receiving process")?;
            Ok(measured)
        }
    }
}

/// Whether the child's `error` only echoes the parent: it has ended or closed its ends, an
/// object was removed under both (the parent says it), or it was about to stop on a signal
/// when it forked (the child inherits that it caught one).
fn peer_stopped(error: &anyhow::Error) -> bool {
    use ipclab::rt::exit::caused_by;
    caused_by::<links::PeerEnded>(error)
        || caused_by::<links::Removed>(error)
        || signals::is_interruption(error)
}

/// The parent's part: every measurement, through `link`.
fn drive<L: Link>(
    link: &mut L,
    control: &End,
    context: &Context,
) -> anyhow::Result<(Latency, Vec<Throughput>)> {
    (context.note)("latency");
    let latency = latency(context, |trips, samples| {
        control.order(Command::Echo {
            trips,
            bytes: MESSAGE as u64,
        })?;
        ping_pong(link, trips, context.pool, samples)
    })?;
    let all = each_size(context, |size| {
        throughput(size, context, |count| {
            link.begin_chunks(size)?;
            control.order(Command::Receive {
                size: size as u64,
                count,
            })?;
            let start = now_ns();
            send_chunks(link, size, count, context)?;
            let report = control.wait_report()?;
            Ok(Batch {
                ns: report.end_ns.saturating_sub(start),
                bad: report.bad,
            })
        })
    })?;
    Ok((latency, all))
}

/// The child's part: whatever the parent orders, until it says `Quit` or has gone.
fn serve<L: Link>(link: &mut L, control: &End, pool: &Pool) -> anyhow::Result<()> {
    let mut expected: (usize, Vec<u64>) = (0, Vec::new());
    loop {
        match control.next_order()? {
            Command::Quit => return Ok(()),
            Command::Echo { trips, bytes } => echo(link, trips, bytes as usize)?,
            Command::Receive { size, count } => {
                let size = size as usize;
                if expected.0 != size {
                    expected = (size, pool.checksums(size));
                }
                link.begin_chunks(size)?;
                let bad = receive_chunks(link, size, count, &expected.1)?;
                control.report(Report {
                    bad,
                    end_ns: now_ns(),
                })?;
            }
        }
    }
}

/// The parent's round trips: each message carries its number, and must come back unchanged.
fn ping_pong<L: Link>(
    link: &mut L,
    trips: u64,
    pool: &Pool,
    samples: &mut Vec<u32>,
) -> anyhow::Result<()> {
    let mut ping = [0u8; MESSAGE];
    ping.copy_from_slice(pool.chunk(1, MESSAGE));
    let mut pong = [0u8; MESSAGE];
    for n in 0..trips {
        signals::check()?;
        ping[..8].copy_from_slice(&n.to_le_bytes());
        let start = Instant::now();
        link.send(&ping)?;
        link.recv(&mut pong)?;
        let took = start.elapsed();
        if pong != ping {
            bail!("round trip {n}: the answer is not the message sent");
        }
        samples.push(took.as_nanos().min(u32::MAX.into()) as u32);
    }
    Ok(())
}

/// The child's answers: each message back as it came, after checking it is the next one.
fn echo<L: Link>(link: &mut L, trips: u64, bytes: usize) -> anyhow::Result<()> {
    let mut message = vec![0u8; bytes];
    for n in 0..trips {
        link.recv(&mut message)?;
        if message[..8] != n.to_le_bytes() {
            bail!("message {n} expected, another one came (a stale or lost message)");
        }
        link.send(&message)?;
    }
    Ok(())
}

/// The sender's chunks `0..count` (see [`Settings::corrupt_one_byte`]).
fn send_chunks<L: Link>(
    link: &mut L,
    size: usize,
    count: u64,
    context: &Context,
) -> anyhow::Result<()> {
    for n in 0..count {
        if n % 16 == 0 {
            signals::check()?;
        }
        let chunk = context.pool.chunk(n, size);
        if n == 0 && context.settings.corrupt_one_byte {
            let mut corrupted = chunk.to_vec();
            corrupted[size / 2] ^= 1;
            link.send_chunk(&corrupted)?;
        } else {
            link.send_chunk(chunk)?;
        }
    }
    Ok(())
}

/// The receiver's chunks: how many arrived with another checksum than expected.
fn receive_chunks<L: Link>(
    link: &mut L,
    size: usize,
    count: u64,
    expected: &[u64],
) -> anyhow::Result<u64> {
    let mut bad = 0;
    for n in 0..count {
        let mut sum = Checksum::new();
        link.recv_chunk(size, &mut sum)?;
        if sum.value() != expected[n as usize % PATTERNS] {
            bad += 1;
        }
    }
    Ok(bad)
}

// ---- measuring ------------------------------------------------------------------------------

/// A timed batch of chunks.
struct Batch {
    ns: u64,
    bad: u64,
}

/// A latency measurement made of `batch(trips, samples)` calls: an untimed warm-up, then as
/// many round trips as fit the time (or the number asked for).
fn latency(
    context: &Context,
    mut batch: impl FnMut(u64, &mut Vec<u32>) -> anyhow::Result<()>,
) -> anyhow::Result<Latency> {
    let mut samples = Vec::with_capacity(WARM_UP_TRIPS as usize);
    let started = Instant::now();
    batch(WARM_UP_TRIPS, &mut samples)?;
    let per_trip = started.elapsed().as_nanos() / u128::from(WARM_UP_TRIPS);
    let settings = context.settings;
    let trips = settings.round_trips.unwrap_or_else(|| {
        let time = settings.duration.unwrap_or(LATENCY_TIME).as_nanos();
        (time / per_trip.max(1)).clamp(100, 5_000_000) as u64
    });
    samples.clear();
    samples.reserve(trips as usize);
    batch(trips, &mut samples)?;
    Ok(percentiles(samples))
}

/// The median and 99th percentile of round trips that took `samples` nanoseconds each.
fn percentiles(mut samples: Vec<u32>) -> Latency {
    samples.sort_unstable();
    let percentile = |p: usize| match samples.len() {
        0 => f64::NAN,
        n => f64::from(samples[(n - 1) * p / 100]) / 1000.0,
    };
    Latency {
        round_trips: samples.len() as u64,
        p50_us: percentile(50),
        p99_us: percentile(99),
    }
}

/// A throughput measurement made of `batch(count)` calls: an untimed warm-up, then one timed
/// batch of [`TOTAL_BYTES`] (or as much as fits the duration).
fn throughput(
    size: usize,
    context: &Context,
    mut batch: impl FnMut(u64) -> anyhow::Result<Batch>,
) -> anyhow::Result<Throughput> {
    let warm_count = warm_up_chunks(size);
    let warm = batch(warm_count)?;
    let bytes_per_ns = (warm_count * size as u64) as f64 / warm.ns.max(1) as f64;
    let chunks_in = |time: Duration| (time.as_nanos() as f64 * bytes_per_ns / size as f64) as u64;
    let count = match context.settings.duration {
        Some(duration) => chunks_in(duration),
        None => TOTAL_BYTES
            .div_ceil(size as u64)
            .min(chunks_in(MAX_THROUGHPUT_TIME)),
    }
    .max(1);
    let main = batch(count)?;
    let total_bytes = count * size as u64;
    Ok(Throughput {
        bytes: size,
        total_bytes,
        gb_per_s: total_bytes as f64 / main.ns.max(1) as f64,
        verified: warm.bad == 0 && main.bad == 0,
    })
}

/// How many chunks of `size` bytes the untimed warm-up before a throughput measurement sends.
fn warm_up_chunks(size: usize) -> u64 {
    (WARM_UP_BYTES / size).clamp(2, 1024) as u64
}

/// `measure(size)` for each chunk size (none if throughput is not measured).
fn each_size(
    context: &Context,
    mut measure: impl FnMut(usize) -> anyhow::Result<Throughput>,
) -> anyhow::Result<Vec<Throughput>> {
    let sizes = match context.settings.throughput {
        true => context.settings.sizes.as_slice(),
        false => &[],
    };
    let mut all = Vec::new();
    for &size in sizes {
        (context.note)(&format!("throughput, {} chunks", report::size_name(size)));
        all.push(measure(size)?);
    }
    Ok(all)
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for both processes.
fn now_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    now.tv_sec() as u64 * 1_000_000_000 + now.tv_nsec() as u64
}

/// The `memcpy` row: a message copied there and back; chunks copied (timed), then checked (not
/// timed) — all in one process, without IPC: the limit the mechanisms are measured against.
fn memcpy(context: &Context) -> anyhow::Result<(Latency, Vec<Throughput>)> {
    (context.note)("latency");
    let latency = latency(context, |trips, samples| {
        let mut ping = [0u8; MESSAGE];
        ping.copy_from_slice(context.pool.chunk(1, MESSAGE));
        let (mut there, mut back) = ([0u8; MESSAGE], [0u8; MESSAGE]);
        for n in 0..trips {
            signals::check()?;
            ping[..8].copy_from_slice(&n.to_le_bytes());
            let start = Instant::now();
            there.copy_from_slice(black_box(&ping));
            back.copy_from_slice(black_box(&there));
            let took = start.elapsed();
            if black_box(&back) != &ping {
                bail!("round trip {n}: the copy differs");
            }
            samples.push(took.as_nanos().min(u32::MAX.into()) as u32);
        }
        Ok(())
    })?;
    let all = each_size(context, |size| {
        let expected = context.pool.checksums(size);
        // Copies go to a few buffers in turn, timed together (a clock read per 4 KiB copy
        // would cost a tenth of it), then checked outside the clock.
        let group = (COPY_GROUP_BYTES / size).max(1);
        let mut copies = vec![vec![0u8; size]; group];
        throughput(size, context, |count| {
            let (mut copying, mut bad, mut n) = (0, 0, 0);
            while n < count {
                signals::check()?;
                let batch = &mut copies[..group.min((count - n) as usize)];
                let start = now_ns();
                for (i, copy) in batch.iter_mut().enumerate() {
                    copy.copy_from_slice(context.pool.chunk(n + i as u64, size));
                }
                copying += now_ns() - start;
                for copy in black_box(&mut *batch).iter_mut() {
                    if n == 0 && context.settings.corrupt_one_byte {
                        copy[size / 2] ^= 1;
                    }
                    if Checksum::of(copy) != expected[n as usize % PATTERNS] {
                        bad += 1;
                    }
                    n += 1;
                }
            }
            Ok(Batch { ns: copying, bad })
        })
    })?;
    Ok((latency, all))
}

// ---- objects in the way, objects left behind -------------------------------------------------

/// What to do about the objects of lab `id` that an ipcbench killed with `kill -9` left
/// behind: `make ipcclean` removes every one (queue, segment, semaphore set, FIFO directory).
pub fn cleanup_hint(id: u32) -> String {
    format!("make ipcclean ID={id}")
}

/// The error of a `create` (`call`, e.g. `msgget(key 0x8000)`) that found `what` (`a queue`)
/// under its key already.
pub fn key_in_use(call: String, what: &str, id: u32) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} with this key exists already (another program's, or left by one killed with \
         kill -9: {}); {}",
        cleanup_hint(id),
        ipclab::sys::ipc::OTHER_ID_HINT
    )
    .context(call)
}

/// Says that removing an object (`call`, e.g. `msgctl(5, IPC_RMID)`) failed with `errno` and
/// how to remove it — unless it was gone already (`EINVAL`, `EIDRM`: removed under us, which
/// the measurement has reported).
pub fn warn_not_removed(call: &str, errno: Errno, id: u32) {
    if !matches!(errno, Errno::EINVAL | Errno::EIDRM) {
        ipclab::rt::out::warn(format_args!(
            "{call}: {errno}; remove it with: {}",
            cleanup_hint(id)
        ));
    }
}

// ---- FIFOs ----------------------------------------------------------------------------------

/// A temporary directory `ipcbench-<uid>-<id>-XXXXXX` (user ID, lab ID in decimal, random) in
/// `$TMPDIR`, else `/tmp`, with two FIFOs, `ping` and `pong`; removed, FIFOs and all, when
/// dropped. While it exists, this process holds an exclusive `flock` on it: a directory that
/// nobody holds locked is a leftover (of an ipcbench killed with `kill -9`), which
/// `make ipcclean ID=<id>` may remove. Exclusive, because a cleaner takes it only shared: the
/// kind of lock held tells a running ipcbench from a cleaner at work.
#[derive(Debug)]
struct FifoDir {
    dir: PathBuf,
    ping: PathBuf,
    pong: PathBuf,
    id: u32,
    _lock: nix::fcntl::Flock<OwnedFd>,
}

impl FifoDir {
    fn create(id: u32) -> anyhow::Result<FifoDir> {
        let uid = nix::unistd::getuid();
        let template = std::env::temp_dir().join(format!("ipcbench-{uid}-{id}-XXXXXX"));
        let dir = nix::unistd::mkdtemp(&template)
            .with_context(|| format!("mkdtemp({})", template.display()))?;
        let locked =
            sys::open(&dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).and_then(|fd| {
                let exclusive = nix::fcntl::FlockArg::LockExclusiveNonblock;
                nix::fcntl::Flock::lock(fd, exclusive).map_err(|(_, errno)| errno)
            });
        let lock = match locked {
            Ok(lock) => lock,
            Err(errno) => {
                let _ = rmdir(&dir);
                return Err(errno).with_context(|| format!("flock({})", dir.display()));
            }
        };
        let fifos = FifoDir {
            ping: dir.join("ping"),
            pong: dir.join("pong"),
            dir,
            id,
            _lock: lock,
        };
        for path in [&fifos.ping, &fifos.pong] {
            sys::mkfifo(path, Mode::from_bits_truncate(0o600))
                .with_context(|| format!("mkfifo({})", path.display()))?;
        }
        Ok(fifos)
    }
}

impl Drop for FifoDir {
    /// Removes the FIFOs and the directory while the lock is still held.
    fn drop(&mut self) {
        for path in [&self.ping, &self.pong] {
            let _ = sys::unlink(path);
        }
        if let Err(errno) = rmdir(&self.dir) {
            ipclab::rt::out::warn(format_args!(
                "rmdir({}): {errno}; remove it with: {}",
                self.dir.display(),
                cleanup_hint(self.id)
            ));
        }
    }
}

/// `rmdir(path)`.
fn rmdir(path: &Path) -> nix::Result<()> {
    nix::unistd::unlinkat(nix::fcntl::AT_FDCWD, path, UnlinkatFlags::RemoveDir)
}

/// Opens `side`'s ends of the two FIFOs: each process first opens the FIFO it reads (which
/// does not wait, with `O_NONBLOCK`), then the one it writes, as soon as its reader is there
/// (until then `open` fails with `ENXIO`). Then both ends block again, as a FIFO normally does.
fn open_fifos(ping: &Path, pong: &Path, side: Side, largest: usize) -> anyhow::Result<Stream> {
    let (input, output) = match side {
        Side::Parent => (pong, ping),
        Side::Child => (ping, pong),
    };
    let reader = sys::open(input, OFlag::O_RDONLY | OFlag::O_NONBLOCK, Mode::empty())
        .with_context(|| format!("open({})", input.display()))?;
    let writer =
        writer_end(output).with_context(|| format!("open({}) for writing", output.display()))?;
    for fd in [&reader, &writer] {
        blocking(fd)?;
    }
    Ok(Stream::new(reader, writer, largest))
}

/// `open(path, O_WRONLY|O_NONBLOCK)` of a FIFO, tried politely until its reader is there (or
/// 10 s have passed, a signal was caught or the child has ended).
fn writer_end(path: &Path) -> anyhow::Result<OwnedFd> {
    let deadline = Deadline::within(Some(Duration::from_secs(10)));
    let mut backoff = wait::Backoff::new();
    loop {
        match sys::open(path, OFlag::O_WRONLY | OFlag::O_NONBLOCK, Mode::empty()) {
            Ok(fd) => return Ok(fd),
            Err(Errno::ENXIO) if !peer::child_ended() => {
                signals::check()?;
                deadline.check()?;
                backoff.pause(deadline);
            }
            Err(Errno::ENXIO) => return Err(links::ended("open")),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Clears `O_NONBLOCK`.
fn blocking(fd: &OwnedFd) -> anyhow::Result<()> {
    nix::fcntl::fcntl(fd.as_fd(), FcntlArg::F_SETFL(OFlag::empty()))
        .context("fcntl(F_SETFL)")
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bytes_kib_or_mib_up_to_64_mib() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        for bad in ["0", "65M", "lots", "-1", "4G", ""] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
