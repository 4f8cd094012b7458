//! System V message queues: the `msgq1` server and its `msgq2` client.
//!
//! The protocol of the C programs, kept byte for byte:
//! * One queue, key `0x8000 + ID` ([`crate::sysv::Key::queue`]), mode 0600, made by msgq1.
//! * A message is the C struct `{ long mtype; char mtext[128]; }` ([`Message`]): the type, then
//!   128 bytes of NUL-terminated, NUL-padded text. Type [`REQUEST`] (1) goes from the client to
//!   the server, type [`REPLY`] (2) back.
//!
//! | bytes   | field   | content                                                  |
//! |---------|---------|----------------------------------------------------------|
//! | 0..8    | `mtype` | a C `long`: 1 request, 2 reply                           |
//! | 8..136  | `mtext` | the text, NUL-terminated, NUL-padded                     |
//!
//! The size given to `msgsnd` counts the text only: this suite sends [`MSG_SIZE`] = 128 bytes.
//! The C programs send `sizeof(msg)` = 136 ([`C_MSG_SIZE`]), 8 bytes more than the text holds
//! (labs.md tells the story); so every receive here passes `MSG_NOERROR`, which cuts such a
//! message to the 128 bytes asked for instead of failing with `E2BIG`.
//!
//! The calls keep their C names and argument order ([`msgget`], [`msgsnd`], [`msgrcv`],
//! [`msgctl`]) and say themselves in classroom mode ([`crate::trace`]). [`Queue`] is the owner:
//! msgq1's queue is removed when it is dropped — on success, on error, and on a caught
//! termination signal, which travels up through `?` like any error.
//!
//! **Waiting.** A blocking `msgrcv` cannot watch the signal self-pipe: a signal that arrives
//! just before the call would be slept through. So every wait here makes the call with
//! `IPC_NOWAIT` and, while there is nothing yet, tries again after a polite pause
//! ([`crate::wait::Backoff`]: spin, then `sched_yield`, then sleeps growing to 1 ms, 5 ms after a
//! second); each round checks for a termination signal and the `--timeout` deadline. In classroom mode such a wait shows as **one** call, with the number of tries.

use std::ffi::{c_int, c_long};
use std::fmt;

use anyhow::anyhow;
use libc::msqid_ds;
use nix::errno::Errno;
use nix::unistd::Pid;

use crate::peer::{self, Process, Server, ServerLock, ServerWatch};
use crate::sysv::{self, Key, OTHER_ID_HINT};
use crate::text::{self, BadText};
use crate::wait::{Deadline, Wait};
use crate::{error, outln, signals, trace};

/// Size of the text field: the message, NUL-terminated.
pub const TEXT_LEN: usize = 128;
/// The size this suite gives `msgsnd` and `msgrcv`: the text field, as `msgsnd(2)` defines it.
pub const MSG_SIZE: usize = TEXT_LEN;
/// The size the C programs give `msgsnd`: `sizeof(msg)`, type included (8 bytes too many).
pub const C_MSG_SIZE: usize = std::mem::size_of::<Message>();
/// The type of a request (client to server).
pub const REQUEST: c_long = 1;
/// The type of a reply (server to client).
pub const REPLY: c_long = 2;
/// msgq1, as its liveness lock ([`ServerLock`]) names it.
const MSGQ1: Server = Server {
    program: "msgq1",
    call: "msgget",
    object: "queue",
};

// ---- the message ----------------------------------------------------------------------------

/// A message as `msgsnd`/`msgrcv` take it: a C `long` type, then `N` bytes of text.
/// [`Message`] (`N` = 128) is the C programs' struct; other sizes let a test play a C peer that
/// sends more (`MsgBuf<136>` for the C's 136-byte send).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgBuf<const N: usize> {
    /// `mtype`: [`REQUEST`] or [`REPLY`] (must be positive to be sent).
    pub mtype: c_long,
    /// `mtext`: the text, NUL-terminated and NUL-padded.
    pub mtext: [u8; N],
}

/// The C programs' message: `struct { long mtype; char mtext[128]; }`, 136 bytes.
pub type Message = MsgBuf<TEXT_LEN>;

impl<const N: usize> MsgBuf<N> {
    /// A message of type `mtype` with `bytes` at the start of its text and NULs after them;
    /// `None` if they do not fit. Any bytes: a test uses it to send garbage.
    pub fn with_bytes(mtype: c_long, bytes: &[u8]) -> Option<MsgBuf<N>> {
        let mut message = MsgBuf {
            mtype,
            mtext: [0; N],
        };
        message.mtext.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(message)
    }

    /// An empty buffer to receive into.
    pub fn empty() -> MsgBuf<N> {
        MsgBuf {
            mtype: 0,
            mtext: [0; N],
        }
    }

    /// The first `len` bytes of the text — what a `msgrcv` that returned `len` filled in —
    /// never more than the buffer holds.
    pub fn received(&self, len: usize) -> &[u8] {
        &self.mtext[..len.min(N)]
    }
}

impl Message {
    /// A message of type `mtype` whose text is `text`, NUL-terminated and NUL-padded.
    pub fn new(mtype: c_long, text: &str) -> anyhow::Result<Message> {
        anyhow::ensure!(!text.contains('\0'), "text {text:?} contains a NUL");
        anyhow::ensure!(
            text.len() < TEXT_LEN,
            "text {text:?} does not fit {TEXT_LEN} bytes with its NUL"
        );
        Ok(Message::with_bytes(mtype, text.as_bytes()).expect("checked to fit"))
    }
}

