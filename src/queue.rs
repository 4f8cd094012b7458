//! The `msgq1` server's queue and its `msgq2` client: one System V message queue, key
//! `0x8000 + ID`, mode 0600, made by msgq1; requests of type 1, replies of type 2, as
//! [`crate::layout::message`] lays them out.
//!
//! [`Queue`] is the owner: msgq1's queue is removed when it is dropped — on success, on error,
//! and on a caught termination signal, which travels up through `?` like any error. Who is alive
//! and what is a leftover follows the one model of [`crate::peer`]: a queue is removed only when
//! proven a leftover, a client's waits end when its server's lock is free, and no timer decides
//! an outcome.

use std::ffi::c_long;

use anyhow::anyhow;
use libc::msqid_ds;
use nix::errno::Errno;

use crate::layout::message::{self, MSG_SIZE};
pub use crate::layout::message::{reply_text, request_text, Message, REPLY, REQUEST};
use crate::layout::text::{self, BadText};
use crate::peer::{self, Process, Server, ServerLock, ServerWatch};
use crate::rt::wait::{Deadline, Wait};
use crate::rt::{exit, out, signals};
use crate::sys::failed_hinting;
use crate::sys::ipc::{self, Key, OTHER_ID_HINT, QUEUE_KEY_BASE};
use crate::sys::msg::{self, MsqId};

/// The flags of every receive: wait by polling, cut a C peer's 136-byte message to 128.
const NOWAIT_NOERROR: libc::c_int = libc::IPC_NOWAIT | libc::MSG_NOERROR;

/// msgq1, as its liveness lock ([`ServerLock`]) names it.
pub const MSGQ1: Server = Server {
    program: "msgq1",
    call: "msgget",
    object: "queue",
};

/// A message queue in use: msgq1's, which it made and removes when dropped, or one msgq2
/// found by key.
#[derive(Debug)]
pub struct Queue {
    key: Key,
    id: MsqId,
    /// msgq1's liveness lock: released after the queue is removed (fields are dropped after
    /// [`Queue::drop`] runs).
    server: Option<ServerLock>,
    /// msgq2's watch on the msgq1 that made the queue, if it is one of this suite.
    watch: Option<ServerWatch>,
}

/// A request msgq1 answers: its text, and the process that sent it, when the kernel says so
/// for certain (see [`Queue::receive_request`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The text, printable; what is wrong with it, if anything (it is answered all the same).
    pub text: Result<String, BadText>,
    /// The sender, if it is known for certain and still exists.
    pub sender: Option<Process>,
}

impl Request {
    /// The text as stdout shows it (a text without NUL: all its bytes).
    pub fn shown(&self) -> &str {
        self.text.as_ref().unwrap_or_else(|bad| &bad.shown)
    }
}

