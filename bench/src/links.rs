//! The mechanisms, as one process's end of a link to the other: a 64-byte message each way
//! (latency), or a stream of chunks one way (throughput).
//!
//! | link          | send                                   | receive                               |
//! |---------------|----------------------------------------|---------------------------------------|
//! | [`Stream`]    | `write` (pipe, FIFO, UNIX socket)       | `read` into a buffer, then the checksum |
//! | [`Queue`]     | `msgsnd` of pieces of at most msgmax   | `msgrcv`, checksum of each piece      |
//! | [`Shared`]    | `memcpy` into shared memory, then a flag (spin, then yield) or a `semop` V | a flag or a `semop` P, checksum read in place |
//!
//! Every wait ends when a termination signal is caught (`EINTR`, or the check in a spin) or
//! when the child has ended (`SIGCHLD`, see [`crate::peer`]): the parent never waits for a
//! child that is gone. A child never waits for a parent that is gone: it dies with it.

use std::ffi::c_long;
use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering::Acquire, Ordering::Release};

use anyhow::Context;
use ipclab::layout::message::MsgBuf;
use ipclab::peer::{Server, ServerLock};
use ipclab::rt::signals;
use ipclab::segment::Segment;
use ipclab::sys::fd as sys;
use ipclab::sys::ipc::{self as sysv, Key};
use ipclab::sys::msg::{self, MsqId};
use nix::errno::Errno;

use crate::data::Checksum;
use crate::peer;
use crate::sem::{self, sembuf, SemSet};

/// Which process a link end belongs to: the parent sends pings and chunks, the child answers
/// and receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Parent,
    Child,
}

/// One process's end of a mechanism.
pub trait Link {
    /// Sends one message (a ping or its echo).
    fn send(&mut self, message: &[u8]) -> anyhow::Result<()>;

    /// Receives one message of exactly `buf.len()` bytes.
    fn recv(&mut self, buf: &mut [u8]) -> anyhow::Result<()>;

    /// Before a batch of chunks of `size` bytes: the sender's side before it tells the receiver,
    /// the receiver's when told.
    fn begin_chunks(&mut self, _size: usize) -> anyhow::Result<()> {
        Ok(())
    }

    /// Sends one chunk.
    fn send_chunk(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        self.send(chunk)
    }

    /// Receives one chunk of `size` bytes, adding every byte to `sum`.
    fn recv_chunk(&mut self, size: usize, sum: &mut Checksum) -> anyhow::Result<()>;

    /// Whether the System V object the link goes through has been removed (by someone else,
    /// while in use): why whatever failed failed. `None` if it is there, or there is none.
    fn removed(&self) -> Option<Removed> {
        None
    }
}

/// What a wait that ends without its data says: a caught signal (quiet, 128+signal), or the
/// peer gone.
pub(super) fn ended(what: &str) -> anyhow::Error {
    match signals::check() {
        Err(interrupted) => interrupted.into(),
        Ok(()) => anyhow::Error::new(PeerEnded).context(what.to_string()),
    }
}

/// The other process of a measurement has ended (or closed its ends) before this wait got
/// what it waited for.
#[derive(Debug)]
pub struct PeerEnded;

impl std::fmt::Display for PeerEnded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the other process has ended")
    }
}

impl std::error::Error for PeerEnded {}

/// The System V object a link goes through (`"queue"`, `"semaphore set"`) was removed by
/// someone else while the run used it (`ipcrm`).
#[derive(Debug)]
pub struct Removed(pub &'static str);

impl std::fmt::Display for Removed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the {} was removed while in use", self.0)
    }
}

impl std::error::Error for Removed {}

/// Makes a blocking call `call(nowait)`, again after `EINTR` (a `SIGCHLD` may interrupt a call
/// whose data has arrived already), until a termination signal is caught. Once the child has
/// ended, one last try with `nowait` (what it sent before it ended is still there): a
/// System V call then must not wait (`IPC_NOWAIT`); a `read` returns end-of-file anyway.
pub(super) fn again<T>(
    what: &str,
    mut call: impl FnMut(bool) -> nix::Result<T>,
) -> anyhow::Result<T> {
    // A child that ended before this call started interrupts nothing: look first. (What is
    // left is the few instructions between this look and the call entering the kernel.)
    let mut nowait = peer::child_ended();
    loop {
        match call(nowait) {
            Err(Errno::EINTR) if signals::caught().is_some() => return Err(ended(what)),
            Err(Errno::EINTR) => nowait = peer::child_ended(),
            Err(Errno::EAGAIN | Errno::ENOMSG) if nowait => return Err(ended(what)),
            Err(Errno::EIDRM | Errno::EINVAL) => {
                return Err(anyhow::Error::new(Removed("object")).context(what.to_string()))
            }
            Err(Errno::EPIPE) => return Err(ended(what)),
            other => return other.with_context(|| what.to_string()),
        }
    }
}