/// The client's request text: `This is a request from <PID>.`
pub fn request_text(pid: Pid) -> String {
    format!("This is a request from {pid}.")
}

/// The server's reply text: `This is a reply from <PID>.`
pub fn reply_text(pid: Pid) -> String {
    format!("This is a reply from {pid}.")
}

// ---- the calls ------------------------------------------------------------------------------

/// A message queue identifier, as `msgget` returns it and `ipcs -q` lists it (`msqid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsqId(pub c_int);

impl fmt::Display for MsqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const FLAG_NAMES: [(i64, &str); 5] = [
    (libc::IPC_CREAT as i64, "IPC_CREAT"),
    (libc::IPC_EXCL as i64, "IPC_EXCL"),
    (libc::IPC_NOWAIT as i64, "IPC_NOWAIT"),
    (libc::MSG_NOERROR as i64, "MSG_NOERROR"),
    (libc::MSG_EXCEPT as i64, "MSG_EXCEPT"),
];

fn flags(msgflg: c_int) -> String {
    trace::flags(msgflg.into(), &FLAG_NAMES, "0")
}

/// `{type 1, "This is a request from 4712."}`: a message as the trace shows it.
fn shown<const N: usize>(message: &MsgBuf<N>, len: usize) -> String {
    let text = trace::c_string(message.received(len), 40);
    format!("{{type {}, {text}}}", message.mtype)
}

/// `msgget(2)`: the queue with `key`, made if `msgflg` has `IPC_CREAT` (with the permission
/// bits of `msgflg`).
pub fn msgget(key: Key, msgflg: c_int) -> nix::Result<MsqId> {
    trace::call(
        || format!("msgget({key}, {})", flags(msgflg)),
        || {
            // SAFETY: msgget takes no pointers.
            let id = unsafe { libc::msgget(key.raw(), msgflg) };
            Errno::result(id).map(MsqId)
        },
        MsqId::to_string,
    )
}

/// `msgsnd(2)`: queues `msgp`'s type and the first `msgsz` bytes of its text. A size larger than
/// the buffer fails with `EINVAL` before the call (the kernel would read past it).
pub fn msgsnd<const N: usize>(
    msqid: MsqId,
    msgp: &MsgBuf<N>,
    msgsz: usize,
    msgflg: c_int,
) -> nix::Result<()> {
    trace::call(
        || describe_msgsnd(msqid, msgp, msgsz, msgflg),
        || raw_msgsnd(msqid, msgp, msgsz, msgflg),
        |()| "0".into(),
    )
}

fn describe_msgsnd<const N: usize>(
    msqid: MsqId,
    msgp: &MsgBuf<N>,
    msgsz: usize,
    msgflg: c_int,
) -> String {
    let message = shown(msgp, msgsz);
    format!("msgsnd({msqid}, {message}, {msgsz}, {})", flags(msgflg))
}

fn raw_msgsnd<const N: usize>(
    msqid: MsqId,
    msgp: &MsgBuf<N>,
    msgsz: usize,
    msgflg: c_int,
) -> nix::Result<()> {
    if msgsz > N {
        return Err(Errno::EINVAL);
    }
    let pointer: *const MsgBuf<N> = msgp;
    // SAFETY: `pointer` is a live MsgBuf<N> (a C long, then N bytes: the layout msgsnd reads),
    // borrowed for the call; msgsnd reads the long and msgsz <= N bytes after it, nothing more.
    let result = unsafe { libc::msgsnd(msqid.0, pointer.cast(), msgsz, msgflg) };
    Errno::result(result).map(drop)
}

/// `msgrcv(2)`: takes the first message of type `msgtyp` (0: any) into `msgp`, at most `msgsz`
/// bytes of text, and returns how many it copied. A size larger than the buffer fails with
/// `EINVAL` before the call (the kernel would write past it).
pub fn msgrcv<const N: usize>(
    msqid: MsqId,
    msgp: &mut MsgBuf<N>,
    msgsz: usize,
    msgtyp: c_long,
    msgflg: c_int,
) -> nix::Result<usize> {
    trace::call(
        || describe_msgrcv(msqid, msgsz, msgtyp, msgflg),
        || {
            let len = raw_msgrcv(msqid, msgp, msgsz, msgtyp, msgflg)?;
            Ok(Outcome::new(len as i64, 1).found(|| shown(msgp, len)))
        },
        Outcome::to_string,
    )
    .map(|outcome| outcome.result as usize)
}

fn describe_msgrcv(msqid: MsqId, msgsz: usize, msgtyp: c_long, msgflg: c_int) -> String {
    format!(
        "msgrcv({msqid}, &msg, {msgsz}, {msgtyp}, {})",
        flags(msgflg)
    )
}

fn raw_msgrcv<const N: usize>(
    msqid: MsqId,
    msgp: &mut MsgBuf<N>,
    msgsz: usize,
    msgtyp: c_long,
    msgflg: c_int,
) -> nix::Result<usize> {
    if msgsz > N {
        return Err(Errno::EINVAL);
    }
    let pointer: *mut MsgBuf<N> = msgp;
    // SAFETY: `pointer` is a live MsgBuf<N>, borrowed mutably for the call; msgrcv writes the
    // type (a C long) and at most msgsz <= N bytes of text after it.
    let len = unsafe { libc::msgrcv(msqid.0, pointer.cast(), msgsz, msgtyp, msgflg) };
    Errno::result(len).map(|len| len as usize)
}

