//! The `sipc1`/`sipc2` protocol over the segment of [`crate::layout::sipc`]: [`Server`] (wait
//! for a live request, claim it, answer it) and [`Client`] (leave a request, wait for the
//! answer), so that the binaries read like the slide.

use std::sync::atomic::Ordering;

use anyhow::{bail, Context};

pub use crate::layout::sipc::{Sipc, EMPTY, REQUEST, SIPC_SIZE};
use crate::layout::text::BadText;
use crate::peer::{self, Process};
use crate::rt::out::warn;
use crate::rt::wait::Deadline;
use crate::segment::{Attached, Awaited, Segment};
use crate::sys::ipc::Key;

/// sipc1, as its liveness lock ([`crate::peer::ServerLock`]) names it.
pub const SIPC1: peer::Server = peer::Server {
    program: "sipc1",
    call: "shmget",
    object: "segment",
};

/// The hint that goes with a flag value that neither program of the pair writes.
pub const FOREIGN_HINT: &str = "is another program using this key? use another --id (or IPCLAB_ID)";

/// A flag value that is neither [`EMPTY`] nor [`REQUEST`], said for a message: `the flag of
/// segment 0x9005 holds 7, neither 0 (empty) nor 1 (a request)`.
pub fn unknown_flag(value: i32, key: Key) -> String {
    format!("the flag of segment {key} holds {value}, neither 0 (empty) nor 1 (a request)")
}

// ---- the server -----------------------------------------------------------------------------

/// sipc1's side of the protocol.
pub struct Server<'a> {
    segment: &'a Segment,
    area: &'a Sipc,
}

impl<'a> Server<'a> {
    /// The server of the segment attached as `attached`. Refused if another process that is no
    /// client, and started before this one, waits on it with no request waiting: another server
    /// (a C sipc1, or a sipc1 with another `$TMPDIR`) — two servers would both answer a request.
    /// Of servers started side by side, the oldest stays.
    pub fn new(segment: &'a Segment, attached: &'a Attached<'a>) -> anyhow::Result<Server<'a>> {
        let area = attached.sipc()?;
        let others: Vec<Process> = peer::attached(segment.id().raw())
            .into_iter()
            .filter(|process| process.name != "sipc2" && process.started_before_me())
            .collect();
        if area.flag.load(Ordering::Acquire) == EMPTY && !others.is_empty() {
            bail!(
                "shmget(key {}): the segment is in use by {}, attached with no request waiting \
                 (another server?); stop it first, or use another --id (or IPCLAB_ID)",
                segment.key(),
                peer::listed(&others)
            );
        }
        Ok(Server { segment, area })
    }

    /// Waits until a live request is waiting (`*flag == 1` with its client attached) and returns
    /// its text. A request left by a client that has gone (nobody else attached) is reported,
    /// cleared and not answered.
    pub fn next_request(&self, deadline: Deadline) -> anyhow::Result<Result<String, BadText>> {
        let (segment, area, key) = (self.segment, self.area, self.segment.key());
        loop {
            segment
                .wait_until(deadline, Awaited::NewPeer, || {
                    area.flag.load(Ordering::Acquire) != EMPTY
                })
                .with_context(|| format!("waiting for a request (segment {key})"))?;
            let client_attached = segment.others_attached()?; // shmctl(IPC_STAT): nattch > 1
            let (flag, text) = area.take(); // after the look: it may have changed meanwhile
            match (flag, client_attached) {
                (REQUEST, true) => return Ok(text),
                (EMPTY, _) => continue,
                (_, true) => bail!("{}; {FOREIGN_HINT}", unknown_flag(flag, key)),
                // Left by a process that has gone (a killed client; a C client stopped with
                // Ctrl-C): nobody else is attached. Clear it, say so, wait for a live request.
                (REQUEST, false) => {
                    let shown = area.quoted_text();
                    let _ = area.flag.compare_exchange(
                        REQUEST,
                        EMPTY,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    warn(format_args!(
                        "stale request {shown} in segment {key}: its client has gone (nobody \
                         else is attached); not answered"
                    ));
                }
                (_, false) => {
                    let _ = area.flag.compare_exchange(
                        flag,
                        EMPTY,
                        Ordering::Relaxed,
                        Ordering::Relaxed,
                    );
                    warn(format_args!(
                        "{}, left by a process that has gone (nobody else is attached); reset to 0",
                        unknown_flag(flag, key)
                    ));
                }
            }
        }
    }

    /// Answers the request: claims it ([`Sipc::claim`]: another server may have seen it too),
    /// then hands `text` over with the flag back to 0 ([`Sipc::put`]).
    pub fn reply(&self, text: &str) -> anyhow::Result<()> {
        let key = self.segment.key();
        if let Err(first) = self.area.claim(std::process::id() as i32) {
            bail!("another server (pid {first}) took the request in segment {key} first");
        }
        self.area.put(text, EMPTY)
    }
}

// ---- the client -----------------------------------------------------------------------------

/// sipc2's side of the protocol.
pub struct Client<'a> {
    segment: &'a Segment,
    area: &'a Sipc,
}

impl<'a> Client<'a> {
    /// The client of the segment attached as `attached`.
    pub fn new(segment: &'a Segment, attached: &'a Attached<'a>) -> anyhow::Result<Client<'a>> {
        Ok(Client {
            segment,
            area: attached.sipc()?,
        })
    }

    /// Leaves the request `text` for the server (`*flag = 1`). The C has no lock: a request
    /// already waiting is another client's, unless that client has gone (nobody else attached)
    /// — then it is stale, and ours replaces it.
    pub fn send(&self, text: &str) -> anyhow::Result<()> {
        let (area, key) = (self.area, self.segment.key());
        let found = area.flag.load(Ordering::Acquire);
        if found != EMPTY {
            let others = self.segment.others_attached()?;
            match found {
                REQUEST if others => bail!(
                    "another request is waiting in segment {key} (another sipc2?); try again later"
                ),
                REQUEST => warn(format_args!(
                    "replacing a stale request {} in segment {key}: its client has gone",
                    area.quoted_text()
                )),
                _ if others => bail!("{}; {FOREIGN_HINT}", unknown_flag(found, key)),
                _ => warn(format_args!(
                    "{}, left by a process that has gone (nobody else is attached); replacing it",
                    unknown_flag(found, key)
                )),
            }
        }
        area.put(text, REQUEST)?;
        Ok(())
    }

    /// Waits until the server has answered (`*flag == 0`) and returns the reply. Removing the
    /// segment is then the server's job (it has marked it already).
    pub fn receive(&self, deadline: Deadline) -> anyhow::Result<Result<String, BadText>> {
        let (segment, area, key) = (self.segment, self.area, self.segment.key());
        let waiting = || format!("waiting for the reply (segment {key})");
        segment
            .wait_until(deadline, Awaited::AttachedPeer, || {
                area.flag.load(Ordering::Acquire) != REQUEST
            })
            .with_context(waiting)?;
        let (flag, reply) = area.take();
        if flag != EMPTY {
            bail!("{}: {}; {FOREIGN_HINT}", waiting(), unknown_flag(flag, key));
        }
        segment.leave_removal_to_peer();
        Ok(reply)
    }
}
