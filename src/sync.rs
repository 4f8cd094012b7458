//! The course's *synclib*: a parent and its child take turns, using two pipes.
//!
//! | C (synclib)     | here                                     | what happens                       |
//! |-----------------|------------------------------------------|------------------------------------|
//! | `TELL_WAIT()`   | [`TellWait::new`]                        | two pipes, made **before** `fork`  |
//! | `TELL_CHILD()`  | [`ParentSide::tell_child`]               | parent writes the byte `p`         |
//! | `WAIT_CHILD()`  | [`ParentSide::wait_child`]               | parent reads one byte, expects `c` |
//! | `TELL_PARENT()` | [`ChildSide::tell_parent`]               | child writes the byte `c`          |
//! | `WAIT_PARENT()` | [`ChildSide::wait_parent`]               | child reads one byte, expects `p`  |
//!
//! After `fork` both processes hold all four pipe ends. Each side takes its role with
//! [`TellWait::into_parent`] or [`TellWait::into_child`], which **closes the two ends it does not
//! use**. That is what the C version forgets: there, a process waiting for a peer that has died
//! still holds the peer's write end itself, so its `read` never sees end-of-file and it hangs for
//! ever. Here the only write end left belongs to the peer, so when the peer dies the wait ends
//! with [`PeerGone`] ("child exited before telling").
//!
//! ```
//! use ipclab::sync::TellWait;
//! // Without fork (in threads, or in a test) `split` hands out both sides at once.
//! let (parent, child) = TellWait::new()?.split();
//! parent.tell_child()?;
//! child.wait_parent()?;
//! child.tell_parent()?;
//! parent.wait_child()?;
//! drop(child);
//! assert!(parent.wait_child().is_err()); // the child is gone: an error, not a hang
//! # anyhow::Ok(())
//! ```

use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use anyhow::Context;
use nix::errno::Errno;
use nix::poll::PollFlags;

use crate::rt::exit::Exit;
use crate::rt::wait::{self, Deadline};
use crate::sys::fd as sys;

/// The byte the parent sends to the child (`TELL_CHILD`).
pub const PARENT_BYTE: u8 = b'p';
/// The byte the child sends to the parent (`TELL_PARENT`).
pub const CHILD_BYTE: u8 = b'c';

/// `TELL_WAIT()`: the two pipes, made before `fork`, not yet divided between the processes.
#[derive(Debug)]
pub struct TellWait {
    parent_to_child: (OwnedFd, OwnedFd),
    child_to_parent: (OwnedFd, OwnedFd),
}

impl TellWait {
    /// `TELL_WAIT()`: creates the two pipes. Call it before `fork`.
    pub fn new() -> anyhow::Result<TellWait> {
        Ok(TellWait {
            parent_to_child: sys::pipe().context("pipe (TELL_WAIT)")?,
            child_to_parent: sys::pipe().context("pipe (TELL_WAIT)")?,
        })
    }

    /// The parent's role, after `fork`: closes the child's ends.
    pub fn into_parent(self) -> ParentSide {
        let (parent, child) = self.split();
        child.0.close();
        parent
    }

    /// The child's role, after `fork`: closes the parent's ends.
    pub fn into_child(self) -> ChildSide {
        let (parent, child) = self.split();
        parent.0.close();
        child
    }

    /// Both roles at once, for two threads of one process (or a test): each side owns exactly
    /// its two ends.
    pub fn split(self) -> (ParentSide, ChildSide) {
        let (from_parent, to_child) = self.parent_to_child;
        let (from_child, to_parent) = self.child_to_parent;
        (
            ParentSide::from_fds(from_child, to_child),
            ChildSide::from_fds(from_parent, to_parent),
        )
    }
}

/// The parent's two pipe ends: `TELL_CHILD` and `WAIT_CHILD`.
#[derive(Debug)]
pub struct ParentSide(Channel);

impl ParentSide {
    /// A parent side from a pipe read end (bytes from the child) and a write end (to the child).
    pub fn from_fds(from_child: OwnedFd, to_child: OwnedFd) -> ParentSide {
        ParentSide(Channel {
            from_peer: from_child,
            to_peer: to_child,
            peer: "child",
            timeout: None,
        })
    }

    /// Gives up each `WAIT_CHILD` after `timeout` (`--timeout`) instead of waiting for ever.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> ParentSide {
        self.0.timeout = timeout;
        self
    }

    /// `TELL_CHILD()`: lets the child go on.
    pub fn tell_child(&self) -> anyhow::Result<()> {
        self.0.tell(PARENT_BYTE, "TELL_CHILD")
    }

    /// `WAIT_CHILD()`: blocks until the child tells. Fails with [`PeerGone`] if it exited first.
    pub fn wait_child(&self) -> anyhow::Result<()> {
        self.0.wait(CHILD_BYTE, "WAIT_CHILD")
    }
}

/// The child's two pipe ends: `TELL_PARENT` and `WAIT_PARENT`.
#[derive(Debug)]
pub struct ChildSide(Channel);