/// What a traced call returned, as the trace shows it: the C result, what it found (a message,
/// the queue's state — made only in classroom mode: the trace line is written after the call
/// has filled the buffer), and how many tries a wait made.
struct Outcome {
    result: i64,
    found: Option<String>,
    tries: u32,
}

impl Outcome {
    fn new(result: i64, tries: u32) -> Outcome {
        Outcome {
            result,
            found: None,
            tries,
        }
    }

    fn found(mut self, what: impl FnOnce() -> String) -> Outcome {
        if trace::enabled() {
            self.found = Some(what());
        }
        self
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.result)?;
        if let Some(found) = &self.found {
            write!(f, " {found}")?;
        }
        match self.tries {
            0 | 1 => Ok(()),
            n => write!(f, " (tried {n} times)"),
        }
    }
}

/// `msgctl(2)`: `IPC_STAT` fills `buf`, `IPC_RMID` removes the queue (`buf` may be `None`,
/// C's `NULL`), `IPC_SET` sets owner and mode from `buf`.
pub fn msgctl(msqid: MsqId, cmd: c_int, buf: Option<&mut msqid_ds>) -> nix::Result<c_int> {
    let with_buffer = buf.is_some();
    trace::call(
        || describe_msgctl(msqid, cmd, with_buffer),
        || {
            let mut buf = buf;
            let result = raw_msgctl(msqid, cmd, buf.as_deref_mut())?;
            let outcome = Outcome::new(result.into(), 1);
            Ok(match buf.filter(|_| cmd == libc::IPC_STAT) {
                Some(ds) => outcome.found(|| summary(ds)),
                None => outcome,
            })
        },
        Outcome::to_string,
    )
    .map(|outcome| outcome.result as c_int)
}

fn describe_msgctl(msqid: MsqId, cmd: c_int, with_buffer: bool) -> String {
    let cmd = match cmd {
        libc::IPC_STAT => "IPC_STAT".to_string(),
        libc::IPC_RMID => "IPC_RMID".to_string(),
        libc::IPC_SET => "IPC_SET".to_string(),
        other => other.to_string(),
    };
    let buf = if with_buffer { "&buf" } else { "NULL" };
    format!("msgctl({msqid}, {cmd}, {buf})")
}

/// `{msg_qnum 1, msg_cbytes 128, msg_lspid 4712, msg_lrpid 0}`: what IPC_STAT found, in a trace.
fn summary(ds: &msqid_ds) -> String {
    format!(
        "{{msg_qnum {}, msg_cbytes {}, msg_lspid {}, msg_lrpid {}}}",
        ds.msg_qnum, ds.__msg_cbytes, ds.msg_lspid, ds.msg_lrpid
    )
}

fn raw_msgctl(msqid: MsqId, cmd: c_int, buf: Option<&mut msqid_ds>) -> nix::Result<c_int> {
    let pointer = buf.map_or(std::ptr::null_mut(), |buf| buf as *mut msqid_ds);
    // SAFETY: `pointer` is NULL or a live msqid_ds borrowed mutably for the call. Every command
    // that writes through it writes at most a msqid_ds (IPC_INFO's msginfo is smaller); the
    // kernel checks the pointer itself and fails with EFAULT on NULL.
    let result = unsafe { libc::msgctl(msqid.0, cmd, pointer) };
    Errno::result(result)
}

/// A zeroed `msqid_ds`, for `IPC_STAT` to fill in.
pub fn empty_stat() -> msqid_ds {
    // SAFETY: msqid_ds holds only integers (and integer padding): all-zero bytes are valid.
    unsafe { std::mem::zeroed() }
}

/// `msgctl(msqid, IPC_STAT, &buf)`: the queue's state.
pub fn ipc_stat(msqid: MsqId) -> nix::Result<msqid_ds> {
    let mut buf = empty_stat();
    msgctl(msqid, libc::IPC_STAT, Some(&mut buf))?;
    Ok(buf)
}

/// `msgctl(msqid, IPC_RMID, NULL)`: removes the queue; processes waiting on it fail with
/// `EIDRM`, later calls with its ID with `EINVAL`.
pub fn ipc_rmid(msqid: MsqId) -> nix::Result<()> {
    match msgctl(msqid, libc::IPC_RMID, None) {
        // A termination signal ended classroom mode's pause before the call was made: cleanup
        // must happen all the same.
        Err(Errno::EINTR) => {
            let result = raw_msgctl(msqid, libc::IPC_RMID, None);
            if trace::enabled() {
                let shown = match result {
                    Ok(result) => result.to_string(),
                    Err(errno) => trace::errno_text(errno),
                };
                trace::line(&format!(
                    "{} = {shown}",
                    describe_msgctl(msqid, libc::IPC_RMID, false)
                ));
            }
            result.map(drop)
        }
        other => other.map(drop),
    }
}

// ---- waiting --------------------------------------------------------------------------------