// ---- pipes, FIFOs and sockets ---------------------------------------------------------------

/// A byte stream each way: a pipe or FIFO per direction, or both directions on one socket.
#[derive(Debug)]
pub struct Stream {
    input: OwnedFd,
    output: OwnedFd,
    buffer: Vec<u8>,
}

impl Stream {
    /// A stream reading `input` and writing `output`, for chunks of up to `largest` bytes.
    pub fn new(input: OwnedFd, output: OwnedFd, largest: usize) -> Stream {
        Stream {
            input,
            output,
            buffer: vec![0; largest],
        }
    }

    /// Reads until `buf` is full; the peer closing its end first is an error.
    fn read_exact(input: &OwnedFd, buf: &mut [u8]) -> anyhow::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            match again("read", |_| sys::read(input.as_fd(), &mut buf[done..]))? {
                0 => return Err(ended("read")),
                n => done += n,
            }
        }
        Ok(())
    }
}

impl Link for Stream {
    fn send(&mut self, mut message: &[u8]) -> anyhow::Result<()> {
        while !message.is_empty() {
            let n = again("write", |_| sys::write(self.output.as_fd(), message))?;
            message = &message[n..];
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        Stream::read_exact(&self.input, buf)
    }

    fn recv_chunk(&mut self, size: usize, sum: &mut Checksum) -> anyhow::Result<()> {
        let chunk = &mut self.buffer[..size];
        Stream::read_exact(&self.input, chunk)?;
        sum.update(chunk);
        Ok(())
    }
}

/// `socketpair(AF_UNIX, SOCK_STREAM, 0, sv)`: two connected sockets, each readable and
/// writable (traced like the lecture's calls).
pub fn socketpair() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType};
    use std::os::fd::AsRawFd;
    ipclab::sys::trace::call_shown(
        || "socketpair(AF_UNIX, SOCK_STREAM, 0, sv)".into(),
        || {
            nix::sys::socket::socketpair(
                AddressFamily::Unix,
                SockType::Stream,
                None,
                SockFlag::SOCK_CLOEXEC,
            )
        },
        |(a, b)| {
            format!(
                "socketpair(AF_UNIX, SOCK_STREAM, 0, [{}, {}]) = 0",
                a.as_raw_fd(),
                b.as_raw_fd()
            )
        },
        false,
    )
}

// ---- shared memory --------------------------------------------------------------------------

/// Where things live in the shared area (offsets in bytes). Each counter has a cache line of
/// its own, so that the two processes do not slow each other down by writing next to what the
/// other reads; the ring of chunk slots starts on a page.
mod layout {
    pub const PING_SEQ: usize = 0;
    pub const PONG_SEQ: usize = 64;
    pub const HEAD: usize = 128;
    pub const TAIL: usize = 192;
    pub const PING: usize = 256;
    pub const PONG: usize = 512;
    pub const MESSAGE_MAX: usize = 256;
    pub const RING: usize = 4096;
}

/// The most slots a ring has (small chunks: more slots mean fewer waits).
const MAX_SLOTS: usize = 256;
/// The ring's size when chunks are small: a few MiB, like a pipe's buffer but larger.
pub const RING_BYTES: usize = 4 << 20;

/// How many bytes of shared memory a [`Shared`] link needs for chunks of up to `largest` bytes:
/// room for at least two chunks, so the sender fills one while the receiver reads the other.
pub fn area_size(largest: usize) -> usize {
    layout::RING + RING_BYTES.max(2 * largest)
}

/// How the two processes take turns in the shared area.
#[derive(Debug)]
pub enum Turns<'a> {
    /// Counters in the area, and waits that spin, then yield (the sipc protocol).
    Spin,
    /// System V semaphores: ping, pong, slots full, slots empty.
    Semaphores(&'a SemSet),
}

