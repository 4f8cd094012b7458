//! The FIFO pair's record, as the C programs lay it out: exactly [`RECORD_LEN`] = 160 bytes,
//! a request or a reply alike. Pure: no I/O.
//!
//! | bytes    | field | content                                                           |
//! |----------|-------|-------------------------------------------------------------------|
//! | 0..32    | name  | the reply FIFO's name, `.fifo<PID>`, NUL-terminated, NUL-padded   |
//! | 32..160  | text  | the message, NUL-terminated, NUL-padded (one without NUL is taken |
//! |          |       | whole: a peer's text is answered and shown, never refused)         |
//!
//! A write of at most `PIPE_BUF` (4096) bytes into a pipe is atomic, so the records of many
//! clients never interleave in `.fifo`. But anyone may write anything into it
//! (`echo hello > .fifo`): [`split_requests`] then finds the next record again.

use std::fmt;

use nix::unistd::Pid;

use super::text;

/// The server's FIFO, in the directory both sides use (`--dir`).
pub const SERVER_FIFO: &str = ".fifo";
/// Size of the name field: the reply FIFO's name, NUL-terminated.
pub const NAME_LEN: usize = 32;
/// Size of the text field: the message, NUL-terminated.
pub const TEXT_LEN: usize = 128;
/// Size of a whole record, request or reply.
pub const RECORD_LEN: usize = NAME_LEN + TEXT_LEN;
/// The most digits a reply FIFO's name may have after `.fifo` (a 64-bit PID has 20).
const MAX_PID_DIGITS: usize = 20;

/// The name of the reply FIFO of the client with process ID `pid`: `.fifo<PID>`.
pub fn reply_fifo_name(pid: Pid) -> String {
    format!("{SERVER_FIFO}{pid}")
}

/// Whether `name` has the only form a reply FIFO may have: `.fifo` and 1 to 20 digits
/// (so no `/`, no `..`, nothing outside the server's directory, and never `.fifo` itself).
pub fn is_reply_fifo_name(name: &[u8]) -> bool {
    name.strip_prefix(SERVER_FIFO.as_bytes())
        .is_some_and(|digits| {
            (1..=MAX_PID_DIGITS).contains(&digits.len()) && digits.iter().all(u8::is_ascii_digit)
        })
}

/// One 160-byte request or reply, decoded: its two fields without their NUL padding (a text
/// without NUL: the whole field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    name: Vec<u8>,
    text: Vec<u8>,
}

/// Why bytes received are not a request (the server reports it and skips them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadRecord {
    /// Not exactly 160 bytes.
    WrongSize(usize),
    /// No NUL in the name field.
    NameNotTerminated,
    /// The name is not of the form `.fifo<digits>`.
    BadName(String),
    /// Bytes on `.fifo` that do not start a record, up to where the next one may start.
    Stray(usize),
}

impl fmt::Display for BadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadRecord::WrongSize(n) => write!(f, "record of {n} bytes, not {RECORD_LEN}"),
            BadRecord::NameNotTerminated => write!(f, "name field without NUL"),
            BadRecord::BadName(name) => write!(f, "reply FIFO {name:?} is not .fifo<digits>"),
            BadRecord::Stray(1) => write!(f, "1 stray byte that does not start a record"),
            BadRecord::Stray(n) => write!(f, "{n} stray bytes that do not start a record"),
        }
    }
}

impl std::error::Error for BadRecord {}

impl Record {
    /// A record with `name` and `text`; fails if either does not fit its field with its NUL.
    pub fn new(name: &str, text: &str) -> anyhow::Result<Record> {
        for (field, value, room) in [("name", name, NAME_LEN), ("text", text, TEXT_LEN)] {
            anyhow::ensure!(
                value.len() < room,
                "{field} {value:?} does not fit {room} bytes"
            );
            anyhow::ensure!(!value.contains('\0'), "{field} {value:?} contains a NUL");
        }
        Ok(Record {
            name: name.into(),
            text: text.into(),
        })
    }