/// Makes `attempt` (a call with `IPC_NOWAIT`) until it gives `Some`, pausing politely between
/// tries as `wait` does (see the module docs). Returns the value and the number of tries; `None`
/// once the deadline has passed; `EINTR` as soon as a termination signal has been caught.
fn poll<T>(
    wait: &mut Wait<'_>,
    mut attempt: impl FnMut() -> nix::Result<Option<T>>,
) -> nix::Result<(Option<T>, u32)> {
    let mut tries = 0u32;
    loop {
        tries = tries.saturating_add(1);
        if let Some(done) = attempt()? {
            return Ok((Some(done), tries));
        }
        if wait.check().is_err() {
            return match signals::caught() {
                Some(_) => Err(Errno::EINTR),
                None => Ok((None, tries)),
            };
        }
        wait.pause();
    }
}

/// The error of a wait that ended without its message: a caught signal (exit 128+signal), the
/// deadline, the queue removed under it, or another failure of `call`.
fn wait_failed(errno: Errno, deadline: Deadline, call: String) -> anyhow::Error {
    if let Err(interrupted) = signals::check() {
        return anyhow::Error::new(interrupted).context(call);
    }
    match errno {
        Errno::ENOMSG | Errno::EAGAIN => match deadline.check() {
            Err(timed_out) => anyhow::Error::new(timed_out).context(call),
            Ok(()) => anyhow!("{call}: {}", error::reason(errno)),
        },
        // Removed while blocked in the call: EIDRM; removed between two tries: the ID is gone.
        Errno::EIDRM | Errno::EINVAL => {
            anyhow!("{call}: the queue was removed while waiting (by its server, or with ipcrm)")
        }
        other => anyhow!("{call}: {}", error::reason(other)),
    }
}

// ---- the owner ------------------------------------------------------------------------------

/// A message queue in use: msgq1's, which it made and removes when dropped, or one msgq2
/// found by key.
#[derive(Debug)]
pub struct Queue {
    key: Key,
    id: MsqId,
    /// The server's liveness lock: only the queue's creator holds one. Released after the
    /// queue is removed (fields are dropped after [`Queue::drop`] runs).
    server: Option<ServerLock>,
    /// A client's watch on the server that made the queue, if it is one of this suite.
    watch: Option<ServerWatch>,
}

/// What a message received from a queue holds.
#[derive(Debug, Clone)]
pub struct Received {
    /// The message, as the buffer holds it.
    pub message: Message,
    /// How many bytes of text `msgrcv` copied.
    pub len: usize,
}

impl Received {
    /// The bytes of text received.
    pub fn bytes(&self) -> &[u8] {
        self.message.received(self.len)
    }

    /// The text up to its NUL, printable ([`text::decode_text`]); without a NUL, the error
    /// holds all the bytes, printable.
    pub fn text(&self) -> Result<String, BadText> {
        text::decode_text(self.bytes())
    }
}

/// A request msgq1 answers: its text, and the process that sent it as the kernel says
/// (`msg_lspid` just after it was received).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The text, printable; what is wrong with it, if anything (it is answered all the same).
    pub text: Result<String, BadText>,
    /// The sender, if it still exists.
    pub sender: Option<Process>,
}

impl Request {
    /// The text as stdout shows it (a text without NUL: all its bytes).
    pub fn shown(&self) -> &str {
        match &self.text {
            Ok(text) => text,
            Err(bad) => &bad.shown,
        }
    }
}

/// How msgq1's wait for its reply to be taken ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pickup {
    /// A client took it, `by` this process (`msg_lrpid`).
    Taken { by: Pid },
    /// The process that asked has ended without taking it.
    RequesterGone(Process),
}

/// The end of msgq1's wait for its reply to be taken, and the messages still in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AfterReply {
    /// How the wait ended.
    pub pickup: Pickup,
    /// The process that sent the request, if known.
    pub requester: Option<Process>,
    /// Messages still in the queue (`msg_qnum`), lost when it is removed.
    pub unread: u64,
}

impl AfterReply {
    /// The result of the exchange: a warning to print if the reply went to someone else, or an
    /// error if nobody took it (the queue, and the reply in it, are removed all the same).
    pub fn outcome(&self) -> anyhow::Result<Option<String>> {
        let lost = match self.unread {
            0 => String::new(),
            n => format!("; removing the queue with {n} unread message(s)"),
        };
        match (&self.pickup, &self.requester) {
            (Pickup::RequesterGone(who), _) => {
                anyhow::bail!("{who} ended without taking the reply{lost}")
            }
            (Pickup::Taken { by }, Some(asked)) if *by != asked.pid => Ok(Some(format!(
                "the reply was taken by pid {by}, not by {asked} who asked (a reply of type 2 \
                 is for whoever waits first){lost}"
            ))),
            (Pickup::Taken { .. }, _) if !lost.is_empty() => Ok(Some(lost[2..].to_string())),
            (Pickup::Taken { .. }, _) => Ok(None),
        }
    }
}

