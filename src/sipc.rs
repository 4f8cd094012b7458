//! The `sipc1`/`sipc2` pair: a request and a reply through one System V shared memory segment.
//!
//! The layout the C pair shares ([`Sipc`], 1024 bytes, key `0x9000 + ID`):
//!
//! | bytes     | field | content                                                             |
//! |-----------|-------|---------------------------------------------------------------------|
//! | 0..4      | flag  | a C `int`: [`EMPTY`] (0) or [`REQUEST`] (1, a request is waiting)   |
//! | 4..1024   | text  | the request or the reply, NUL-terminated                            |
//!
//! A C peer only ever sees the flag at 0 or 1, the values its protocol has. What this suite needs
//! beyond them lives where no C program looks: the last 4 bytes of the text field, far behind
//! any request's NUL, are a server's **claim** on the request it answers ([`Sipc::claim`]), so
//! that of two servers that saw one request only one answers. (A server marks the segment for
//! removal before it claims, so a claim is made once in a segment's life; a text that runs into
//! those bytes is answered without a claim.)
//!
//! **The hand-off** ([`Sipc::put`], [`Sipc::take`]): whoever writes, writes the text, then stores
//! the flag with `Release`; whoever reads loads the flag with `Acquire`, then reads the text. So
//! a process that sees the flag change also sees the whole text written before it. The C's plain
//! `int` loop has no such guarantee: compiled with `-O2` it reads the flag once and spins for
//! ever (labs.md, sipc). Every byte is an atomic: another process writes them while we hold a
//! reference, which plain `u8`s behind `&` would not allow.
//!
//! [`Server`] and [`Client`] are the two sides of the protocol; the binaries read like the slide.

use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use anyhow::{bail, Context};

use crate::peer::{self, Process};
use crate::shm::{Attached, Awaited, Segment};
use crate::sysv::Key;
use crate::text::{self, BadText};
use crate::wait::Deadline;

/// The size of the sipc segment.
pub const SIPC_SIZE: usize = 1024;
/// The size of the text field from offset 4 to the end, as a C peer may fill it.
pub const TEXT_LEN: usize = SIPC_SIZE - 4;
/// The part of the text field this suite writes: all but the claim word at its end.
const WRITABLE: usize = TEXT_LEN - 4;
/// The flag's value when no request is waiting (after a reply, or before the first request).
pub const EMPTY: i32 = 0;
/// The flag's value while a request is waiting for the server.
pub const REQUEST: i32 = 1;

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

/// The 1024 bytes that sipc1 and sipc2 share (see the module docs).
#[repr(C)]
#[derive(Debug)]
pub struct Sipc {
    /// [`EMPTY`] or [`REQUEST`] (a C `int`).
    pub flag: AtomicI32,
    /// The request or reply, NUL-terminated (what follows the NUL is unused).
    pub text: [AtomicU8; WRITABLE],
    /// A server's claim on the request: 0, or the PID of the server answering it.
    pub claim: AtomicI32,
}

impl Sipc {
    /// An empty area (flag [`EMPTY`], text all NUL), e.g. to test with outside a segment.
    pub const fn new() -> Sipc {
        Sipc {
            flag: AtomicI32::new(EMPTY),
            text: [const { AtomicU8::new(0) }; WRITABLE],
            claim: AtomicI32::new(0),
        }
    }

    /// **The hand-off, writing:** `text` and its NUL into the text field, *then* the flag, with
    /// `Release`: whoever sees the new flag sees the whole text. Fails if the text does not fit
    /// or holds a NUL itself.
    pub fn put(&self, text: &str, flag: i32) -> anyhow::Result<()> {
        anyhow::ensure!(
            text.len() < WRITABLE && !text.contains('\0'),
            "text of {} bytes does not fit the {WRITABLE}-byte field with its NUL",
            text.len()
        );
        for (cell, byte) in self.text.iter().zip(text.bytes().chain([0])) {
            cell.store(byte, Ordering::Relaxed);
        }
        self.flag.store(flag, Ordering::Release);
        Ok(())
    }

    /// **The hand-off, reading:** the flag, with `Acquire`, *then* the text written before it
    /// (see [`text::decode_text`]: printable; without a NUL, all its bytes).
    pub fn take(&self) -> (i32, Result<String, BadText>) {
        let flag = self.flag.load(Ordering::Acquire);
        (flag, text::decode_text(&self.text_bytes()))
    }

    /// The whole text field as a C peer sees it, 1020 bytes (the claim word's too).
    pub fn text_bytes(&self) -> [u8; TEXT_LEN] {
        let claim = self.claim.load(Ordering::Relaxed).to_ne_bytes();
        std::array::from_fn(|i| match i.checked_sub(WRITABLE) {
            None => self.text[i].load(Ordering::Relaxed),
            Some(at) => claim[at],
        })
    }