impl ChildSide {
    /// A child side from a pipe read end (bytes from the parent) and a write end (to the parent).
    pub fn from_fds(from_parent: OwnedFd, to_parent: OwnedFd) -> ChildSide {
        ChildSide(Channel {
            from_peer: from_parent,
            to_peer: to_parent,
            peer: "parent",
            timeout: None,
        })
    }

    /// Gives up each `WAIT_PARENT` after `timeout` (`--timeout`) instead of waiting for ever.
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> ChildSide {
        self.0.timeout = timeout;
        self
    }

    /// `TELL_PARENT()`: lets the parent go on.
    pub fn tell_parent(&self) -> anyhow::Result<()> {
        self.0.tell(CHILD_BYTE, "TELL_PARENT")
    }

    /// `WAIT_PARENT()`: blocks until the parent tells. Fails with [`PeerGone`] if it exited first.
    pub fn wait_parent(&self) -> anyhow::Result<()> {
        self.0.wait(PARENT_BYTE, "WAIT_PARENT")
    }
}

/// The peer closed its end of the pipe (it exited) before telling or being told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerGone {
    /// `"child"` or `"parent"`.
    pub peer: &'static str,
    /// Whether we were waiting (`true`) or telling (`false`).
    pub waiting: bool,
}

impl fmt::Display for PeerGone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = if self.waiting {
            "before telling"
        } else {
            "before being told"
        };
        write!(f, "{} exited {what}", self.peer)
    }
}

impl std::error::Error for PeerGone {}

/// One side's pair of pipe ends; the two roles differ only in their bytes and names.
#[derive(Debug)]
struct Channel {
    from_peer: OwnedFd,
    to_peer: OwnedFd,
    peer: &'static str,
    /// How long one wait may take (`--timeout`); `None`: as long as it takes, as in C.
    timeout: Option<Duration>,
}

impl Channel {
    /// `close` of both ends (they would be closed when dropped too; closing them by hand puts
    /// the calls in `--trace`, where the lecture wants them seen). A failed close of a pipe
    /// end we never used loses nothing.
    fn close(self) {
        let _ = sys::close(self.from_peer);
        let _ = sys::close(self.to_peer);
    }

    fn tell(&self, byte: u8, call: &str) -> anyhow::Result<()> {
        loop {
            match sys::write(&self.to_peer, &[byte]) {
                Ok(_) => return Ok(()),
                Err(Errno::EINTR) => crate::rt::signals::check()?,
                Err(Errno::EPIPE) => return Err(self.gone(false).context(call.to_string())),
                Err(e) => return Err(e).context(format!("{call}: write")),
            }
        }
    }

    fn wait(&self, expected: u8, call: &str) -> anyhow::Result<()> {
        let mut byte = [0u8];
        loop {
            // poll first, so that SIGINT/SIGTERM (when caught) ends the wait.
            wait::poll(
                &[(self.from_peer.as_fd(), PollFlags::POLLIN)],
                Deadline::within(self.timeout),
            )
            .context(call.to_string())?;
            match sys::read(&self.from_peer, &mut byte) {
                Ok(0) => return Err(self.gone(true).context(call.to_string())),
                Ok(_) if byte[0] == expected => return Ok(()),
                Ok(_) => anyhow::bail!(
                    "{call}: expected '{}' from the {}, got '{}'",
                    expected as char,
                    self.peer,
                    byte[0].escape_ascii()
                ),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(e).context(format!("{call}: read")),
            }
        }
    }

    /// The error for a peer that has gone. When our stdout is closed too, the peer went away
    /// for the same reason (`./sync | head -1`): a quiet exit, like the closed stdout itself.
    fn gone(&self, waiting: bool) -> anyhow::Error {
        let gone = PeerGone {
            peer: self.peer,
            waiting,
        };
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
        let (parent, child) = TellWait::new().unwrap().split();
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
        let (parent, child) = TellWait::new().unwrap().split();
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
        let (parent, child) = TellWait::new().unwrap().split();
        drop(parent);
        let error = child.wait_parent().unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "WAIT_PARENT: parent exited before telling"
        );
    }

    #[test]
    fn telling_a_peer_that_is_gone_is_an_error() {
        let (parent, child) = TellWait::new().unwrap().split();
        drop(child);
        let error = parent.tell_child().unwrap_err();
        assert_eq!(
            format!("{error:#}"),
            "TELL_CHILD: child exited before being told"
        );
    }

    #[test]
    fn a_wrong_byte_is_reported() {
        let (from_child, to_parent) = nix::unistd::pipe().unwrap();
        let (_from_parent, to_child) = nix::unistd::pipe().unwrap();
        let parent = ParentSide::from_fds(from_child, to_child);
        nix::unistd::write(&to_parent, b"p").unwrap(); // a child that sends the parent's byte
        let error = parent.wait_child().unwrap_err();
        assert_eq!(
            error.to_string(),
            "WAIT_CHILD: expected 'c' from the child, got 'p'"
        );
    }
}