/// The semaphores of [`Turns::Semaphores`].
pub const SEM_PING: u16 = 0;
pub const SEM_PONG: u16 = 1;
pub const SEM_FULL: u16 = 2;
pub const SEM_EMPTY: u16 = 3;
/// How many semaphores the set has.
pub const SEMAPHORES: u16 = 4;

/// One process's end of a link through shared memory (a System V segment, or an mmap of
/// `/dev/zero`): the message goes with one `memcpy` into the area; the receiver checks chunks
/// where they lie, without copying them out.
#[derive(Debug)]
pub struct Shared<'a> {
    base: NonNull<u8>,
    len: usize,
    side: Side,
    turns: Turns<'a>,
    /// Messages this side has sent and received (the counters in the area count the same).
    sent: u64,
    received: u64,
    /// Chunks sent (head) and taken (tail), as this side last saw them.
    head: u64,
    tail: u64,
    slots: usize,
    slot_size: usize,
    _memory: PhantomData<&'a [u8]>,
}

impl<'a> Shared<'a> {
    /// `side`'s end of a link in the `len` bytes at `base`.
    ///
    /// # Safety
    /// `base` must be page-aligned, readable and writable for `len` bytes while the link lives
    /// (`'a`: borrow the owner of the memory for it), `len` at least the 4096 bytes of counters
    /// and messages before the ring ([`area_size`] of the largest chunk, for the chunks to fit;
    /// `begin_chunks` refuses those that do not). The memory must be zero-filled at first and
    /// shared with exactly one other process, which uses it only through the other side's
    /// `Shared` — the protocol below then gives each byte to one process at a time.
    pub unsafe fn new(base: NonNull<u8>, len: usize, side: Side, turns: Turns<'a>) -> Shared<'a> {
        Shared {
            base,
            len,
            side,
            turns,
            sent: 0,
            received: 0,
            head: 0,
            tail: 0,
            slots: 1,
            slot_size: 0,
            _memory: PhantomData,
        }
    }

    /// The counter at `offset`.
    fn counter(&self, offset: usize) -> &AtomicU64 {
        debug_assert!(offset % 64 == 0 && offset + 8 <= layout::RING);
        // SAFETY: `offset` is one of the layout's counter offsets, 8-aligned (the base is
        // page-aligned) and inside the area, which lives for 'a (see `new`); every access to a
        // counter is atomic, so the other process may change it at any time.
        unsafe { AtomicU64::from_ptr(self.base.as_ptr().add(offset).cast()) }
    }

    /// `(sequence counter, message)` offsets this side sends on, and receives on.
    fn directions(&self) -> ((usize, usize), (usize, usize)) {
        let ping = (layout::PING_SEQ, layout::PING);
        let pong = (layout::PONG_SEQ, layout::PONG);
        match self.side {
            Side::Parent => (ping, pong),
            Side::Child => (pong, ping),
        }
    }

    /// Waits until `ready` holds, spinning then yielding, never sleeping (see
    /// [`peer::spin_then_yield`]); a child that has ended or a termination signal ends the wait.
    fn spin(&self, what: &str, ready: impl FnMut() -> bool) -> anyhow::Result<()> {
        match peer::spin_then_yield(ready) {
            true => Ok(()),
            false => Err(ended(what)),
        }
    }

    /// `semop(semid, [{sem, delta, 0}], 1)`: P (`delta` −1: wait until positive and take one)
    /// or V (`delta` +1).
    fn semop(set: &SemSet, sem: u16, delta: i16) -> anyhow::Result<()> {
        again("semop", |nowait| {
            let mut op = sembuf(sem, delta);
            if nowait {
                op.sem_flg = libc::IPC_NOWAIT as i16;
            }
            sem::semop(set.id(), &mut [op])
        })
    }

    /// The semaphores a message this side sends and receives is signalled with.
    fn message_semaphores(&self) -> (u16, u16) {
        match self.side {
            Side::Parent => (SEM_PING, SEM_PONG),
            Side::Child => (SEM_PONG, SEM_PING),
        }
    }

    /// Where slot `n` of the ring starts.
    fn slot(&self, n: u64) -> *mut u8 {
        let offset = layout::RING + (n % self.slots as u64) as usize * self.slot_size;
        debug_assert!(offset + self.slot_size <= self.len);
        // SAFETY: the ring's slots lie inside the area (begin_chunks sized them so).
        unsafe { self.base.as_ptr().add(offset) }
    }
}

impl Link for Shared<'_> {
    fn removed(&self) -> Option<Removed> {
        let Turns::Semaphores(set) = &self.turns else {
            return None; // a segment removed while attached lives on until detached
        };
        let gone = matches!(
            sem::semctl_stat(set.id()),
            Err(Errno::EINVAL | Errno::EIDRM)
        );
        gone.then_some(Removed("semaphore set"))
    }

