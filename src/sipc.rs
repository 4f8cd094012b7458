//! The `sipc1`/`sipc2` protocol over the segment of [`crate::layout::sipc`]: [`Server`] (wait
//! for a live request, claim it, answer it) and [`Client`] (leave a request, wait for the
//! answer), so that the binaries read like the slide. Neither trusts a flag value the protocol
//! does not have, nor a request whose client has gone (labs.md, sipc).

use std::cell::Cell;
use std::sync::atomic::Ordering::{Acquire, Relaxed};

use anyhow::{bail, Context};

pub use crate::layout::sipc::{Sipc, EMPTY, REQUEST, SIPC_SIZE};
use crate::layout::text::BadText;
use crate::peer::{self, Process};
use crate::rt::out::warn;
use crate::rt::wait::Deadline;
use crate::segment::{Attached, Awaited, Segment};
use crate::sys::ipc::OTHER_ID_HINT;
use crate::sys::{self, trace};

/// sipc1, as its liveness lock ([`crate::peer::ServerLock`]) names it.
pub const SIPC1: peer::Server = peer::Server {
    program: "sipc1",
    call: "shmget",
    object: "segment",
};

/// One side of the pair: the segment, and its memory as the C programs lay it out.
struct Side<'a> {
    segment: &'a Segment,
    area: &'a Sipc,
}

impl<'a> Side<'a> {
    fn new(segment: &'a Segment, attached: &'a Attached<'a>) -> anyhow::Result<Side<'a>> {
        let area = attached.sipc()?;
        Ok(Side { segment, area })
    }

    /// `the flag of segment 0x9005 holds 7, neither 0 (empty) nor 1 (a request)`.
    fn unknown_flag(&self, value: i32) -> String {
        let key = self.segment.key();
        format!("the flag of segment {key} holds {value}, neither 0 (empty) nor 1 (a request)")
    }

    /// The hand-off ([`Sipc::put`]) as the lecture's two events, each said and stepped in
    /// classroom mode: `strcpy(shm + 4, "…")`, then `*flag = 1` (or 0).
    fn hand_over(&self, text: &str, flag: i32) -> anyhow::Result<()> {
        let area = self.area;
        let said = || {
            format!(
                "strcpy(shm + 4, {})",
                crate::layout::text::string(text.as_bytes(), 40)
            )
        };
        trace::event(said, || area.put_text(text), |_| String::new())
            .map_err(|e| sys::failed(e, "strcpy"))??;
        trace::event(
            || format!("*flag = {flag}"),
            || area.set_flag(flag),
            |()| String::new(),
        )
        .map_err(|e| sys::failed(e, "*flag"))
    }

    /// Waits (as [`Segment::wait_until`]) until the flag is no longer `was`, and says in
    /// classroom mode what was seen after how many looks: `*flag == 1 seen after 1502 looks`
    /// (with `--trace-time` also the wait as it starts: `while (*flag == 0) <unfinished …>`).
    fn wait_for_flag_change(
        &self,
        was: i32,
        deadline: Deadline,
        awaited: Awaited,
    ) -> anyhow::Result<()> {
        let looks = Cell::new(0u64);
        let look = || {
            looks.set(looks.get() + 1);
            self.area.flag.load(Acquire) != was
        };
        trace::waited(
            || format!("while (*flag == {was})"),
            || self.segment.wait_until(deadline, awaited, look),
            |waited| {
                let (now, looks) = (self.area.flag.load(Acquire), looks.get());
                match waited {
                    Ok(()) => format!("*flag == {now} seen after {looks} looks"),
                    Err(_) => format!("*flag == {now} after {looks} looks: gave up"),
                }
            },
        )
    }

    /// The error of a flag value that neither program of the pair writes, found while a
    /// process is attached that may have written it: `doing (segment 0x9005): the flag …`.
    fn foreign_flag(&self, doing: &str, value: i32) -> anyhow::Error {
        let (key, flag) = (self.segment.key(), self.unknown_flag(value));
        anyhow::anyhow!(
            "{doing} (segment {key}): {flag}; is another program using this key? {OTHER_ID_HINT}"
        )
    }
}

// ---- the server -----------------------------------------------------------------------------

/// sipc1's side of the protocol.
pub struct Server<'a>(Side<'a>);