    /// The 160 bytes the C programs exchange: both fields NUL-terminated and NUL-padded.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut bytes = [0u8; RECORD_LEN];
        bytes[..self.name.len()].copy_from_slice(&self.name);
        bytes[NAME_LEN..NAME_LEN + self.text.len()].copy_from_slice(&self.text);
        bytes
    }

    /// Reads a record from exactly 160 bytes; the name must hold its terminating NUL, a text
    /// without one is the whole field. What follows a field's NUL is ignored (C's `strcpy`
    /// leaves garbage there).
    pub fn decode(bytes: &[u8]) -> Result<Record, BadRecord> {
        if bytes.len() != RECORD_LEN {
            return Err(BadRecord::WrongSize(bytes.len()));
        }
        let (name, text) = bytes.split_at(NAME_LEN);
        let name = text::until_nul(name).ok_or(BadRecord::NameNotTerminated)?;
        Ok(Record {
            name: name.to_vec(),
            text: text::until_nul(text).unwrap_or(text).to_vec(),
        })
    }

    /// The text as a C string: an error (which shows the whole field) if it had no NUL.
    pub fn decoded_text(&self) -> Result<String, text::BadText> {
        match self.text.len() < TEXT_LEN {
            true => Ok(text::printable(&self.text)),
            false => text::decode_text(&self.text),
        }
    }

    /// The name field, checked to be a reply FIFO's name (see [`is_reply_fifo_name`]).
    pub fn reply_fifo(&self) -> Result<&str, BadRecord> {
        match std::str::from_utf8(&self.name) {
            Ok(name) if is_reply_fifo_name(&self.name) => Ok(name),
            _ => Err(BadRecord::BadName(self.name.escape_ascii().to_string())),
        }
    }

    /// The text, [`text::printable`]: a peer's bytes must not drive the terminal.
    pub fn text(&self) -> String {
        text::printable(&self.text)
    }
}

/// A request as the server takes it: a good record whose name is a reply FIFO's name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The client's reply FIFO, `.fifo<digits>` (checked).
    pub reply_fifo: String,
    /// The request's text, printable; what is wrong with it, if anything (it is answered all
    /// the same).
    pub text: Result<String, text::BadText>,
}

impl Request {
    /// Decodes and checks a request received on `.fifo`.
    pub fn decode(bytes: &[u8]) -> Result<Request, BadRecord> {
        let record = Record::decode(bytes)?;
        Ok(Request {
            reply_fifo: record.reply_fifo()?.to_owned(),
            text: record.decoded_text(),
        })
    }

    /// The text as stdout shows it (a text without NUL: all its bytes).
    pub fn shown(&self) -> &str {
        self.text.as_ref().unwrap_or_else(|bad| &bad.shown)
    }
}

// ---- finding the records in the bytes of `.fifo` --------------------------------------------

/// Takes the requests from the start of `received`, the bytes read from `.fifo` so far: each
/// request or run of bad bytes, in order, and how many bytes they took (the start of a record
/// not yet complete waits for more). A record in step is taken whole, as the C server takes it;
/// other bytes are [`BadRecord::Stray`] up to where a record may start: a name field holding
/// `.fifo<digits>` padded with NULs, as every client writes it. A record whose end is not a
/// record start (or the end of the bytes) was cut short if a request in step starts inside it.
/// `at_rest`: `received` holds all the bytes written so far (whole writes, so a record ending
/// where they end is in step); otherwise a doubtful record waits.
///
/// ```
/// use ipclab::layout::record::{split_requests, BadRecord, Record, Request};
/// let mut received = b"hello".to_vec();
/// received.extend(Record::new(".fifo42", "This is a request from 42.").unwrap().encode());
/// let (found, used) = split_requests(&received, true);
/// assert_eq!(found[0], Err(BadRecord::Stray(5)));
/// assert_eq!(found[1].as_ref().map(|r| r.reply_fifo.as_str()), Ok(".fifo42"));
/// assert_eq!(used, received.len());
/// ```
pub fn split_requests(received: &[u8], at_rest: bool) -> (Vec<Result<Request, BadRecord>>, usize) {
    let mut found: Vec<Result<Request, BadRecord>> = Vec::new();
    let mut used = 0;
    while let Some((item, len)) = next_request(&received[used..], at_rest) {
        used += len;
        match (found.last_mut(), item) {
            (Some(Err(BadRecord::Stray(before))), Err(BadRecord::Stray(more))) => *before += more,
            (_, item) => found.push(item),
        }
    }
    (found, used)
}

