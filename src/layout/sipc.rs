//! The sipc pair's segment, as the C programs lay it out ([`Sipc`], 1024 bytes):
//!
//! | bytes     | field | content                                                             |
//! |-----------|-------|---------------------------------------------------------------------|
//! | 0..4      | flag  | a C `int`: [`EMPTY`] (0) or [`REQUEST`] (1, a request is waiting)   |
//! | 4..1024   | text  | the request or the reply, NUL-terminated                            |
//!
//! A C peer only ever sees the flag at 0 or 1, the values its protocol has. What this suite needs
//! beyond them lives where no C program looks: the last 4 bytes of the text field, far behind
//! any request's NUL, are a server's **claim** on the request it answers ([`Sipc::claim`]), so
//! that of two servers that saw one request only one answers (a server marks the segment for
//! removal before it claims: a claim is made once in a segment's life).
//!
//! **The hand-off** ([`Sipc::put`], [`Sipc::take`]): whoever writes, writes the text, then stores
//! the flag with `Release`; whoever reads loads the flag with `Acquire`, then reads the text. So
//! a process that sees the flag change also sees the whole text written before it. The C's plain
//! `int` loop has no such guarantee: compiled with `-O2` it reads the flag once and spins for
//! ever (labs.md, sipc). Every byte is an atomic: another process writes them while we hold a
//! reference, which plain `u8`s behind `&` would not allow. Pure: no I/O.

use std::sync::atomic::{AtomicI32, AtomicU8, Ordering};

use super::text::{self, BadText};

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