impl Queue {
    /// msgq1's queue: `msgget(key, IPC_CREAT|IPC_EXCL|0600)`, removed when dropped.
    ///
    /// First takes the server's liveness lock ([`ServerLock`]), so a second msgq1 on the key is
    /// refused instead of stealing requests. A queue that exists already is removed only when it
    /// is proven a leftover (see `remove_if_leftover`); otherwise msgq1 refuses, naming who
    /// uses it.
    pub fn create(key: Key) -> anyhow::Result<Queue> {
        let server = ServerLock::take(MSGQ1, key)?;
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | ipc::MODE as libc::c_int;
        for _ in 0..3 {
            match msg::msgget(key, flags) {
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
    /// (`find`), and refused if the msgq1 that made it is known to have ended.
    pub fn open(key: Key) -> anyhow::Result<Queue> {
        let no_queue = || anyhow!("msgget(key {key}): no such queue; start msgq1 first");
        let (id, _) = find(key)?.ok_or_else(no_queue)?;
        let mut queue = Queue {
            key,
            id,
            server: None,
            watch: ServerWatch::find_serving(MSGQ1, key, id.0)?,
        };
        // msgq1 removes its queue before its lock goes: one still there was left by a killed one
        // — unless a C server has taken it over since (its msgget has no IPC_EXCL): then a live
        // process uses it, and that one is the server now, watched by the queue's own facts.
        let Some(gone) = queue.server_gone() else {
            return Ok(queue);
        };
        let stat = msg::ipc_stat(id).map_err(|_| no_queue())?;
        if peer::queue_users(id.0, &stat).is_empty() {
            anyhow::bail!(
                "msgget(key {key}): no server: the queue was left by {gone}, which was killed; \
                 start msgq1 first (it replaces the queue)"
            );
        }
        queue.watch = None;
        Ok(queue)
    }

    /// The msgq1 that made this queue, if it is known to have ended ([`ServerWatch`]).
    fn server_gone(&self) -> Option<String> {
        self.watch
            .as_ref()
            .is_some_and(ServerWatch::ended)
            .then(|| self.server())
    }

    /// Without a lock to watch (a C server): the process that took this client's request, once
    /// it has ended and left the queue empty — nobody is left to reply. Asked only while the
    /// client waits for its reply: the queue is empty then only because someone took the
    /// request, and the last receiver (`msg_lrpid`) is who took it. A live process with that
    /// PID (perhaps a stranger) keeps the client waiting: it errs on the side of waiting.
    fn taker_gone(&self) -> Option<String> {
        if self.server.is_some() || self.watch.is_some() {
            return None;
        }
        let ds = msg::ipc_stat(self.id).ok()?;
        let taker = ds.msg_lrpid;
        let me = std::process::id() as libc::pid_t;
        let ended = ds.msg_qnum == 0 && taker > 0 && taker != me;
        (ended && Process::from_raw(taker).is_none())
            .then(|| format!("pid {taker}, which took the request,"))
    }

    /// Who a client waits for, for the note of a long wait.
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
        let call = || format!("msgctl(queue {}, IPC_STAT)", self.key);
        msg::ipc_stat(self.id).map_err(|errno| access_error(call(), errno))
    }

    /// `msgsnd(id, message, 128, IPC_NOWAIT)`, waiting while the queue is full, until a
    /// termination signal, `deadline`, or the end of the msgq1 that made the queue.
    pub fn send(&self, message: &Message, deadline: Deadline) -> anyhow::Result<()> {
        let (key, mtype) = (self.key, message.mtype);
        let what = || match self.server {
            Some(_) => format!("room in queue {key} (it is full)"), // msgq1's reply
            None => format!("room in queue {key} (it is full), for {}", self.server()),
        };
        let call = format!("msgsnd(queue {key}, type {mtype})");
        self.waiting(Wait::new(deadline).saying(&what), call, |polling| {
            msg::msgsnd_waiting(self.id, message, MSG_SIZE, libc::IPC_NOWAIT, polling)
        })
    }

    /// `msgrcv(id, &msg, 128, mtype, IPC_NOWAIT|MSG_NOERROR)`: waits for the first message of
    /// type `mtype` as `wait` does (see [`Queue::waiting`]), and returns its text. `MSG_NOERROR`
    /// cuts a C peer's 136-byte message to the 128 bytes of its text.
    fn receive(&self, mtype: c_long, wait: Wait<'_>) -> anyhow::Result<Result<String, BadText>> {
        let mut message = Message::empty();
        let call = format!("msgrcv(queue {}, type {mtype})", self.key);
        let len = self.waiting(wait, call, |polling| {
            msg::msgrcv_waiting(
                self.id,
                &mut message,
                MSG_SIZE,
                mtype,
                NOWAIT_NOERROR,
                polling,
            )
        })?;
        Ok(text::decode_text(message.received(len)))
    }

    /// msgq2's wait for its reply, and the reply's text.
    pub fn receive_reply(&self, deadline: Deadline) -> anyhow::Result<Result<String, BadText>> {
        let what = || format!("the reply from {}", self.server());
        self.receive(REPLY, Wait::new(deadline).saying(&what))
    }

    /// msgq1's wait for a request: the first message of type 1, and who sent it. A server waits
    /// for requests by nature: its wait says nothing.
    ///
    /// System V says only who sent *last* (`msg_lspid`), not who sent the message received. That
    /// is the request's sender for certain when the `IPC_STAT` just after the receive finds the
    /// queue empty and this process its last receiver: nothing was sent after the request, or
    /// it would still be there. Else (another request or message waits behind it, or a request
    /// in the C's form names another PID) the sender is unknown, and the request is answered
    /// all the same. A request whose sender is known to have ended is reported and skipped:
    /// nobody would take its reply.
    pub fn receive_request(&self, deadline: Deadline) -> anyhow::Result<Request> {
        let me = std::process::id() as libc::pid_t;
        loop {
            let text = self.receive(REQUEST, Wait::new(deadline))?;
            let ds = self.stat()?;
            let named = text.as_ref().ok().and_then(|t| message::request_names(t));
            let certain = ds.msg_qnum == 0
                && ds.msg_lrpid == me
                && ds.msg_lspid > 0
                && named.is_none_or(|pid| pid == ds.msg_lspid);
            let sender = certain.then(|| Process::from_raw(ds.msg_lspid));
            let ended = matches!(sender, Some(None));
            let request = Request {
                text,
                sender: sender.flatten(),
            };
            if !ended {
                return Ok(request);
            }
            out::warn(format_args!(
                "request \"{}\" skipped: its sender, pid {}, no longer exists",
                request.shown(),
                ds.msg_lspid
            ));
        }
    }

    /// How many replies (type 2) wait in the queue now — left by an earlier exchange, if a
    /// client asks before it sends its request: its `msgrcv` would take the oldest of them. Looks
    /// at each message without taking it (`MSG_COPY`, Linux 3.8 with checkpoint/restore); 0
    /// where that cannot be done.
    pub fn replies_waiting(&self) -> anyhow::Result<u64> {
        let mut replies = 0;
        for index in 0..self.stat()?.msg_qnum {
            let mut copy = Message::empty();
            let flags = NOWAIT_NOERROR | libc::MSG_COPY;
            match msg::msgrcv(self.id, &mut copy, MSG_SIZE, index as c_long, flags) {
                Ok(_) => replies += u64::from(copy.mtype == REPLY),
                // Taken meanwhile (ENOMSG), or no MSG_COPY in this kernel (ENOSYS, EINVAL).
                Err(_) => break,
            }
        }
        Ok(replies)
    }

    /// msgq1 after its reply: polls `IPC_STAT` until a client has taken it — someone else has
    /// received from the queue since (`msg_lrpid` is no longer this process), or it is empty —
    /// or `requester`, the process that asked, has ended. No timer decides: a client paused at
    /// a `--step` prompt for minutes still gets its reply. Returns what to say then: a warning
    /// (the reply was taken by another process than the one that asked, messages are left
    /// unread), or the error of a requester that ended without taking it.
    pub fn wait_until_taken(
        &self,
        requester: Option<Process>,
        deadline: Deadline,
    ) -> anyhow::Result<anyhow::Result<Option<String>>> {
        let (key, me) = (self.key, std::process::id() as libc::pid_t);
        let taken = |ds: &msqid_ds| ds.msg_lrpid != me || ds.msg_qnum == 0;
        let what = || match &requester {
            Some(asked) => format!("{asked} to take the reply from queue {key}"),
            None => format!("a client to take the reply from queue {key}"),
        };
        let call = format!("waiting for the reply to be taken (queue {key})");
        let mut requester_gone = false;
        let wait = Wait::new(deadline).saying(&what);
        let stat = self.waiting(wait, call.clone(), |polling| {
            msg::ipc_stat_until(self.id, polling, |ds| {
                // Whether the requester has ended is asked *before* the next snapshot: one
                // that took the reply and then ended shows in it as having taken it.
                let done = taken(ds) || requester_gone;
                requester_gone = requester
                    .as_ref()
                    .is_some_and(|r| Process::alive(r.pid).is_none());
                done
            })
        })?;
        let unread = stat.msg_qnum;
        let lost =
            (unread > 0).then(|| format!("removing the queue with {unread} unread message(s)"));
        Ok(match (taken(&stat), &requester) {
            (false, asked) => {
                let who = asked
                    .as_ref()
                    .map_or("the client".into(), Process::to_string);
                let lost = lost.unwrap_or_default();
                Err(anyhow!("{call}: {who} ended without taking it; {lost}"))
            }
            (true, Some(asked)) if stat.msg_lrpid != asked.pid.as_raw() => Ok(Some(format!(
                "the reply was taken by pid {}, not by {asked} who asked (a reply of type 2 is \
                 for whoever waits first){}",
                stat.msg_lrpid,
                lost.map(|lost| format!("; {lost}")).unwrap_or_default()
            ))),
            (true, _) => Ok(lost),
        })
    }

    /// A wait on the queue: `make` with `wait` (see [`msg::Polling`]), which also ends when the
    /// msgq1 that made the queue is known to have ended. Why it failed: a caught signal (exit
    /// 128+signal), the deadline, the server gone, the queue removed under it, or another
    /// failure of `call`.
    fn waiting<T>(
        &self,
        mut wait: Wait<'_>,
        call: String,
        make: impl FnOnce(msg::Polling<'_, '_>) -> nix::Result<T>,
    ) -> anyhow::Result<T> {
        let gone_now = || self.server_gone().or_else(|| self.taker_gone());
        let gone = || gone_now().is_some();
        let errno = match make(Some((&mut wait, &gone))) {
            Ok(done) => return Ok(done),
            Err(errno) => errno,
        };
        if let Err(interrupted) = signals::check() {
            return Err(anyhow::Error::new(interrupted).context(call));
        }
        if let (Errno::ETIMEDOUT, Err(timed_out)) = (errno, wait.deadline().check()) {
            return Err(anyhow::Error::new(timed_out).context(call));
        }
        let queue_left = || msg::ipc_stat(self.id).is_ok();
        Err(match (errno, gone_now()) {
            (Errno::ENOMSG | Errno::EAGAIN, Some(gone)) if queue_left() => anyhow!(
                "{call}: {gone} ended without replying (killed?) and left its queue behind: {}",
                ipcclean(self.key)
            ),
            // Removed while blocked in the call: EIDRM; removed between two tries: the ID is gone.
            (Errno::EIDRM | Errno::EINVAL | Errno::ENOMSG | Errno::EAGAIN, _) => anyhow!(
                "{call}: the queue was removed while waiting (by its server, or with ipcrm)"
            ),
            (other, _) => anyhow!("{call}: {}", exit::reason(other)),
        })
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        if self.server.is_some() {
            let _ = msg::ipc_rmid(self.id);
        }
    }
}

/// `make ipcclean ID=5`: what removes a leftover under `key` (queue key `0x8000 + ID`).
fn ipcclean(key: Key) -> String {
    format!("make ipcclean ID={}", key.raw() - QUEUE_KEY_BASE)
}

/// The error of a call refused on an object: with the hint to use another ID when the key
/// belongs to someone else.
fn access_error(call: String, errno: Errno) -> anyhow::Error {
    let hint = match errno {
        Errno::EACCES | Errno::EPERM => format!(" (another user's queue?); {OTHER_ID_HINT}"),
        Errno::ENOSPC => " (the machine's limit of queues is reached: see ipcs -q)".into(),
        Errno::EIDRM | Errno::EINVAL => return anyhow!("{call}: the queue was removed meanwhile"),
        _ => String::new(),
    };
    failed_hinting(errno, call, &hint)
}

/// The queue under `key` and its state (`msgget(key, 0)`, `IPC_STAT`), if there is one. One
/// that is not ours is refused ([`ipc::check_ours`]), even when it lets us in: on a shared
/// machine another user could have made the key first, mode 0666, to read every request.
fn find(key: Key) -> anyhow::Result<Option<(MsqId, msqid_ds)>> {
    let context = format!("msgget(key {key})");
    let id = match msg::msgget(key, 0) {
        Ok(id) => id,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => return Err(access_error(context, errno)),
    };
    let stat = match msg::ipc_stat(id) {
        Ok(stat) => stat,
        Err(Errno::EIDRM | Errno::EINVAL) => return Ok(None), // removed meanwhile
        Err(errno) => return Err(access_error(format!("msgctl(key {key}, IPC_STAT)"), errno)),
    };
    ipc::check_ours(&stat.msg_perm).map_err(|foreign| {
        anyhow!("{context}: the queue is not yours: {foreign}; {OTHER_ID_HINT}")
    })?;
    Ok(Some((id, stat)))
}

/// A queue found under msgq1's key while it holds the liveness lock (so no msgq1 of ours serves
/// it): removed only if it is proven a leftover ([`crate::peer`]) — ours, no process that used
/// it alive (`msg_lspid`, `msg_lrpid`, whoever waits in `msgrcv`/`msgsnd` on it now), and, for
/// a queue never used, made by the previous holder of our lock (`made_by_last` is the ID it
/// recorded). Otherwise refused, naming who uses it (a C msgq1, ipcbench, a waiting client).
fn remove_if_leftover(key: Key, made_by_last: Option<i32>) -> anyhow::Result<()> {
    let Some((id, stat)) = find(key)? else {
        return Ok(()); // gone meanwhile: make ours
    };
    let exists = format!("msgget(key {key}): a queue with this key exists already (msqid {id}");
    let users = peer::queue_users(id.0, &stat);
    if !users.is_empty() {
        anyhow::bail!(
            "{exists}, used by {}); stop it first, or {OTHER_ID_HINT}",
            peer::listed(&users)
        );
    }
    let last = match (stat.msg_lspid, stat.msg_lrpid) {
        (0, 0) if made_by_last != Some(id.0) => anyhow::bail!(
            "{exists}, never used, made by a program that is not msgq1 of this suite: a C msgq1 \
             stopped with Ctrl-C?); if it is a leftover, {} removes it; or {OTHER_ID_HINT}",
            ipcclean(key)
        ),
        (0, 0) => "made by a msgq1".to_string(),
        (sent, 0) => format!("last sent to by pid {sent}"),
        (sent, received) => format!("last used by pids {sent} and {received}"),
    };
    let unseen = peer::unseen_queue_waiters();
    if !unseen.is_empty() && made_by_last != Some(id.0) {
        anyhow::bail!(
            "{exists}); {} wait(s) in msgrcv or msgsnd on a queue that cannot be seen \
             (/proc/PID/syscall may not be read: ptrace is restricted), perhaps this one; if it \
             is a leftover, ipcrm -q {id} removes it; or {OTHER_ID_HINT}",
            peer::listed_briefly(&unseen)
        );
    }
    out::warn(format_args!(
        "found a leftover queue (key {key}, msqid {id}) with {} message(s), {last}, which no \
         longer exist(s); removing it",
        stat.msg_qnum
    ));
    match msg::ipc_rmid(id) {
        Ok(()) | Err(Errno::EIDRM | Errno::EINVAL) => Ok(()),
        Err(errno) => Err(access_error(format!("msgctl(key {key}, IPC_RMID)"), errno)),
    }
}
