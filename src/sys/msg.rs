//! The message queue calls: `msgget`, `msgsnd`, `msgrcv`, `msgctl`, with their C argument order,
//! each said by classroom mode as it is made (`[msgq1 4711] msgget(0x8000,
//! IPC_CREAT|IPC_EXCL|0600) = 65538`). The message they move is the C struct of
//! [`crate::layout::message`].
//!
//! **Waiting.** A blocking `msgrcv` cannot watch the signal self-pipe: a signal that arrives just
//! before the call would be slept through. So the waits of the suite ([`msgsnd_waiting`],
//! [`msgrcv_waiting`], [`ipc_stat_until`]) make the call with `IPC_NOWAIT` and, while there is
//! nothing yet, try again after a polite pause ([`Wait`]), ending on a termination signal
//! (`EINTR`) and at the deadline (`ETIMEDOUT`). Classroom mode shows such a wait as **one**
//! call, with the number of tries (labs.md, msgq).

use std::cell::Cell;
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

/// How a call waits (see the module docs): not at all (`None`), or again after each pause of
/// the [`Wait`] while it finds nothing yet, unless the function says whoever would come has ended.
pub type Polling<'w, 'a> = Option<(&'w mut Wait<'a>, &'w dyn Fn() -> bool)>;

/// Makes `call` as one traced call, said by `describe`, its result by `show`. With `polling`,
/// a `not_yet` failure (`EAGAIN`, `ENOMSG`) means "try again" until the wait ends (`EINTR` on
/// a termination signal, `ETIMEDOUT` at the deadline) or the peer is gone (then `not_yet`).
fn made<T>(
    describe: impl FnOnce() -> String,
    mut polling: Polling<'_, '_>,
    not_yet: Errno,
    mut call: impl FnMut() -> nix::Result<T>,
    show: impl FnOnce(&T) -> String,
) -> nix::Result<T> {
    let tries = Cell::new(0u32);
    // A call that may wait is said when it starts, the wait being part of it (--trace-time).
    let pause = match polling {
        Some(_) => trace::Pause::Blocking,
        None => trace::Pause::EndedBySignal,
    };
    let make = || loop {
        tries.set(tries.get().saturating_add(1));
        let wait = match (call(), &mut polling) {
            (Err(errno), Some((wait, gone))) if errno == not_yet && !gone() => wait,
            (result, _) => return result,
        };
        if wait.check().is_err() {
            return Err(match signals::caught() {
                Some(_) => Errno::EINTR,
                None => Errno::ETIMEDOUT,
            });
        }
        wait.pause();
    };
    let show = |done: &T| match tries.get() {
        1 => show(done),
        n => format!("{} (tried {n} times)", show(done)),
    };
    trace::traced(describe, make, show, pause)
}

/// `msgsnd(2)`: queues `msgp`'s type and the first `msgsz` bytes of its text. A size larger than
/// the buffer fails with `EINVAL` before the call (the kernel would read past it).
pub fn msgsnd<const N: usize>(
    msqid: MsqId,
    msgp: &MsgBuf<N>,
    msgsz: usize,
    msgflg: c_int,
) -> nix::Result<()> {
    msgsnd_waiting(msqid, msgp, msgsz, msgflg, None)
}

/// [`msgsnd`], as a wait with `polling` (`msgflg` with `IPC_NOWAIT`): while the queue is full,
/// until its reader is gone (then `EAGAIN`).
pub fn msgsnd_waiting<const N: usize>(
    msqid: MsqId,
    msgp: &MsgBuf<N>,
    msgsz: usize,
    msgflg: c_int,
    polling: Polling<'_, '_>,
) -> nix::Result<()> {
    let describe = || {
        let message = shown(msgp, msgsz);
        format!("msgsnd({msqid}, {message}, {msgsz}, {})", flags(msgflg))
    };
    let call = || {
        if msgsz > N {
            return Err(Errno::EINVAL);
        }
        let pointer: *const MsgBuf<N> = msgp;
        // SAFETY: `pointer` is a live MsgBuf<N> (a C long, then N bytes: the layout msgsnd
        // reads), borrowed for the call; msgsnd reads the long and msgsz <= N bytes after it.
        let result = unsafe { libc::msgsnd(msqid.0, pointer.cast(), msgsz, msgflg) };
        Errno::result(result).map(drop)
    };
    made(describe, polling, Errno::EAGAIN, call, |()| "0".into())
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
    msgrcv_waiting(msqid, msgp, msgsz, msgtyp, msgflg, None)
}

/// [`msgrcv`], as a wait with `polling` (`msgflg` with `IPC_NOWAIT`): until a message of
/// `msgtyp` comes, or its sender is gone (then `ENOMSG`).
pub fn msgrcv_waiting<const N: usize>(
    msqid: MsqId,
    msgp: &mut MsgBuf<N>,
    msgsz: usize,
    msgtyp: c_long,
    msgflg: c_int,
    polling: Polling<'_, '_>,
) -> nix::Result<usize> {
    let describe = || {
        format!(
            "msgrcv({msqid}, &msg, {msgsz}, {msgtyp}, {})",
            flags(msgflg)
        )
    };
    let call = || {
        if msgsz > N {
            return Err(Errno::EINVAL);
        }
        let pointer: *mut MsgBuf<N> = msgp;
        // SAFETY: `pointer` is a live MsgBuf<N>, borrowed mutably for the call; msgrcv writes
        // the type (a C long) and at most msgsz <= N bytes of text after it.
        let len = unsafe { libc::msgrcv(msqid.0, pointer.cast(), msgsz, msgtyp, msgflg) };
        let len = Errno::result(len)? as usize;
        // What it took, for the trace line (made only in classroom mode).
        Ok((len, trace::enabled().then(|| shown(msgp, len))))
    };
    let show = |(len, message): &(usize, Option<String>)| match message {
        Some(message) => format!("{len} {message}"),
        None => len.to_string(),
    };
    made(describe, polling, Errno::ENOMSG, call, show).map(|(len, _)| len)
}

/// `msgctl(msqid, IPC_STAT, &buf)`: the queue's state.
pub fn ipc_stat(msqid: MsqId) -> nix::Result<msqid_ds> {
    ipc_stat_until(msqid, None, |_| true)
}

/// [`ipc_stat`], as a wait with `polling`: until `done(&buf)`. Returns the last state.
pub fn ipc_stat_until(
    msqid: MsqId,
    polling: Polling<'_, '_>,
    mut done: impl FnMut(&msqid_ds) -> bool,
) -> nix::Result<msqid_ds> {
    let call = || {
        // SAFETY: msqid_ds holds only integers (and padding): all-zero bytes are valid.
        let mut ds: msqid_ds = unsafe { std::mem::zeroed() };
        // SAFETY: IPC_STAT writes one msqid_ds into `ds`, a live local.
        Errno::result(unsafe { libc::msgctl(msqid.0, libc::IPC_STAT, &mut ds) })?;
        done(&ds).then_some(ds).ok_or(Errno::EAGAIN)
    };
    let show = |ds: &msqid_ds| {
        format!(
            "0 {{msg_qnum {}, msg_cbytes {}, msg_lspid {}, msg_lrpid {}}}",
            ds.msg_qnum, ds.__msg_cbytes, ds.msg_lspid, ds.msg_lrpid
        )
    };
    let describe = || format!("msgctl({msqid}, IPC_STAT, &buf)");
    made(describe, polling, Errno::EAGAIN, call, show)
}

/// `msgctl(msqid, IPC_RMID, NULL)`: removes the queue; processes waiting on it fail with
/// `EIDRM`, later calls with its ID with `EINVAL`. A cleanup call: made even when a termination
/// signal ends the classroom pause before it ([`trace::cleanup_call`]).
pub fn ipc_rmid(msqid: MsqId) -> nix::Result<()> {
    let null = std::ptr::null_mut();
    trace::cleanup_call(
        || format!("msgctl({msqid}, IPC_RMID, NULL)"),
        // SAFETY: IPC_RMID reads and writes no buffer.
        || Errno::result(unsafe { libc::msgctl(msqid.0, libc::IPC_RMID, null) }).map(drop),
        |()| "0".into(),
    )
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
            shown(&message, MSG_SIZE),
            r#"{type 1, "This is a request from 4712."}"#
        );
    }

    #[test]
    fn a_size_beyond_the_buffer_is_refused_before_the_call() {
        let mut small = MsgBuf::<8>::empty();
        assert_eq!(msgrcv(MsqId(-1), &mut small, 9, 0, 0), Err(Errno::EINVAL));
        assert_eq!(msgsnd(MsqId(-1), &small, 9, 0), Err(Errno::EINVAL));
    }
}