impl Queue {
    /// msgq1's queue: `msgget(key, IPC_CREAT|IPC_EXCL|0600)`, removed when dropped.
    ///
    /// First takes the server's liveness lock ([`ServerLock`]), so a second msgq1 on the key is
    /// refused instead of stealing requests. A queue that exists already is removed only when it
    /// is proven a leftover ([`crate::peer`]): ours, no process that used it alive, and — for a
    /// queue never used — made by the msgq1 whose lock we now hold. Otherwise msgq1 refuses,
    /// naming who uses it (a C msgq1, ipcbench, a client waiting on it).
    pub fn create(key: Key) -> anyhow::Result<Queue> {
        let server = ServerLock::take(MSGQ1, key)?;
        let mode = sysv::MODE as c_int;
        for _ in 0..3 {
            match msgget(key, libc::IPC_CREAT | libc::IPC_EXCL | mode) {
                Ok(id) => {
                    let mut queue = Queue {
                        key,
                        id,
                        server: Some(server),
                        watch: None,
                    };
                    if let Some(lock) = &mut queue.server {
                        lock.record(id.0)?; // on failure `queue` is dropped: removed
                    }
                    return Ok(queue);
                }
                Err(Errno::EEXIST) => remove_if_leftover(key, server.previous())?,
                Err(errno) => return Err(access_error(format!("msgget(key {key})"), errno)),
            }
        }
        anyhow::bail!("msgget(key {key}): a queue with this key keeps reappearing; {OTHER_ID_HINT}")
    }

    /// msgq2's queue: `msgget(key, 0)`, the existing one (never made here), checked to be ours
    /// ([`sysv::check_ours`]) even though the open succeeded: on a shared machine another user
    /// could have made the key first, mode 0666, to read every request.
    pub fn open(key: Key) -> anyhow::Result<Queue> {
        let context = format!("msgget(key {key})");
        let id = match msgget(key, 0) {
            Ok(id) => id,
            Err(Errno::ENOENT) => anyhow::bail!("{context}: no such queue; start msgq1 first"),
            Err(errno) => return Err(access_error(context, errno)),
        };
        let stat = ipc_stat(id)
            .map_err(|errno| access_error(format!("msgctl(key {key}, IPC_STAT)"), errno))?;
        sysv::check_ours(&stat.msg_perm).map_err(|foreign| {
            anyhow!("{context}: the queue is not yours: {foreign}; {OTHER_ID_HINT}")
        })?;
        let queue = Queue {
            key,
            id,
            server: None,
            watch: ServerWatch::find(MSGQ1, key, id.0),
        };
        if let Some(gone) = queue.server_gone() {
            anyhow::bail!(
                "{context}: no server: the queue was left by {gone}, which was killed; start \
                 msgq1 first (it replaces the queue)"
            );
        }
        Ok(queue)
    }

    /// The msgq1 that made this queue, if it is known to have ended ([`ServerWatch`]).
    fn server_gone(&self) -> Option<String> {
        let watch = self.watch.as_ref().filter(|watch| watch.ended())?;
        Some(format!("msgq1 (pid {})", watch.pid()))
    }

    /// Who the client waits for, for the message of a long wait.
    fn server(&self) -> String {
        match &self.watch {
            Some(watch) => format!("msgq1 (pid {})", watch.pid()),
            None => format!("the server of queue {}", self.key),
        }
    }

    /// The queue's key.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The queue's ID (`msqid`).
    pub fn id(&self) -> MsqId {
        self.id
    }

    /// `msgctl(id, IPC_STAT, &buf)`.
    pub fn stat(&self) -> anyhow::Result<msqid_ds> {
        ipc_stat(self.id).map_err(|errno| self.failed("msgctl", "IPC_STAT", errno))
    }

    /// `msgsnd(id, message, 128, 0)` — waiting while the queue is full (until `deadline`, a
    /// termination signal, or its server's end), without blocking in the call (see the module
    /// docs).
    pub fn send(&self, message: &Message, deadline: Deadline) -> anyhow::Result<()> {
        let flags = libc::IPC_NOWAIT;
        let what = || {
            format!(
                "room in queue {} (it is full), for {}",
                self.key,
                self.server()
            )
        };
        let mut wait = Wait::new(deadline).saying(&what);
        let result = trace::call(
            || describe_msgsnd(self.id, message, MSG_SIZE, flags),
            || {
                let (sent, tries) = poll(&mut wait, || {
                    match raw_msgsnd(self.id, message, MSG_SIZE, flags) {
                        Err(Errno::EAGAIN) if self.server_gone().is_some() => Err(Errno::EAGAIN),
                        Err(Errno::EAGAIN) => Ok(None), // full: try again
                        other => other.map(Some),
                    }
                })?;
                sent.map(|()| Outcome::new(0, tries)).ok_or(Errno::EAGAIN)
            },
            Outcome::to_string,
        );
        let context = format!("msgsnd(queue {}, type {})", self.key, message.mtype);
        result
            .map(drop)
            .map_err(|errno| self.wait_failed(errno, deadline, context))
    }

    /// `msgrcv(id, &msg, 128, mtype, MSG_NOERROR)`: waits for the first message of type
    /// `mtype` (until `deadline`, a termination signal, or its server's end), without blocking
    /// in the call. `MSG_NOERROR` cuts a C peer's 136-byte message to the 128 bytes of the text
    /// field. `wait` ends the wait (and may say what it is for, should it last).
    pub fn receive(&self, mtype: c_long, mut wait: Wait<'_>) -> anyhow::Result<Received> {
        let deadline = wait.deadline();
        let flags = libc::IPC_NOWAIT | libc::MSG_NOERROR;
        let mut message = Message::empty();
        let result = trace::call(
            || describe_msgrcv(self.id, MSG_SIZE, mtype, flags),
            || {
                let (len, tries) = poll(&mut wait, || {
                    match raw_msgrcv(self.id, &mut message, MSG_SIZE, mtype, flags) {
                        // None yet; and none will come if the server has ended.
                        Err(Errno::ENOMSG) if self.server_gone().is_some() => Err(Errno::ENOMSG),
                        Err(Errno::ENOMSG) => Ok(None),
                        other => other.map(Some),
                    }
                })?;
                let len = len.ok_or(Errno::ENOMSG)?;
                Ok(Outcome::new(len as i64, tries).found(|| shown(&message, len)))
            },
            Outcome::to_string,
        );
        let context = format!("msgrcv(queue {}, type {mtype})", self.key);
        let outcome = result.map_err(|errno| self.wait_failed(errno, deadline, context))?;
        Ok(Received {
            message,
            len: outcome.result as usize,
        })
    }

