//! The message queue calls: `msgget`, `msgsnd`, `msgrcv`, `msgctl`, with their C argument order,
//! each said by classroom mode as it is made (`[msgq1 4711] msgget(0x8000,
//! IPC_CREAT|IPC_EXCL|0600) = 65538`). The message they move is the C struct of
//! [`crate::layout::message`].
//!
//! **Waiting.** A blocking `msgrcv` cannot watch the signal self-pipe: a signal that arrives just
//! before the call would be slept through. So the waits of the suite ([`msgsnd_waiting`],
//! [`msgrcv_waiting`], [`ipc_stat_until`]) make the call with `IPC_NOWAIT` and, while there is
//! nothing yet, try again after a polite pause ([`Wait`]: spin, `sched_yield`, then sleeps
//! growing to 1 ms, 5 ms after a second), ending on a termination signal (`EINTR`) and at the
//! deadline. In classroom mode such a wait shows as **one** call, with the number of tries.

use std::ffi::{c_int, c_long};
use std::fmt;

use libc::msqid_ds;
use nix::errno::Errno;

use super::ipc::Key;
use super::trace;
use crate::layout::message::MsgBuf;
use crate::layout::text;
use crate::rt::signals;
use crate::rt::wait::Wait;

/// A message queue identifier, as `msgget` returns it and `ipcs -q` lists it (`msqid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MsqId(pub c_int);

impl fmt::Display for MsqId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const FLAG_NAMES: [(i64, &str); 6] = [
    (libc::IPC_CREAT as i64, "IPC_CREAT"),
    (libc::IPC_EXCL as i64, "IPC_EXCL"),
    (libc::IPC_NOWAIT as i64, "IPC_NOWAIT"),
    (libc::MSG_NOERROR as i64, "MSG_NOERROR"),
    (libc::MSG_EXCEPT as i64, "MSG_EXCEPT"),
    (libc::MSG_COPY as i64, "MSG_COPY"),
];

fn flags(msgflg: c_int) -> String {
    trace::flags(msgflg.into(), &FLAG_NAMES, "0")
}

/// `{type 1, "This is a request from 4712."}`: a message as the trace shows it.
fn shown<const N: usize>(message: &MsgBuf<N>, len: usize) -> String {
    let text = text::c_string(message.received(len), 40);
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
    let msgflg = flags(msgflg);
    format!("msgrcv({msqid}, &msg, {msgsz}, {msgtyp}, {msgflg})")
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
/// the queue's state — made only in classroom mode), and how many tries a wait made.
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
/// `EIDRM`, later calls with its ID with `EINVAL`. A cleanup call: made even when a termination
/// signal ends the classroom pause before it ([`trace::cleanup_call`]).
pub fn ipc_rmid(msqid: MsqId) -> nix::Result<()> {
    trace::cleanup_call(
        || describe_msgctl(msqid, libc::IPC_RMID, false),
        || raw_msgctl(msqid, libc::IPC_RMID, None).map(drop),
        |()| "0".into(),
    )
}

// ---- waiting (see the module docs) ----------------------------------------------------------

/// Makes `attempt` (a call with `IPC_NOWAIT`: `Ok(None)` for "not yet") until it gives its
/// outcome, pausing as `wait` does; as one traced call, said by `describe`. Fails with `EINTR`
/// on a termination signal, `ETIMEDOUT` at the deadline, and with the "not yet" errno
/// (`EAGAIN`, `ENOMSG`) that `attempt` returns when the peer will not come.
fn polled(
    describe: impl FnOnce() -> String,
    wait: &mut Wait<'_>,
    mut attempt: impl FnMut() -> nix::Result<Option<Outcome>>,
) -> nix::Result<Outcome> {
    let mut tries = 0u32;
    trace::call(
        describe,
        || loop {
            tries = tries.saturating_add(1);
            if let Some(outcome) = attempt()? {
                return Ok(Outcome { tries, ..outcome });
            }
            if wait.check().is_err() {
                return Err(match signals::caught() {
                    Some(_) => Errno::EINTR,
                    None => Errno::ETIMEDOUT,
                });
            }
            wait.pause();
        },
        Outcome::to_string,
    )
}

/// `msgsnd(msqid, msgp, msgsz, IPC_NOWAIT)` until the queue has room (see [`polled`]), or
/// `gone()` says whoever empties it has ended (then `EAGAIN`).
pub fn msgsnd_waiting<const N: usize>(
    msqid: MsqId,
    msgp: &MsgBuf<N>,
    msgsz: usize,
    wait: &mut Wait<'_>,
    gone: impl Fn() -> bool,
) -> nix::Result<()> {
    let flags = libc::IPC_NOWAIT;
    polled(
        || describe_msgsnd(msqid, msgp, msgsz, flags),
        wait,
        || match raw_msgsnd(msqid, msgp, msgsz, flags) {
            Err(Errno::EAGAIN) if gone() => Err(Errno::EAGAIN),
            Err(Errno::EAGAIN) => Ok(None),
            other => other.map(|()| Some(Outcome::new(0, 1))),
        },
    )
    .map(drop)
}

/// `msgrcv(msqid, msgp, N, msgtyp, IPC_NOWAIT|MSG_NOERROR)` until a message of `msgtyp` comes
/// (see [`polled`]), or `gone()` says its sender has ended (then `ENOMSG`). `MSG_NOERROR` cuts
/// a C peer's 136-byte message to the buffer. Returns the length of the text received.
pub fn msgrcv_waiting<const N: usize>(
    msqid: MsqId,
    msgp: &mut MsgBuf<N>,
    msgtyp: c_long,
    wait: &mut Wait<'_>,
    gone: impl Fn() -> bool,
) -> nix::Result<usize> {
    let flags = libc::IPC_NOWAIT | libc::MSG_NOERROR;
    let outcome = polled(
        || describe_msgrcv(msqid, N, msgtyp, flags),
        wait,
        || match raw_msgrcv(msqid, msgp, N, msgtyp, flags) {
            Err(Errno::ENOMSG) if gone() => Err(Errno::ENOMSG),
            Err(Errno::ENOMSG) => Ok(None),
            Err(e) => Err(e),
            Ok(len) => Ok(Some(Outcome::new(len as i64, 1).found(|| shown(msgp, len)))),
        },
    )?;
    Ok(outcome.result as usize)
}

/// `msgctl(msqid, IPC_STAT, &buf)` until `done(&buf)` (see [`polled`]); the last state.
pub fn ipc_stat_until(
    msqid: MsqId,
    wait: &mut Wait<'_>,
    mut done: impl FnMut(&msqid_ds) -> bool,
) -> nix::Result<msqid_ds> {
    let mut ds = empty_stat();
    polled(
        || describe_msgctl(msqid, libc::IPC_STAT, true),
        wait,
        || {
            raw_msgctl(msqid, libc::IPC_STAT, Some(&mut ds))?;
            Ok(done(&ds).then(|| Outcome::new(0, 1).found(|| summary(&ds))))
        },
    )?;
    Ok(ds)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::message::{Message, MSG_SIZE, REQUEST};

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