    fn send(&mut self, message: &[u8]) -> anyhow::Result<()> {
        assert!(message.len() <= layout::MESSAGE_MAX, "message too long");
        let ((sequence, at), _) = self.directions();
        // SAFETY: the message area of this direction is ours until we publish the message:
        // the other side reads it only after that and is done with it before it answers, and
        // we send again only after its answer. `message` is private memory, so no overlap.
        unsafe {
            let to = self.base.as_ptr().add(at);
            std::ptr::copy_nonoverlapping(message.as_ptr(), to, message.len());
        }
        self.sent += 1;
        match &self.turns {
            Turns::Spin => self.counter(sequence).store(self.sent, Release),
            Turns::Semaphores(set) => Shared::semop(set, self.message_semaphores().0, 1)?,
        }
        Ok(())
    }

    fn recv(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        assert!(buf.len() <= layout::MESSAGE_MAX, "message too long");
        let (_, (sequence, at)) = self.directions();
        self.received += 1;
        let wanted = self.received;
        match &self.turns {
            Turns::Spin => {
                let counter = self.counter(sequence);
                self.spin("waiting for a message", || counter.load(Acquire) >= wanted)?
            }
            Turns::Semaphores(set) => Shared::semop(set, self.message_semaphores().1, -1)?,
        }
        // SAFETY: the message has been published (Acquire, or the semaphore), and the other
        // side does not write this area again before we answer; `buf` is private memory.
        unsafe {
            let from = self.base.as_ptr().add(at);
            std::ptr::copy_nonoverlapping(from, buf.as_mut_ptr(), buf.len());
        }
        Ok(())
    }

    fn begin_chunks(&mut self, size: usize) -> anyhow::Result<()> {
        let room = self.len - layout::RING;
        anyhow::ensure!(
            size > 0 && 2 * size <= room,
            "chunks of {size} bytes do not fit"
        );
        // A power of two: never a multiple of the data's odd number of patterns.
        self.slots = (room / size).min(MAX_SLOTS);
        self.slots = 1 << self.slots.ilog2();
        self.slot_size = size;
        // The ring is empty between batches: both counters are equal (and both sides agree).
        self.head = self.counter(layout::HEAD).load(Acquire);
        self.tail = self.counter(layout::TAIL).load(Acquire);
        if let (Turns::Semaphores(set), Side::Parent) = (&self.turns, self.side) {
            set.set(SEM_EMPTY, self.slots as i32)?;
        }
        Ok(())
    }

    fn send_chunk(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        assert_eq!(chunk.len(), self.slot_size, "chunk of another size");
        match &self.turns {
            Turns::Spin => {
                if self.head - self.tail >= self.slots as u64 {
                    let (tail, head, slots) = (self.counter(layout::TAIL), self.head, self.slots);
                    self.spin("waiting for a free slot", || {
                        head - tail.load(Acquire) < slots as u64
                    })?;
                    self.tail = tail.load(Acquire);
                }
            }
            Turns::Semaphores(set) => Shared::semop(set, SEM_EMPTY, -1)?,
        }
        // SAFETY: the slot is free: the receiver has moved its tail past it (Acquire) or
        // given it back with SEM_EMPTY, and takes it again only after we publish it. It lies
        // inside the area and is as long as `chunk` (checked above), which is private memory.
        unsafe { std::ptr::copy_nonoverlapping(chunk.as_ptr(), self.slot(self.head), chunk.len()) };
        self.head += 1;
        match &self.turns {
            Turns::Spin => self.counter(layout::HEAD).store(self.head, Release),
            Turns::Semaphores(set) => Shared::semop(set, SEM_FULL, 1)?,
        }
        Ok(())
    }