    /// msgq2's wait for its reply (see [`Queue::receive`]).
    pub fn receive_reply(&self, deadline: Deadline) -> anyhow::Result<Received> {
        let what = || format!("the reply from {}", self.server());
        self.receive(REPLY, Wait::new(deadline).saying(&what))
    }

    /// msgq1's wait for a request: the first message of type 1, and who sent it (`msg_lspid`,
    /// which the `IPC_STAT` just after the receive reports). A request whose sender no longer
    /// exists is reported and skipped: nobody would take its reply.
    pub fn receive_request(&self, deadline: Deadline) -> anyhow::Result<Request> {
        loop {
            // A server waits for requests by nature: its wait says nothing.
            let received = self.receive(REQUEST, Wait::new(deadline))?;
            let sent_by = self.stat()?.msg_lspid;
            let text = received.text();
            match Process::from_raw(sent_by) {
                None if sent_by > 0 => crate::cli::warn(format_args!(
                    "request {} skipped: its sender, pid {sent_by}, no longer exists",
                    text::c_string(received.bytes(), 40)
                )),
                sender => return Ok(Request { text, sender }),
            }
        }
    }

    /// How many replies (type 2) wait in the queue now — left by an earlier exchange, if a
    /// client asks before it sends its request: its `msgrcv` would take the oldest of them. Looks
    /// at each message without taking it (`MSG_COPY`, Linux 3.8 with checkpoint/restore); 0
    /// where that cannot be done.
    pub fn replies_waiting(&self) -> anyhow::Result<u64> {
        let count = self.stat()?.msg_qnum;
        let mut replies = 0;
        for index in 0..count {
            let mut copy = Message::empty();
            let flags = libc::IPC_NOWAIT | libc::MSG_NOERROR | libc::MSG_COPY;
            match msgrcv(self.id, &mut copy, MSG_SIZE, index as c_long, flags) {
                Ok(_) if copy.mtype == REPLY => replies += 1,
                Ok(_) => {}
                // Taken meanwhile (ENOMSG), or no MSG_COPY in this kernel (ENOSYS, EINVAL).
                Err(_) => break,
            }
        }
        Ok(replies)
    }

    /// msgq1 after its reply: polls `IPC_STAT` until a client has taken it — someone else has
    /// received from the queue since (`msg_lrpid` is no longer this process), or it is empty —
    /// or `requester`, the process that asked, has ended. No timer decides: a client paused at
    /// a `--step` prompt for minutes still gets its reply. Ends like every wait on a termination
    /// signal and at `deadline`.
    pub fn wait_until_taken(
        &self,
        requester: Option<Process>,
        deadline: Deadline,
    ) -> anyhow::Result<AfterReply> {
        let me = std::process::id() as libc::pid_t;
        let mut stat = empty_stat();
        let mut pickup = None;
        let what = || match &requester {
            Some(asked) => format!("{asked} to take the reply from queue {}", self.key),
            None => format!("a client to take the reply from queue {}", self.key),
        };
        let mut wait = Wait::new(deadline).saying(&what);
        let result = trace::call(
            || describe_msgctl(self.id, libc::IPC_STAT, true),
            || {
                let (_, tries) = poll(&mut wait, || {
                    // Whether the requester has ended is asked *before* the snapshot: one that
                    // took the reply and then ended shows in it as having taken it.
                    let gone = requester
                        .as_ref()
                        .filter(|asked| Process::alive(asked.pid).is_none());
                    raw_msgctl(self.id, libc::IPC_STAT, Some(&mut stat))?;
                    pickup = if stat.msg_lrpid != me || stat.msg_qnum == 0 {
                        let by = Pid::from_raw(stat.msg_lrpid);
                        Some(Pickup::Taken { by })
                    } else {
                        gone.cloned().map(Pickup::RequesterGone)
                    };
                    Ok(pickup.as_ref().map(drop))
                })?;
                Ok(Outcome::new(0, tries).found(|| summary(&stat)))
            },
            Outcome::to_string,
        );
        let context = || format!("waiting for the reply to be taken (queue {})", self.key);
        if let Err(errno) = result {
            return Err(wait_failed(errno, deadline, context()));
        }
        let Some(pickup) = pickup else {
            let timed_out = deadline.check().err().map(anyhow::Error::new);
            return Err(timed_out
                .unwrap_or_else(|| anyhow!("the wait ended"))
                .context(context()));
        };
        Ok(AfterReply {
            pickup,
            requester,
            unread: stat.msg_qnum,
        })
    }

