//! The message the `msgq1`/`msgq2` pair exchange, as the C programs lay it out:
//!
//! | bytes   | field   | content                                                  |
//! |---------|---------|----------------------------------------------------------|
//! | 0..8    | `mtype` | a C `long`: [`REQUEST`] (1) or [`REPLY`] (2)              |
//! | 8..136  | `mtext` | the text, NUL-terminated, NUL-padded                     |
//!
//! The size given to `msgsnd` counts the text only: this suite sends [`MSG_SIZE`] = 128 bytes.
//! The C programs send `sizeof(msg)` = 136 ([`C_MSG_SIZE`]), 8 bytes more than the text holds
//! (labs.md tells the story); so every receive passes `MSG_NOERROR`, which cuts such a message
//! to the 128 bytes asked for instead of failing with `E2BIG`. Pure: no I/O.

use std::ffi::c_long;

use nix::unistd::Pid;

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

/// A message as `msgsnd`/`msgrcv` take it: a C `long` type, then `N` bytes of text:
/// [`Message`] (`N` = 128), or a C peer's `MsgBuf<136>` in a test.
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
    /// A message of type `mtype` with `bytes` (any: a test sends garbage) at the start of its
    /// text and NULs after them; `None` if they do not fit.
    pub fn with_bytes(mtype: c_long, bytes: &[u8]) -> Option<MsgBuf<N>> {
        let mut message = MsgBuf {
            mtype,
            ..MsgBuf::empty()
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

/// The PID a request in the C's form names (`This is a request from <PID>.`), if it has that
/// form. A peer's word only: it can make the kernel's answer doubtful, never replace it.
pub fn request_names(text: &str) -> Option<i32> {
    let pid = text
        .strip_prefix("This is a request from ")?
        .strip_suffix('.')?;
    pid.bytes()
        .all(|b| b.is_ascii_digit())
        .then(|| pid.parse().ok())?
}

/// The server's reply text: `This is a reply from <PID>.`
pub fn reply_text(pid: Pid) -> String {
    format!("This is a reply from {pid}.")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_names_its_pid_only_in_the_c_form() {
        assert_eq!(
            request_names(&request_text(Pid::from_raw(4711))),
            Some(4711)
        );
        for other in [
            "This is a request from 47x1.",
            "hello",
            "This is a request from -1.",
        ] {
            assert_eq!(request_names(other), None, "{other}");
        }
    }
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
}
