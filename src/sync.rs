//! The course's *synclib*: a parent and its child take turns, using two pipes (labs.md,
//! exercise 2).
//!
//! | C (synclib)     | here                        | what happens                       |
//! |-----------------|-----------------------------|------------------------------------|
//! | `TELL_WAIT()`   | [`TellWait::new`]           | two pipes, made **before** `fork`  |
//! | `TELL_CHILD()`  | [`ParentSide::tell_child`]  | parent writes the byte `p`         |
//! | `WAIT_CHILD()`  | [`ParentSide::wait_child`]  | parent reads one byte, expects `c` |
//! | `TELL_PARENT()` | [`ChildSide::tell_parent`]  | child writes the byte `c`          |
//! | `WAIT_PARENT()` | [`ChildSide::wait_parent`]  | child reads one byte, expects `p`  |
//!
//! After `fork` each process takes its role ([`TellWait::into_parent`], [`TellWait::into_child`])
//! and **closes the two ends it does not use**: so when the peer dies, no write end is left
//! and the wait ends with [`PeerGone`] ("child exited before telling") instead of hanging.

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use anyhow::{bail, Context};
use nix::errno::Errno;
use nix::poll::PollFlags;

use crate::rt::exit::Exit;
use crate::rt::wait::{self, Deadline};
use crate::sys::fd as sys;

/// `TELL_WAIT()`: the two pipes, made before `fork`, not yet divided between the processes.
#[derive(Debug)]
pub struct TellWait(ParentSide, ChildSide);

impl TellWait {
    /// `TELL_WAIT()`: creates the two pipes. Call it before `fork`.
    pub fn new() -> anyhow::Result<TellWait> {
        let (from_parent, to_child) = sys::pipe().context("pipe (TELL_WAIT)")?;
        let (from_child, to_parent) = sys::pipe().context("pipe (TELL_WAIT)")?;
        let parent = ParentSide(Channel(from_child, to_child, "child", None));
        Ok(TellWait(
            parent,
            ChildSide(Channel(from_parent, to_parent, "parent", None)),
        ))
    }

    /// Gives up each wait after `timeout` (`--timeout`) instead of waiting forever.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> TellWait {
        let TellWait(ParentSide(parent), ChildSide(child)) = &mut self;
        (parent.3, child.3) = (timeout, timeout);
        self
    }

    /// The parent's role, after `fork`: closes the child's ends.
    pub fn into_parent(self) -> ParentSide {
        self.1 .0.close();
        self.0
    }

    /// The child's role, after `fork`: closes the parent's ends.
    pub fn into_child(self) -> ChildSide {
        self.0 .0.close();
        self.1
    }
}

/// The parent's two pipe ends: `TELL_CHILD` and `WAIT_CHILD`.
#[derive(Debug)]
pub struct ParentSide(Channel);

impl ParentSide {
    /// `TELL_CHILD()`: lets the child go on.
    pub fn tell_child(&self) -> anyhow::Result<()> {
        self.0.tell(b'p', "TELL_CHILD")
    }

    /// `WAIT_CHILD()`: blocks until the child tells. Fails with [`PeerGone`] if it exited first.
    pub fn wait_child(&self) -> anyhow::Result<()> {
        self.0.wait(b'c', "WAIT_CHILD")
    }
}

/// The child's two pipe ends: `TELL_PARENT` and `WAIT_PARENT`.
#[derive(Debug)]
pub struct ChildSide(Channel);

impl ChildSide {
    /// `TELL_PARENT()`: lets the parent go on.
    pub fn tell_parent(&self) -> anyhow::Result<()> {
        self.0.tell(b'c', "TELL_PARENT")
    }

    /// `WAIT_PARENT()`: blocks until the parent tells. Fails with [`PeerGone`] if it exited first.
    pub fn wait_parent(&self) -> anyhow::Result<()> {
        self.0.wait(b'p', "WAIT_PARENT")
    }
}

/// The peer closed its end of the pipe (it exited) before telling or being told:
/// `child exited before telling`.
#[derive(Debug)]
pub struct PeerGone(String);

impl fmt::Display for PeerGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PeerGone {}