    fn recv_chunk(&mut self, size: usize, sum: &mut Checksum) -> anyhow::Result<()> {
        assert_eq!(size, self.slot_size, "chunk of another size");
        match &self.turns {
            Turns::Spin => {
                if self.head == self.tail {
                    let (head, tail) = (self.counter(layout::HEAD), self.tail);
                    self.spin("waiting for a chunk", || head.load(Acquire) > tail)?;
                    self.head = head.load(Acquire);
                }
            }
            Turns::Semaphores(set) => Shared::semop(set, SEM_FULL, -1)?,
        }
        // SAFETY: the slot holds a published chunk (Acquire on the head, or SEM_FULL) that the
        // sender does not touch until we move the tail past it (or give it back), which
        // happens after this borrow ends; it lies inside the area, `size` bytes long (checked
        // above).
        let chunk = unsafe { std::slice::from_raw_parts(self.slot(self.tail), size) };
        sum.update(chunk);
        self.tail += 1;
        match &self.turns {
            Turns::Spin => self.counter(layout::TAIL).store(self.tail, Release),
            Turns::Semaphores(set) => Shared::semop(set, SEM_EMPTY, 1)?,
        }
        Ok(())
    }
}

// ---- a System V message queue ---------------------------------------------------------------

/// A message type of the queue link: pings, pongs and chunks each have their own, so a
/// receiver takes only what is meant for it.
const PING_TYPE: c_long = 1;
const PONG_TYPE: c_long = 2;
const CHUNK_TYPE: c_long = 3;
/// The largest piece a [`Queue`] link sends in one message (its buffer's size).
const PIECE_MAX: usize = 64 << 10;

/// ipcbench as the server of a lab's queue, as its liveness lock names it
/// ([`ipclab::peer::ServerLock`], the lock msgq1 takes on the same key): msgq1 is refused
/// while a measurement runs on the key, and msgq2 is told the queue is ipcbench's.
pub const IPCBENCH_QUEUE: Server = Server {
    program: "ipcbench",
    call: "msgget",
    object: "queue",
};

/// The same for the lab's segment (sipc1's key).
pub const IPCBENCH_SEGMENT: Server = Server {
    program: "ipcbench",
    call: "shmget",
    object: "segment",
};

/// The lab's segment, made for a measurement (`IPC_CREAT|IPC_EXCL`, mode 0600) under
/// ipcbench's lock on the key: removed when dropped, then the lock let go.
#[derive(Debug)]
pub struct SegmentOwner {
    pub segment: Segment,
    serving: ServerLock,
}

impl SegmentOwner {
    /// `shmget(0x9000 + lab, size, IPC_CREAT|IPC_EXCL|0600)`, once ipcbench holds the key.
    pub fn create(lab: u32, size: usize) -> anyhow::Result<SegmentOwner> {
        let key = Key::segment(lab);
        let serving = ServerLock::take(IPCBENCH_SEGMENT, key)?;
        let mut owner = SegmentOwner {
            segment: Segment::create(key, size)?,
            serving,
        };
        owner.serving.record(owner.segment.id().0)?;
        Ok(owner)
    }
}

/// A message queue this process made for a measurement (`IPC_CREAT|IPC_EXCL`, mode 0600),
/// removed (`IPC_RMID`) when dropped, then its lock let go.
#[derive(Debug)]
pub struct QueueOwner {
    id: MsqId,
    lab: u32,
    serving: ServerLock,
}

impl QueueOwner {
    /// `msgget(0x8000 + lab, IPC_CREAT|IPC_EXCL|0600)`. A queue that exists already under the
    /// key is not taken over (it may be another program's).
    pub fn create(lab: u32) -> anyhow::Result<QueueOwner> {
        let key = Key::queue(lab);
        let serving = ServerLock::take(IPCBENCH_QUEUE, key)?;
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | sysv::MODE as libc::c_int;
        let call = || format!("msgget(key {key})");
        match msg::msgget(key, flags) {
            Ok(id) => {
                let mut queue = QueueOwner { id, lab, serving };
                queue.serving.record(id.0)?; // on failure `queue` is dropped: removed
                Ok(queue)
            }
            Err(Errno::EEXIST) => Err(crate::key_in_use(call(), "a queue", lab)),
            Err(errno) => Err(anyhow::Error::new(errno).context(call())),
        }
    }

    /// The queue's ID.
    pub fn id(&self) -> MsqId {
        self.id
    }
}

impl Drop for QueueOwner {
    fn drop(&mut self) {
        if let Err(errno) = msg::ipc_rmid(self.id) {
            crate::warn_not_removed(&format!("msgctl({}, IPC_RMID)", self.id), errno, self.lab);
        }
    }
}

