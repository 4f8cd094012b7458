//! What System V message queues and shared memory have in common: keys and permissions.
//!
//! The C headers define `MY_ID`; the queue's key is `0x8000 + MY_ID` and the segment's
//! `0x9000 + MY_ID`. Here `--id N` plays `MY_ID`'s role ([`parse_lab_id`]), so that several
//! students (or tests) on one machine each have their own objects.

use std::fmt;

/// System V key of an exercise's message queue: `0x8000 + ID`.
pub const QUEUE_KEY_BASE: i32 = 0x8000;
/// System V key of an exercise's shared memory segment: `0x9000 + ID`.
pub const SEGMENT_KEY_BASE: i32 = 0x9000;
/// IDs are below this, so queue keys and segment keys never overlap.
pub const ID_LIMIT: u32 = 0x1000;
/// The only mode the suite creates objects with. One it finds may be wider for its owner (0700),
/// never for the group or others ([`check_ours`]).
pub const MODE: u32 = 0o600;

/// Parses a lab ID as the programs, `make ipcclean` and the scripts all take it: decimal digits
/// or `0x` and hex digits — nothing else, no sign, no blanks — below [`ID_LIMIT`].
pub fn parse_lab_id(text: &str) -> Result<u32, String> {
    let (digits, radix) = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    let number = match digits.chars().all(|c| c.is_digit(radix)) && !digits.is_empty() {
        true => u32::from_str_radix(digits, radix).ok(),
        false => None,
    };
    match number {
        Some(id) if id < ID_LIMIT => Ok(id),
        Some(_) | None if digits.chars().all(|c| c.is_digit(radix)) && !digits.is_empty() => {
            Err(format!("must be below {ID_LIMIT:#x} (4096)"))
        }
        _ => Err("expected a number in decimal or 0x-hex (0 to 0xfff)".into()),
    }
}

/// A System V IPC key (`key_t`), shown as the slides and `ipcs` show it: `0x8000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(libc::key_t);

impl Key {
    /// `IPC_PRIVATE`: a new object that no other process can find by key.
    pub const IPC_PRIVATE: Key = Key(libc::IPC_PRIVATE);

    /// The message queue key of lab ID `id`: `0x8000 + id`.
    pub fn queue(id: u32) -> Key {
        assert!(id < ID_LIMIT, "lab ID {id:#x} out of range");
        Key(QUEUE_KEY_BASE + id as i32)
    }

    /// The shared memory segment key of lab ID `id`: `0x9000 + id`.
    pub fn segment(id: u32) -> Key {
        assert!(id < ID_LIMIT, "lab ID {id:#x} out of range");
        Key(SEGMENT_KEY_BASE + id as i32)
    }

    /// A key as the kernel stores it.
    pub fn from_raw(raw: libc::key_t) -> Key {
        Key(raw)
    }

    /// The key as the kernel takes it.
    pub fn raw(self) -> libc::key_t {
        self.0
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Key::IPC_PRIVATE => f.write_str("IPC_PRIVATE"),
            Key(raw) => write!(f, "{:#06x}", raw as u32),
        }
    }
}

/// Why an object found under our key is not ours to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Foreign {
    /// Owned by another user.
    OtherUser { uid: u32, cuid: u32 },
    /// Ours now, but made by another user, who may still change or remove it.
    OtherCreator { cuid: u32 },
    /// Ours, but its mode gives the group or others access.
    TooOpen { mode: u32 },
}

impl fmt::Display for Foreign {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Foreign::OtherUser { uid, cuid } => {
                write!(f, "it belongs to another user (uid {uid}, creator {cuid})")
            }
            Foreign::OtherCreator { cuid } => write!(
                f,
                "it was made by another user (uid {cuid}), who may still change or remove it"
            ),
            Foreign::TooOpen { mode } => {
                write!(f, "its mode {mode:03o} lets other users in (expected 600)")
            }
        }
    }
}

/// Checks the owner and mode of an existing object (its `ipc_perm`): on a shared machine
/// another user could have made our key first, with mode 0666, to read or forge every message
/// (key squatting). Only an object that the current user owns and made, and that gives the
/// group and others no access (0600, or 0700: the owner's own bits are the owner's business),
/// is ours.
pub fn check_ours(perm: &libc::ipc_perm) -> Result<(), Foreign> {
    let me = nix::unistd::geteuid().as_raw();
    if perm.uid != me {
        return Err(Foreign::OtherUser {
            uid: perm.uid,
            cuid: perm.cuid,
        });
    }
    if perm.cuid != me {
        return Err(Foreign::OtherCreator { cuid: perm.cuid });
    }
    let mode = u32::from(perm.mode) & 0o777;
    if mode & 0o077 != 0 {
        return Err(Foreign::TooOpen { mode });
    }
    Ok(())
}

/// The hint that goes with a key we cannot use: another lab ID gives other keys.
pub const OTHER_ID_HINT: &str = "use another --id (or IPCLAB_ID)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_ids_are_decimal_or_hex_and_below_the_limit() {
        assert_eq!(parse_lab_id("5"), Ok(5));
        assert_eq!(parse_lab_id("0x1f"), Ok(31));
        assert_eq!(parse_lab_id("0XFFF"), Ok(0xfff));
        for too_big in ["0x1000", "4096", "99999999999999"] {
            assert!(
                parse_lab_id(too_big).unwrap_err().contains("below"),
                "{too_big}"
            );
        }
        for bad in [
            "-1", "+721", " 721 ", "721 ", "five", "", "0x", "0x-1", "1e3",
        ] {
            assert!(
                parse_lab_id(bad).unwrap_err().contains("expected"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_are_the_c_headers_keys() {
        assert_eq!(Key::queue(5).raw(), 0x8005);
        assert_eq!(Key::segment(5).raw(), 0x9005);
        assert_eq!(Key::queue(0).to_string(), "0x8000");
        assert_eq!(Key::segment(0xfff).to_string(), "0x9fff");
        assert_eq!(Key::IPC_PRIVATE.to_string(), "IPC_PRIVATE");
    }

    #[test]
    fn only_our_own_narrow_objects_are_ours() {
        // SAFETY: ipc_perm is plain integers; all-zero bytes are a valid value for each field.
        let mut perm: libc::ipc_perm = unsafe { std::mem::zeroed() };
        let me = nix::unistd::geteuid().as_raw();
        perm.uid = me;
        perm.cuid = me;
        perm.mode = 0o600;
        assert_eq!(check_ours(&perm), Ok(()));
        perm.mode = 0o400;
        assert_eq!(check_ours(&perm), Ok(()));
        perm.mode = 0o700; // the owner's own bits let nobody else in
        assert_eq!(check_ours(&perm), Ok(()));
        perm.mode = 0o666;
        assert_eq!(check_ours(&perm), Err(Foreign::TooOpen { mode: 0o666 }));
        perm.mode = 0o604;
        assert_eq!(check_ours(&perm), Err(Foreign::TooOpen { mode: 0o604 }));
        perm.mode = 0o600;
        perm.cuid = me + 1;
        assert_eq!(
            check_ours(&perm),
            Err(Foreign::OtherCreator { cuid: me + 1 })
        );
        perm.uid = me + 1;
        assert!(matches!(check_ours(&perm), Err(Foreign::OtherUser { .. })));
    }
}