/// One side's pipe ends, from the peer and to it, the peer's name, and how long one wait may
/// take (`--timeout`; `None`: as long as it takes, as in C).
#[derive(Debug)]
struct Channel(OwnedFd, OwnedFd, &'static str, Option<Duration>);

impl Channel {
    /// `close` of both ends, by hand so that `--trace` shows it as the lecture does. A failed
    /// close of a pipe end we never used loses nothing.
    fn close(self) {
        let Channel(from_peer, to_peer, ..) = self;
        let _ = sys::close(from_peer);
        let _ = sys::close(to_peer);
    }

    fn tell(&self, byte: u8, call: &str) -> anyhow::Result<()> {
        let Channel(_, to_peer, ..) = self;
        match sys::write_all(to_peer, &[byte]) {
            Err(Errno::EPIPE) => Err(self.gone("before being told").context(call.to_string())),
            written => written.with_context(|| format!("{call}: write")),
        }
    }

    fn wait(&self, expected: u8, call: &str) -> anyhow::Result<()> {
        let Channel(from_peer, _, peer, timeout) = self;
        // poll first, so that a termination signal (when caught) or `--timeout` ends the wait;
        // as part of the read, which classroom mode says when the wait starts.
        let (readable, mut waited) = ([(from_peer.as_fd(), PollFlags::POLLIN)], Ok(()));
        let ready = || {
            let deadline = Deadline::within(*timeout); // from the end of a --step pause
            wait::in_call(wait::poll(&readable, deadline).map(drop), &mut waited)
        };
        let mut byte = [0u8];
        let read = sys::read_waiting(from_peer, &mut byte, sys::as_text, ready);
        waited.context(call.to_string())?;
        match read.with_context(|| format!("{call}: read"))? {
            0 => Err(self.gone("before telling").context(call.to_string())),
            _ if byte[0] == expected => Ok(()),
            _ => {
                let (expected, got) = (expected as char, byte[0].escape_ascii());
                bail!("{call}: expected '{expected}' from the {peer}, got '{got}'")
            }
        }
    }

    /// The error for a peer that has gone. When our stdout is closed too, the peer went away
    /// for the same reason (`./sync | head -1`): a quiet exit, like the closed stdout itself.
    fn gone(&self, when: &str) -> anyhow::Error {
        let Channel(.., peer, _) = self;
        let gone = PeerGone(format!("{peer} exited {when}"));
        match crate::rt::out::stdout_is_closed() {
            true => Exit::quiet(0, gone).into(),
            false => Exit::echo(gone).into(), // the peer says why it went
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_and_child_take_turns() {
        let TellWait(parent, child) = TellWait::new().unwrap();
        let child = std::thread::spawn(move || {
            for _ in 0..100 {
                child.wait_parent().unwrap();
                child.tell_parent().unwrap();
            }
        });
        for _ in 0..100 {
            parent.tell_child().unwrap();
            parent.wait_child().unwrap();
        }
        child.join().unwrap();
    }

    #[test]
    fn a_waiter_whose_child_exits_without_telling_gets_an_error() {
        let TellWait(parent, child) = TellWait::new().unwrap();
        drop(child); // what the kernel does to the child's ends when it exits
        let error = parent.wait_child().unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "WAIT_CHILD: child exited before telling"
        );
        assert!(crate::rt::exit::caused_by::<PeerGone>(&error));
    }

    #[test]
    fn a_waiter_whose_parent_exits_without_telling_gets_an_error() {
        let TellWait(parent, child) = TellWait::new().unwrap();
        drop(parent);
        let error = child.wait_parent().unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "WAIT_PARENT: parent exited before telling"
        );
    }

    #[test]
    fn telling_a_peer_that_is_gone_is_an_error() {
        let TellWait(parent, child) = TellWait::new().unwrap();
        drop(child);
        let error = parent.tell_child().unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "TELL_CHILD: child exited before being told"
        );
    }

    #[test]
    fn a_wrong_byte_is_reported() {
        let TellWait(parent, child) = TellWait::new().unwrap();
        nix::unistd::write(&child.0 .1, b"p").unwrap(); // a child that sends the parent's byte
        let error = parent.wait_child().unwrap_err();
        assert_eq!(
            error.to_string(),
            "WAIT_CHILD: expected 'c' from the child, got 'p'"
        );
    }

    #[test]
    fn a_wait_gives_up_at_its_timeout() {
        let timeout = Some(Duration::from_millis(10));
        let TellWait(parent, _child) = TellWait::new().unwrap().with_timeout(timeout);
        let error = parent.wait_child().unwrap_err();
        assert!(
            crate::rt::exit::caused_by::<wait::TimedOut>(&error),
            "{error:#}"
        );
    }
}