/// The first request or run of bad bytes at the start of `bytes` and its length; `None` if more
/// bytes are needed to tell. Always takes at least one byte.
fn next_request(bytes: &[u8], at_rest: bool) -> Option<(Result<Request, BadRecord>, usize)> {
    let record_start = |at: usize, want: NameField| name_field(&bytes[at..], Padding::Nul) == want;
    let whole_request = |at: usize| bytes.get(at..at + RECORD_LEN).map(Request::decode);
    // A record that ends where another record starts, or where the bytes end when they are all
    // there is (whole writes: see split_requests), is in step.
    let in_step_after = |end: usize| {
        (end == bytes.len() && at_rest) || (end < bytes.len() && !record_start(end, NameField::Bad))
    };
    if name_field(bytes, Padding::Any) != NameField::Bad {
        let in_step = match whole_request(0) {
            None => return None, // the rest of this record is still to come
            Some(Ok(request)) if in_step_after(RECORD_LEN) => {
                return Some((Ok(request), RECORD_LEN));
            }
            Some(decoded) => decoded,
        };
        // Out of step: the bytes before a whole request that is in step were a cut record
        // (a fragment a client wrote and never finished).
        let inner_start = (1..RECORD_LEN).find(|&at| {
            record_start(at, NameField::Good)
                && matches!(whole_request(at), Some(Ok(_)))
                && in_step_after(at + RECORD_LEN)
        });
        if let Some(at) = inner_start {
            return Some((Err(BadRecord::Stray(at)), at));
        }
        let may_start_inside =
            (1..RECORD_LEN.min(bytes.len())).any(|at| !record_start(at, NameField::Bad));
        if !at_rest && may_start_inside {
            return None; // the bytes still to come tell which record is in step
        }
        if let Ok(request) = in_step {
            return Some((Ok(request), RECORD_LEN));
        }
    }
    // Not a request: skip to where the next record may start.
    let next_start = (1..bytes.len())
        .find(|&at| !record_start(at, NameField::Bad))
        .unwrap_or(bytes.len());
    // A whole record with a bad name or text: skip just it, in step with the records behind.
    let whole_bad = whole_request(0).filter(|_| next_start >= RECORD_LEN);
    if let Some(Err(bad @ BadRecord::BadName(_))) = whole_bad {
        return Some((Err(bad), RECORD_LEN));
    }
    Some((Err(BadRecord::Stray(next_start)), next_start))
}

/// What may follow the NUL that ends the name in a name field.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Padding {
    /// Anything: the C client's `strcpy` leaves whatever was on its stack there.
    Any,
    /// Only NULs: how every client of this suite writes it, and what marks a record start.
    Nul,
}

/// Whether bytes start with a name field holding a reply FIFO's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum NameField {
    Good,
    Bad,
    /// Good so far, but the bytes end before the field does.
    Incomplete,
}