    /// Why a client's wait ended without its message: as [`wait_failed`] says, or because the
    /// server is gone and left its queue behind.
    fn wait_failed(&self, errno: Errno, deadline: Deadline, call: String) -> anyhow::Error {
        let stopped_early =
            matches!(errno, Errno::ENOMSG | Errno::EAGAIN) && !deadline.has_passed();
        match self.server_gone() {
            Some(gone) if stopped_early && signals::caught().is_none() => match ipc_stat(self.id) {
                Ok(_) => anyhow!(
                    "{call}: {gone} ended without replying (killed?) and left its queue \
                         behind: make ipcclean"
                ),
                Err(errno) => wait_failed(errno, deadline, call),
            },
            _ => wait_failed(errno, deadline, call),
        }
    }

    fn failed(&self, call: &str, what: &str, errno: Errno) -> anyhow::Error {
        access_error(format!("{call}(queue {}, {what})", self.key), errno)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if self.server.is_some() {
            let _ = ipc_rmid(self.id);
        }
    }
}

/// The error of a call refused on an object: with the hint to use another ID when the key
/// belongs to someone else.
fn access_error(call: String, errno: Errno) -> anyhow::Error {
    // A termination signal that ended classroom mode's pause before the call (EINTR).
    if let Err(interrupted) = signals::check() {
        return anyhow::Error::new(interrupted).context(call);
    }
    let reason = error::reason(errno);
    match errno {
        Errno::EACCES | Errno::EPERM => {
            anyhow!("{call}: {reason} (another user's queue?); {OTHER_ID_HINT}")
        }
        Errno::ENOSPC => {
            anyhow!("{call}: {reason} (the machine's limit of queues is reached: see ipcs -q)")
        }
        Errno::EIDRM | Errno::EINVAL => anyhow!("{call}: the queue was removed meanwhile"),
        _ => anyhow!("{call}: {reason}"),
    }
}

/// A queue found under msgq1's key while it holds the liveness lock (so no msgq1 of ours serves
/// it): removed only if it is proven a leftover ([`crate::peer`]), else refused, naming who
/// uses it. `made_by_last` is the ID of the queue that the previous holder of the lock made.
fn remove_if_leftover(key: Key, made_by_last: Option<i32>) -> anyhow::Result<()> {
    let context = format!("msgget(key {key})");
    let id = match msgget(key, 0) {
        Ok(id) => id,
        Err(Errno::ENOENT) => return Ok(()), // gone meanwhile: make ours
        Err(errno) => return Err(access_error(context, errno)),
    };
    let stat = match ipc_stat(id) {
        Ok(stat) => stat,
        Err(Errno::EIDRM | Errno::EINVAL) => return Ok(()),
        Err(errno) => return Err(access_error(format!("msgctl(key {key}, IPC_STAT)"), errno)),
    };
    sysv::check_ours(&stat.msg_perm).map_err(|foreign| {
        anyhow!("{context}: a queue with this key exists, but {foreign}; {OTHER_ID_HINT}")
    })?;
    let users = peer::queue_users(id.0, &stat);
    if !users.is_empty() {
        anyhow::bail!(
            "{context}: a queue with this key exists already (msqid {id}, used by {}); stop \
             it first, or {OTHER_ID_HINT}",
            peer::listed(&users)
        );
    }
    let used = stat.msg_lspid != 0 || stat.msg_lrpid != 0;
    if !used && made_by_last != Some(id.0) {
        anyhow::bail!(
            "{context}: a queue with this key exists already (msqid {id}, never used, made by \
             a program that is not msgq1 of this suite: a C msgq1 stopped with Ctrl-C?); if it \
             is a leftover, make ipcclean ID=<your ID> removes it; or {OTHER_ID_HINT}"
        );
    }
    let last = match (stat.msg_lspid, stat.msg_lrpid) {
        (0, 0) => "made by a msgq1".to_string(),
        (sent, 0) => format!("last sent to by pid {sent}"),
        (sent, received) => format!("last used by pids {sent} and {received}"),
    };
    crate::cli::warn(format_args!(
        "found a leftover queue (key {key}, msqid {id}) with {} message(s), {last}, which no \
         longer exist(s); removing it",
        stat.msg_qnum
    ));
    match ipc_rmid(id) {
        Ok(()) | Err(Errno::EIDRM | Errno::EINVAL) => Ok(()),
        Err(errno) => Err(access_error(format!("msgctl(key {key}, IPC_RMID)"), errno)),
    }
}

// ---- --stat ---------------------------------------------------------------------------------

/// `--stat` of msgq1 and msgq2: the queue's `msqid_ds` after each step.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatOption {
    /// Print the queue's msqid_ds (msgctl IPC_STAT) after each step
    #[arg(long)]
    pub stat: bool,
}

impl StatOption {
    /// With `--stat`: prints `queue`'s `msqid_ds` (the fields of the slides) after `step`.
    pub fn after(&self, queue: &Queue, step: &str) -> anyhow::Result<()> {
        match self.line(queue, step)? {
            Some(block) => outln!("{block}"),
            None => Ok(()),
        }
    }

    /// What [`StatOption::after`] prints, taken now to be printed later (a server answers
    /// before it prints).
    pub fn line(&self, queue: &Queue, step: &str) -> anyhow::Result<Option<String>> {
        if !self.stat {
            return Ok(None);
        }
        Ok(Some(match ipc_stat(queue.id) {
            Ok(ds) => StatBlock {
                step,
                id: queue.id,
                ds: &ds,
            }
            .to_string(),
            // msgq1 removes its queue as soon as the reply is taken: msgq2 may find it gone.
            Err(Errno::EINVAL | Errno::EIDRM) => format!(
                "  [msqid_ds after {step}] msqid {}: the queue is gone (its server removed it)",
                queue.id
            ),
            Err(errno) => return Err(queue.failed("msgctl", "IPC_STAT", errno)),
        }))
    }
}