    /// Writes `bytes` at the start of the text field as a C peer's `strcpy` would (no NUL added,
    /// the claim word's bytes too): what a test does to play a C peer.
    pub fn write_bytes(&self, bytes: &[u8]) {
        let mut claim = self.claim.load(Ordering::Relaxed).to_ne_bytes();
        for (i, &byte) in bytes.iter().take(TEXT_LEN).enumerate() {
            match i.checked_sub(WRITABLE) {
                None => self.text[i].store(byte, Ordering::Relaxed),
                Some(at) => claim[at] = byte,
            }
        }
        self.claim
            .store(i32::from_ne_bytes(claim), Ordering::Relaxed);
    }

    /// The text as a message shows it: quoted, escaped, cut to 40 characters
    /// (`"This is a request from 4711."`).
    pub fn quoted_text(&self) -> String {
        text::c_string(&self.text_bytes(), 40)
    }

    /// Claims the request for the server `pid`, once: fails with the PID of the server that
    /// claimed it first. A request whose text runs into the claim word is not claimed (it cannot
    /// be, without changing the text) and counts as ours.
    pub fn claim(&self, pid: i32) -> Result<(), i32> {
        let text_ends_before = self.text.iter().any(|b| b.load(Ordering::Relaxed) == 0);
        if !text_ends_before {
            return Ok(());
        }
        let claimed = self
            .claim
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire);
        claimed.map(drop)
    }
}

impl Default for Sipc {
    fn default() -> Sipc {
        Sipc::new()
    }
}

// ---- the programs ----

/// The options of sipc1 and sipc2.
#[derive(clap::Args, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SipcOptions {
    #[command(flatten)]
    pub id: crate::cli::IdOption,

    #[command(flatten)]
    pub timeout: crate::cli::TimeoutOption,

    /// Print the segment's shmid_ds (IPC_STAT) after each step
    #[arg(long)]
    pub stat: bool,
}

// ---- the server -----------------------------------------------------------------------------

/// sipc1's side of the protocol.
pub struct Server<'a> {
    segment: &'a Segment,
    area: &'a Sipc,
}

impl<'a> Server<'a> {
    /// The server of the segment attached as `attached`. Refused if another process that is no
    /// client waits on it already with no request waiting — another server (a C sipc1, or a
    /// sipc1 with another `$TMPDIR`): two servers would both answer a request.
    pub fn new(segment: &'a Segment, attached: &'a Attached<'a>) -> anyhow::Result<Server<'a>> {
        let area = attached.sipc()?;
        let others: Vec<Process> = peer::attached(segment.id().raw())
            .into_iter()
            .filter(|process| process.name != "sipc2")
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
                    crate::cli::warn(format_args!(
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
                    crate::cli::warn(format_args!(
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
                REQUEST => crate::cli::warn(format_args!(
                    "replacing a stale request {} in segment {key}: its client has gone",
                    area.quoted_text()
                )),
                _ if others => bail!("{}; {FOREIGN_HINT}", unknown_flag(found, key)),
                _ => crate::cli::warn(format_args!(
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn the_sipc_layout_is_the_c_layout() {
        assert_eq!(size_of::<Sipc>(), SIPC_SIZE);
        assert_eq!(offset_of!(Sipc, flag), 0);
        assert_eq!(size_of::<AtomicI32>(), size_of::<libc::c_int>());
        assert_eq!(offset_of!(Sipc, text), 4);
        assert_eq!(offset_of!(Sipc, claim), 1020);
        assert_eq!(TEXT_LEN, 1020);
        assert_eq!(align_of::<Sipc>(), 4);
    }

    #[test]
    fn a_text_is_put_with_its_nul_and_taken_back() {
        let area = Sipc::new();
        area.text[30].store(b'x', Ordering::Relaxed); // garbage after the NUL is ignored
        area.put("This is a request from 42.", REQUEST).unwrap();
        assert_eq!(
            area.take(),
            (REQUEST, Ok("This is a request from 42.".into()))
        );
        assert_eq!(area.text_bytes()[26], 0);
        assert!(area.put(&"y".repeat(WRITABLE), EMPTY).is_err());
        area.put(&"y".repeat(WRITABLE - 1), EMPTY).unwrap();
        assert_eq!(area.take().1.unwrap().len(), WRITABLE - 1);
        assert!(area.put("a\0b", EMPTY).is_err());
    }

    #[test]
    fn a_request_is_claimed_once() {
        let area = Sipc::new();
        area.put("This is a request from 42.", REQUEST).unwrap();
        assert_eq!(area.claim(100), Ok(()));
        assert_eq!(area.claim(200), Err(100));
        assert_eq!(
            area.flag.load(Ordering::Relaxed),
            REQUEST,
            "the flag is not touched"
        );
    }

    #[test]
    fn a_text_that_runs_into_the_claim_word_is_shown_whole_and_not_claimed() {
        let area = Sipc::new();
        area.text
            .iter()
            .for_each(|b| b.store(b'z', Ordering::Relaxed));
        area.claim
            .store(i32::from_ne_bytes(*b"zzz\0"), Ordering::Relaxed);
        assert_eq!(area.take().1.unwrap(), "z".repeat(TEXT_LEN - 1));
        assert_eq!(area.claim(100), Ok(()));
    }
}