impl<'a> Server<'a> {
    /// The server of the segment attached as `attached`. Refused if another process that is no
    /// client, and started before this one, waits on it with no request waiting: another server
    /// (a C sipc1, or a sipc1 with another `IPCLAB_LOCK_DIR`) — two servers would both answer a
    /// request.
    /// Of servers started side by side, the oldest stays.
    pub fn new(segment: &'a Segment, attached: &'a Attached<'a>) -> anyhow::Result<Server<'a>> {
        let side = Side::new(segment, attached)?;
        let others: Vec<Process> = peer::attached(segment.id().0)
            .into_iter()
            .filter(|process| process.name != "sipc2" && process.started_before_me())
            .collect();
        if side.area.flag.load(Acquire) == EMPTY && !others.is_empty() {
            bail!(
                "shmget(key {}): the segment is in use by {}, attached with no request waiting \
                 (another server?); stop it first, or {OTHER_ID_HINT}",
                segment.key(),
                peer::listed(&others)
            );
        }
        Ok(Server(side))
    }

    /// Waits until a live request is waiting (`*flag == 1` with its client attached) and returns
    /// its text. A request left by a client that has gone (nobody else attached) is reported,
    /// cleared and not answered.
    pub fn next_request(&self, deadline: Deadline) -> anyhow::Result<Result<String, BadText>> {
        let Side { segment, area } = &self.0;
        let key = segment.key();
        loop {
            self.0
                .wait_for_flag_change(EMPTY, deadline, Awaited::NewPeer)
                .with_context(|| format!("waiting for a request (segment {key})"))?;
            let client_attached = segment.others_attached()?; // shmctl(IPC_STAT): nattch > 1
            let (flag, text) = area.take(); // after the look: it may have changed meanwhile
            match (flag, client_attached) {
                (REQUEST, true) => return Ok(text),
                (EMPTY, _) => continue,
                (_, true) => return Err(self.0.foreign_flag("waiting for a request", flag)),
                // Left by a process that has gone (a killed client; a C client stopped with
                // Ctrl-C): nobody else is attached. Clear it, say so, wait for a live request.
                (_, false) => {
                    // `*flag = 0`, said and stepped like every other change of the flag; made
                    // only if nobody changed the flag meanwhile (then the trace says so).
                    let _cleared = trace::event(
                        || format!("*flag = {EMPTY}"),
                        || area.flag.compare_exchange(flag, EMPTY, Relaxed, Relaxed),
                        |cleared| match cleared {
                            Ok(_) => String::new(),
                            Err(now) => format!("{now} (changed meanwhile: left as it is)"),
                        },
                    )
                    .map_err(|e| sys::failed(e, "*flag"))?;
                    match flag {
                        REQUEST => warn(format_args!(
                            "stale request {} in segment {key}: its client has gone (nobody \
                             else is attached); not answered",
                            area.quoted_text()
                        )),
                        _ => warn(format_args!(
                            "{}, left by a process that has gone (nobody else is attached); \
                             reset to 0",
                            self.0.unknown_flag(flag)
                        )),
                    }
                }
            }
        }
    }

    /// Answers the request: claims it ([`Sipc::claim`]: another server may have seen it too),
    /// then hands `text` over with the flag back to 0 ([`Sipc::put`]).
    pub fn reply(&self, text: &str) -> anyhow::Result<()> {
        let Side { segment, area } = &self.0;
        if let Err(first) = area.claim(std::process::id() as i32) {
            bail!(
                "answering the request (segment {}): another server (pid {first}) took it first",
                segment.key()
            );
        }
        self.0.hand_over(text, EMPTY)
    }
}

// ---- the client -----------------------------------------------------------------------------

/// sipc2's side of the protocol.
pub struct Client<'a>(Side<'a>);

impl<'a> Client<'a> {
    /// The client of the segment attached as `attached`; refused on a segment another program
    /// of the suite serves (ipcbench's).
    pub fn new(segment: &'a Segment, attached: &'a Attached<'a>) -> anyhow::Result<Client<'a>> {
        peer::ServerWatch::find_serving(SIPC1, segment.key(), segment.id().0)?;
        Side::new(segment, attached).map(Client)
    }

    /// Leaves the request `text` for the server (`*flag = 1`). The C has no lock: a request
    /// already waiting is another client's, unless that client has gone (nobody else attached)
    /// — then it is stale, and ours replaces it.
    pub fn send(&self, text: &str) -> anyhow::Result<()> {
        let Side { segment, area } = &self.0;
        let key = segment.key();
        let found = area.flag.load(Acquire);
        if found != EMPTY {
            match (found, segment.others_attached()?) {
                (REQUEST, true) => bail!(
                    "sending the request (segment {key}): another request is waiting (another \
                     sipc2?); try again later"
                ),
                (_, true) => return Err(self.0.foreign_flag("sending the request", found)),
                (REQUEST, false) => warn(format_args!(
                    "replacing a stale request {} in segment {key}: its client has gone",
                    area.quoted_text()
                )),
                (_, false) => warn(format_args!(
                    "{}, left by a process that has gone (nobody else is attached); replacing it",
                    self.0.unknown_flag(found)
                )),
            }
        }
        self.0.hand_over(text, REQUEST)
    }

    /// Waits until the server has answered (`*flag == 0`) and returns the reply. Removing the
    /// segment is then the server's job (it has marked it already).
    pub fn receive(&self, deadline: Deadline) -> anyhow::Result<Result<String, BadText>> {
        let Side { segment, area } = &self.0;
        let waiting = "waiting for the reply";
        self.0
            .wait_for_flag_change(REQUEST, deadline, Awaited::AttachedPeer)
            .with_context(|| format!("{waiting} (segment {})", segment.key()))?;
        let (flag, reply) = area.take();
        if flag != EMPTY {
            return Err(self.0.foreign_flag(waiting, flag));
        }
        segment.leave_removal_to_peer();
        Ok(reply)
    }
}