/// The `msqid_ds` fields of the slides, as `--stat` prints them (see labs.md):
///
/// ```text
///   [msqid_ds after msgsnd] msqid 65538
///     msg_perm   key 0x8000, uid 1000, cuid 1000, mode 0600
///     msg_qnum 1, msg_cbytes 128, msg_qbytes 16384
///     msg_lspid 4712, msg_lrpid 4711
///     msg_stime 10:31:22, msg_rtime 10:31:22, msg_ctime 10:31:20
/// ```
pub struct StatBlock<'a> {
    /// The call after which it was taken.
    pub step: &'a str,
    /// The queue.
    pub id: MsqId,
    /// What `IPC_STAT` gave.
    pub ds: &'a msqid_ds,
}

impl fmt::Display for StatBlock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ds = self.ds;
        let perm = &ds.msg_perm;
        writeln!(f, "  [msqid_ds after {}] msqid {}", self.step, self.id)?;
        writeln!(
            f,
            "    msg_perm   key {}, uid {}, cuid {}, mode {:04o}",
            Key::from_raw(perm.__key),
            perm.uid,
            perm.cuid,
            perm.mode & 0o777
        )?;
        writeln!(
            f,
            "    msg_qnum {}, msg_cbytes {}, msg_qbytes {}",
            ds.msg_qnum, ds.__msg_cbytes, ds.msg_qbytes
        )?;
        writeln!(
            f,
            "    msg_lspid {}, msg_lrpid {}",
            ds.msg_lspid, ds.msg_lrpid
        )?;
        write!(
            f,
            "    msg_stime {}, msg_rtime {}, msg_ctime {}",
            clock(ds.msg_stime),
            clock(ds.msg_rtime),
            clock(ds.msg_ctime)
        )
    }
}

/// A time of `msqid_ds` as the local time of day (`10:31:22`), `-` for never (0).
fn clock(time: libc::time_t) -> String {
    if time == 0 {
        return "-".into();
    }
    // SAFETY: tm holds integers and one pointer (tm_zone), for which null is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are to live locals; localtime_r writes only into `tm`.
    if unsafe { libc::localtime_r(&time, &mut tm) }.is_null() {
        return time.to_string();
    }
    format!("{:02}:{:02}:{:02}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn the_layout_is_the_c_structs() {
        assert_eq!(size_of::<Message>(), 136);
        assert_eq!(align_of::<Message>(), 8);
        assert_eq!(offset_of!(Message, mtype), 0);
        assert_eq!(offset_of!(Message, mtext), 8);
        assert_eq!((TEXT_LEN, MSG_SIZE, C_MSG_SIZE), (128, 128, 136));
        assert_eq!(offset_of!(MsgBuf<136>, mtext), 8);
    }

    #[test]
    fn a_message_is_type_then_nul_padded_text() {
        let message = Message::new(REQUEST, "hi").unwrap();
        assert_eq!(message.mtype, 1);
        assert_eq!(&message.mtext[..3], b"hi\0");
        assert!(message.mtext[2..].iter().all(|&b| b == 0));
        assert!(Message::new(REPLY, &"x".repeat(127)).is_ok());
        assert!(Message::new(REPLY, &"x".repeat(128)).is_err());
        assert!(Message::new(REPLY, "a\0b").is_err());
        assert_eq!(MsgBuf::<4>::with_bytes(1, b"abcde"), None);
    }

    #[test]
    fn received_never_reaches_past_the_buffer() {
        let message = Message::new(REQUEST, "abc").unwrap();
        assert_eq!(message.received(2), b"ab");
        assert_eq!(message.received(10_000).len(), TEXT_LEN);
    }

    #[test]
    fn the_texts_are_the_c_versions() {
        let pid = Pid::from_raw(4712);
        assert_eq!(request_text(pid), "This is a request from 4712.");
        assert_eq!(reply_text(pid), "This is a reply from 4712.");
    }

    #[test]
    fn the_trace_says_calls_in_c_notation() {
        assert_eq!(
            flags(libc::IPC_CREAT | libc::IPC_EXCL | 0o600),
            "IPC_CREAT|IPC_EXCL|0600"
        );
        assert_eq!(
            flags(libc::IPC_NOWAIT | libc::MSG_NOERROR),
            "IPC_NOWAIT|MSG_NOERROR"
        );
        assert_eq!(flags(0), "0");
        let message = Message::new(REQUEST, "This is a request from 4712.").unwrap();
        assert_eq!(
            describe_msgsnd(MsqId(65538), &message, MSG_SIZE, 0),
            r#"msgsnd(65538, {type 1, "This is a request from 4712."}, 128, 0)"#
        );
        assert_eq!(
            describe_msgctl(MsqId(7), libc::IPC_RMID, false),
            "msgctl(7, IPC_RMID, NULL)"
        );
    }

    #[test]
    fn a_size_beyond_the_buffer_is_refused_before_the_call() {
        let mut small = MsgBuf::<8>::empty();
        assert_eq!(
            raw_msgrcv(MsqId(-1), &mut small, 9, 0, 0),
            Err(Errno::EINVAL)
        );
        assert_eq!(raw_msgsnd(MsqId(-1), &small, 9, 0), Err(Errno::EINVAL));
    }
}