/// The most bytes one message may carry here: the system's `msgmax`, but no more than a queue
/// holds (`msgmnb`) or our buffer; a multiple of the checksum's block, so pieces add up.
pub fn piece_size() -> usize {
    let limit = |name: &str, default: usize| {
        std::fs::read_to_string(format!("/proc/sys/kernel/{name}"))
            .ok()
            .and_then(|text| text.trim().parse().ok())
            .unwrap_or(default)
    };
    let piece = limit("msgmax", 8192)
        .min(limit("msgmnb", 16384))
        .min(PIECE_MAX);
    (piece / Checksum::BLOCK * Checksum::BLOCK).max(Checksum::BLOCK)
}

/// One process's end of a link through a message queue: every message is copied into the
/// kernel by `msgsnd` and out of it by `msgrcv`; a chunk larger than a message may be goes as
/// several messages of at most [`piece_size`] bytes.
#[derive(Debug)]
pub struct Queue<'a> {
    id: MsqId,
    side: Side,
    piece: usize,
    /// `msgsnd` reads the type right before the text: a message is built here (one more copy
    /// on the sender's side, as in any C program), and received here.
    buffer: Box<MsgBuf<PIECE_MAX>>,
    _queue: PhantomData<&'a QueueOwner>,
}

impl<'a> Queue<'a> {
    /// `side`'s end of a link through `queue`.
    pub fn new(queue: &'a QueueOwner, side: Side) -> Queue<'a> {
        Queue {
            id: queue.id,
            side,
            piece: piece_size(),
            buffer: Box::new(MsgBuf::empty()),
            _queue: PhantomData,
        }
    }

    fn flags(nowait: bool) -> libc::c_int {
        if nowait {
            libc::IPC_NOWAIT
        } else {
            0
        }
    }

    /// `msgsnd` of `bytes` as one message of type `mtype`.
    fn send_message(&mut self, mtype: c_long, bytes: &[u8]) -> anyhow::Result<()> {
        self.buffer.mtype = mtype;
        self.buffer.mtext[..bytes.len()].copy_from_slice(bytes);
        let (id, buffer) = (self.id, &self.buffer);
        again("msgsnd", |nowait| {
            msg::msgsnd(id, buffer, bytes.len(), Queue::flags(nowait))
        })
    }

    /// `msgrcv` of one message of type `mtype` and `len` bytes, into the buffer.
    fn receive_message(&mut self, mtype: c_long, len: usize) -> anyhow::Result<&[u8]> {
        let (id, buffer) = (self.id, &mut self.buffer);
        let got = again("msgrcv", |nowait| {
            msg::msgrcv(id, buffer, len, mtype, Queue::flags(nowait))
        })?;
        anyhow::ensure!(got == len, "msgrcv: {got} bytes, not {len}");
        Ok(&self.buffer.mtext[..len])
    }

    /// The types of the messages this side sends and receives.
    fn types(&self) -> (c_long, c_long) {
        match self.side {
            Side::Parent => (PING_TYPE, PONG_TYPE),
            Side::Child => (PONG_TYPE, PING_TYPE),
        }
    }
}

impl Link for Queue<'_> {
    fn send(&mut self, message: &[u8]) -> anyhow::Result<()> {
        let (mine, _) = self.types();
        self.send_message(mine, message)
    }

    fn recv(&mut self, buf: &mut [u8]) -> anyhow::Result<()> {
        let (_, theirs) = self.types();
        buf.copy_from_slice(self.receive_message(theirs, buf.len())?);
        Ok(())
    }

    fn send_chunk(&mut self, chunk: &[u8]) -> anyhow::Result<()> {
        for piece in chunk.chunks(self.piece) {
            self.send_message(CHUNK_TYPE, piece)?;
        }
        Ok(())
    }

    fn removed(&self) -> Option<Removed> {
        let gone = matches!(msg::ipc_stat(self.id), Err(Errno::EINVAL | Errno::EIDRM));
        gone.then_some(Removed("queue"))
    }

    fn recv_chunk(&mut self, size: usize, sum: &mut Checksum) -> anyhow::Result<()> {
        let mut left = size;
        while left > 0 {
            let len = left.min(self.piece);
            sum.update(self.receive_message(CHUNK_TYPE, len)?);
            left -= len;
        }
        Ok(())
    }
}
