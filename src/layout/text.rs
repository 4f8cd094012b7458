//! The one policy for text that comes from a peer (a FIFO record, a message, the sipc segment)
//! or goes into a trace: always shown, never refused for its bytes, and never able to drive the
//! terminal it is shown on. Pure functions: no I/O.
//!
//! * [`printable`]: a peer's text as stdout and warnings show it.
//! * [`string`] / [`c_string`]: bytes as a C string literal, as `--trace` and strace show them.
//! * [`decode_text`]: the C string at the start of a fixed-size field, never read past it.

use std::ffi::CStr;
use std::fmt;

/// Bytes as a C string literal, cut to `width` characters as strace does:
/// `"This is a request from 4712."`, `"hello\n"`, `"\0\0\0"...`.
pub fn string(bytes: &[u8], width: usize) -> String {
    let mut shown = String::from("\"");
    for &b in bytes.iter().take(width) {
        match b {
            b'"' => shown.push_str("\\\""),
            0x20..=0x7e if b != b'\\' => shown.push(b as char),
            _ => push_escaped(&mut shown, &[b]),
        }
    }
    shown + if bytes.len() > width { "\"..." } else { "\"" }
}

/// A peer's text, whole and without quotes, in the C notation of [`string`]: what a terminal
/// would obey or hide escaped — control characters (`\33`), bytes that are not UTF-8 (`\377`),
/// Unicode format and bidi controls (U+202E: `\342\200\256`), line and paragraph separators —
/// a backslash doubled, every other character as it is (`é` too).
pub fn printable(bytes: &[u8]) -> String {
    let mut shown = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            if c == '\\' || c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || is_format(c) {
                push_escaped(&mut shown, c.encode_utf8(&mut [0; 4]).as_bytes());
            } else {
                shown.push(c);
            }
        }
        push_escaped(&mut shown, chunk.invalid());
    }
    shown
}

/// Bytes as C escapes: `\n`, `\t`, `\0`, `\\`, or in octal (`\33`).
fn push_escaped(shown: &mut String, bytes: &[u8]) {
    for &b in bytes {
        match b {
            b'\n' => shown.push_str("\\n"),
            b'\t' => shown.push_str("\\t"),
            b'\0' => shown.push_str("\\0"),
            b'\\' => shown.push_str("\\\\"),
            _ => shown.push_str(&format!("\\{b:o}")),
        }
    }
}

/// Unicode general category Cf (format characters: bidi overrides, zero-width space, soft
/// hyphen…), Unicode 15.
fn is_format(c: char) -> bool {
    matches!(
        u32::from(c),
        0xAD | 0x600..=0x605 | 0x61C | 0x6DD | 0x70F | 0x890..=0x891 | 0x8E2 | 0x180E
            | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x206F | 0xFEFF
            | 0xFFF9..=0xFFFB | 0x110BD | 0x110CD | 0x13430..=0x1343F | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A | 0xE0001 | 0xE0020..=0xE007F
    )
}

/// The bytes of the C string at the start of `field`, up to its first NUL; `None` without one.
pub(crate) fn until_nul(field: &[u8]) -> Option<&[u8]> {
    CStr::from_bytes_until_nul(field).ok().map(CStr::to_bytes)
}

/// The text of a NUL-terminated C string field (up to its first NUL), quoted (see [`string`]).
pub fn c_string(field: &[u8], width: usize) -> String {
    string(until_nul(field).unwrap_or(field), width)
}

/// A text field that is not a C string: no NUL in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadText {
    /// The field's size.
    pub len: usize,
    /// The whole field, printable (see [`decode_text`]), to show what was there.
    pub shown: String,
}

impl fmt::Display for BadText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "text without NUL in its {} bytes", self.len)
    }
}

impl std::error::Error for BadText {}

/// The C string at the start of `field`, [`printable`]. Reads nothing past `field`; fails if
/// `field` holds no NUL.
pub fn decode_text(field: &[u8]) -> Result<String, BadText> {
    until_nul(field).map(printable).ok_or_else(|| BadText {
        len: field.len(),
        shown: printable(field),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_escaped_and_cut() {
        assert_eq!(string(b"Hello, World!\n", 40), r#""Hello, World!\n""#);
        assert_eq!(string(b"abcdef", 3), r#""abc"..."#);
        assert_eq!(string(b"a\0\x07\"", 10), r#""a\0\7\"""#);
        assert_eq!(c_string(b"name\0junk", 40), r#""name""#);
        assert_eq!(string(b"a\\b\xc3\xa9", 10), r#""a\\b\303\251""#);
    }

    #[test]
    fn a_peers_text_is_printable_in_c_notation() {
        assert_eq!(
            printable(b"This is a request from 42."),
            "This is a request from 42."
        );
        assert_eq!(printable(b"bell\x07 esc\x1b[2J\n"), r"bell\7 esc\33[2J\n");
        assert_eq!(printable(b"tab\there\\"), r"tab\there\\");
        assert_eq!(printable(b"\xff\xfe caf\xc3\xa9"), r"\377\376 café");
        assert_eq!(
            printable("next line\u{85}".as_bytes()),
            r"next line\302\205"
        );
        // The escapes are those of the quoted form, which traces and warnings show.
        let bytes = b"\x01\x1b\\\t\n";
        assert_eq!(format!("\"{}\"", printable(bytes)), string(bytes, 40));
    }

    #[test]
    fn texts_are_decoded_up_to_the_nul_and_made_printable() {
        assert_eq!(decode_text(b"hi\0junk").unwrap(), "hi");
        assert_eq!(decode_text(b"\0").unwrap(), "");
        assert_eq!(decode_text(b"a\x1b[2Jb\n\0").unwrap(), r"a\33[2Jb\n");
        assert_eq!(decode_text(b"\xff\xfe\0").unwrap(), r"\377\376");
        let bad = decode_text(b"no nul").unwrap_err();
        assert_eq!(bad.shown, "no nul");
    }

    #[test]
    fn format_and_bidi_controls_are_escaped() {
        assert_eq!(printable("a\u{202e}b".as_bytes()), r"a\342\200\256b");
        assert_eq!(
            printable("zero\u{200b}width".as_bytes()),
            r"zero\342\200\213width"
        );
        assert_eq!(printable("\u{feff}".as_bytes()), r"\357\273\277");
        assert_eq!(printable("line\u{2028}".as_bytes()), r"line\342\200\250");
        assert_eq!(
            printable("caf\u{e9} \u{4e2d}".as_bytes()),
            "caf\u{e9} \u{4e2d}"
        );
    }
}