/// Whether `bytes` start with a name field: a reply FIFO's name ([`is_reply_fifo_name`]), its
/// NUL, and `padding` up to the field's end.
fn name_field(bytes: &[u8], padding: Padding) -> NameField {
    let field = &bytes[..bytes.len().min(NAME_LEN)];
    let whole = field.len() == NAME_LEN;
    let good = match field.iter().position(|&b| b == 0) {
        Some(end) => {
            let padded = padding == Padding::Any || field[end..].iter().all(|&b| b == 0);
            is_reply_fifo_name(&field[..end]) && padded
        }
        // No NUL yet: good so far while what is there can still grow into `.fifo<digits>`.
        None => !whole && (SERVER_FIFO.as_bytes().starts_with(field) || is_reply_fifo_name(field)),
    };
    match (good, whole) {
        (false, _) => NameField::Bad,
        (true, true) => NameField::Good,
        (true, false) => NameField::Incomplete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The C client's request, built by hand with the offsets of the C struct.
    fn c_request(name: &[u8], text: &[u8]) -> [u8; RECORD_LEN] {
        let mut bytes = [0u8; RECORD_LEN];
        bytes[0..name.len()].copy_from_slice(name);
        bytes[32..32 + text.len()].copy_from_slice(text);
        bytes
    }

    #[test]
    fn the_layout_is_the_c_structs() {
        assert_eq!((NAME_LEN, TEXT_LEN, RECORD_LEN), (32, 128, 160));
        let record = Record::new(".fifo42", "This is a request from 42.").unwrap();
        assert_eq!(
            record.encode(),
            c_request(b".fifo42", b"This is a request from 42.")
        );
        assert_eq!(Record::decode(&record.encode()), Ok(record));
    }

    #[test]
    fn garbage_after_a_fields_nul_is_ignored() {
        let mut bytes = c_request(b".fifo7", b"hello");
        bytes[10] = b'x';
        bytes[100] = b'y';
        let record = Record::decode(&bytes).unwrap();
        assert_eq!(record.reply_fifo(), Ok(".fifo7"));
        assert_eq!(record.text(), "hello");
    }

    #[test]
    fn bad_records_are_rejected() {
        assert_eq!(Record::decode(&[0; 159]), Err(BadRecord::WrongSize(159)));
        assert_eq!(
            Record::decode(&[b'a'; 160]),
            Err(BadRecord::NameNotTerminated)
        );
    }

    #[test]
    fn a_text_without_nul_is_taken_whole_and_said() {
        let mut no_text_nul = [b'a'; 160];
        no_text_nul[5] = 0;
        let record = Record::decode(&no_text_nul).unwrap();
        let bad = record.decoded_text().unwrap_err();
        assert_eq!(bad.to_string(), "text without NUL in its 128 bytes");
        assert_eq!(bad.shown, "a".repeat(128));
        assert_eq!(record.text(), "a".repeat(128));
    }

    #[test]
    fn only_fifo_and_digits_is_a_reply_fifo_name() {
        for good in [".fifo1", ".fifo4194304", ".fifo00000000000000000001"] {
            assert!(is_reply_fifo_name(good.as_bytes()), "{good}");
        }
        for bad in [
            ".fifo",
            "fifo1",
            ".fifo1/",
            ".fifo/../1",
            "../.fifo1",
            "/tmp/.fifo1",
            ".fifo1a",
            ".fifo-1",
            " .fifo1",
            ".fifo000000000000000000001",
            "",
        ] {
            assert!(!is_reply_fifo_name(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn fields_that_do_not_fit_are_refused() {
        assert!(Record::new(&"n".repeat(31), &"t".repeat(127)).is_ok());
        assert!(Record::new(&"n".repeat(32), "t").is_err());
        assert!(Record::new("n", &"t".repeat(128)).is_err());
        assert!(Record::new("n", "a\0b").is_err());
    }

    /// A C client's request: `strcpy` and `sprintf` into a struct on its stack leave whatever
    /// was there after each field's NUL.
    fn c_request_with_stack_garbage(pid: u32) -> [u8; RECORD_LEN] {
        let mut bytes = [0xa5u8; RECORD_LEN];
        let name = format!(".fifo{pid}\0");
        let text = format!("This is a request from {pid}.\0");
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        bytes[NAME_LEN..NAME_LEN + text.len()].copy_from_slice(text.as_bytes());
        bytes
    }

    fn reply_fifos(found: &[Result<Request, BadRecord>]) -> Vec<Result<&str, &BadRecord>> {
        found
            .iter()
            .map(|item| item.as_ref().map(|request| request.reply_fifo.as_str()))
            .collect()
    }

    #[test]
    fn c_records_with_garbage_after_their_nuls_are_taken_in_step() {
        let mut received = c_request_with_stack_garbage(7).to_vec();
        received.extend(c_request_with_stack_garbage(8));
        let (found, used) = split_requests(&received, true);
        assert_eq!(reply_fifos(&found), [Ok(".fifo7"), Ok(".fifo8")]);
        assert_eq!(
            found[0].as_ref().unwrap().shown(),
            "This is a request from 7."
        );
        assert_eq!(used, 320);
    }

    #[test]
    fn a_whole_bad_record_is_skipped_with_its_reason_and_the_next_one_is_in_step() {
        let mut received = c_request(b"../.fifo1", b"hi").to_vec();
        let mut no_text_nul = c_request(b".fifo2", b"");
        no_text_nul[NAME_LEN..].fill(b'x');
        received.extend(no_text_nul);
        received.extend(c_request_with_stack_garbage(3));
        let (found, used) = split_requests(&received, true);
        let bad_name = BadRecord::BadName("../.fifo1".into());
        assert_eq!(
            reply_fifos(&found),
            [
                Err(&bad_name),
                Ok(".fifo2"), // its text without NUL is answered
                Ok(".fifo3")
            ]
        );
        assert_eq!(used, 480);
    }

    #[test]
    fn stray_bytes_are_skipped_up_to_the_next_record_and_reported_once() {
        let mut received = vec![b'x'; 1000];
        received.extend(c_request(b".fifo9", b"hi"));
        let (found, used) = split_requests(&received, true);
        assert_eq!(
            reply_fifos(&found),
            [Err(&BadRecord::Stray(1000)), Ok(".fifo9")]
        );
        assert_eq!(used, 1160);
    }

    #[test]
    fn the_start_of_a_record_waits_for_the_rest() {
        let record = c_request(b".fifo9", b"hi");
        for len in [0, 1, 5, 6, 7, 32, 159] {
            assert_eq!(
                split_requests(&record[..len], true),
                (vec![], 0),
                "{len} bytes"
            );
        }
        // What can no longer become a record is reported at once.
        let (found, used) = split_requests(b"hello.fi", true);
        assert_eq!((found, used), (vec![Err(BadRecord::Stray(5))], 5));
    }

    #[test]
    fn a_record_start_is_a_reply_fifo_name_padded_with_nuls() {
        use NameField::*;
        let field = |name: &[u8], padding| {
            let mut bytes = [0u8; NAME_LEN];
            bytes[..name.len()].copy_from_slice(name);
            name_field(&bytes, padding)
        };
        assert_eq!(field(b".fifo123", Padding::Nul), Good);
        assert_eq!(field(b".fifo123\0junk", Padding::Any), Good);
        assert_eq!(field(b".fifo123\0junk", Padding::Nul), Bad);
        for bad in [&b".fifo"[..], b".fifoabc", b"..fifo1", b".fifo1/", b"fifo1"] {
            assert_eq!(field(bad, Padding::Any), Bad, "{}", bad.escape_ascii());
        }
        assert_eq!(field(&[b'1'; 27], Padding::Any), Bad);
        assert_eq!(name_field(b".fifo12", Padding::Nul), Incomplete);
        assert_eq!(name_field(b".fi", Padding::Nul), Incomplete);
        assert_eq!(name_field(b".fx", Padding::Nul), Bad);
    }

    #[test]
    fn control_characters_in_a_text_are_escaped() {
        let record = Record::decode(&c_request(b".fifo1", b"bell\x07 esc\x1b[2J")).unwrap();
        assert_eq!(record.text(), r"bell\7 esc\33[2J");
    }
}
