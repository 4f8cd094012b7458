//! What the kernel says about the lecture's objects, as a program shows it: `--stat` (the
//! `msqid_ds` of a queue, the `shmid_ds` of a segment, after each step, in one format) and
//! `shm --maps` (the line of `/proc/self/maps` that holds an address).
//!
//! ```text
//!   [msqid_ds after msgsnd] msqid 327737, at 10:31:22.483211
//!     msg_perm   key 0x8000, uid 1000, cuid 1000, mode 0600
//!     msg_qnum 1, msg_cbytes 128, msg_qbytes 16384
//!     msg_lspid 4712, msg_lrpid 0
//!     msg_stime 10:31:22, msg_rtime -, msg_ctime 10:31:20
//! ```
//!
//! The header says when the snapshot was taken, to the microsecond. The kernel keeps the times
//! of the object itself in whole seconds (`ktime_get_real_seconds()` in ipc/msg.c and
//! ipc/shm.c): within one second the snapshots, not those fields, tell the steps apart.

use anyhow::Context;
use nix::errno::Errno;

use crate::queue::Queue;
use crate::rt::clock::{now, time_of_day};
use crate::segment::Segment;
use crate::sys::ipc::Key;
use crate::sys::{msg, shm};

/// `--stat`: prints an object's `IPC_STAT` after each step, when on.
#[derive(Debug, Clone, Copy)]
pub struct Stat {
    on: bool,
}

/// An object `--stat` can show.
pub trait Stated {
    /// Its block after `step` (see the module docs); a line saying it is gone if it is.
    fn stat_block(&self, step: &str) -> anyhow::Result<String>;
}

impl Stat {
    /// `--stat` on or off.
    pub fn new(on: bool) -> Stat {
        Stat { on }
    }

    /// Prints `object`'s state after `step`.
    pub fn after(&self, object: &impl Stated, step: &str) -> anyhow::Result<()> {
        match self.block(object, step)? {
            Some(block) => crate::outln!("{block}"),
            None => Ok(()),
        }
    }

    /// The block [`Stat::after`] prints, taken now to be printed later (a server answers
    /// before it prints).
    pub fn block(&self, object: &impl Stated, step: &str) -> anyhow::Result<Option<String>> {
        self.on.then(|| object.stat_block(step)).transpose()
    }

    /// Prints a block taken before with [`Stat::block`].
    pub fn print(block: Option<String>) -> anyhow::Result<()> {
        match block {
            Some(block) => crate::outln!("{block}"),
            None => Ok(()),
        }
    }
}

/// The block's lines: a header, then rows of `name value` pairs.
fn block(ds: &str, step: &str, id: String, rows: &[&[(&str, String)]]) -> String {
    let mut text = format!("  [{ds} after {step}] {id}, at {}", now());
    for row in rows {
        let row: Vec<String> = row
            .iter()
            .map(|(name, value)| format!("{name} {value}"))
            .collect();
        text.push_str("\n    ");
        text.push_str(&row.join(", "));
    }
    text
}

/// `key 0x8000, uid 1000, cuid 1000, mode 0600`: the `ipc_perm` of the slides.
fn perm(perm: &libc::ipc_perm, mode: String) -> String {
    let key = Key::from_raw(perm.__key);
    format!(
        "  key {key}, uid {}, cuid {}, mode {mode}",
        perm.uid, perm.cuid
    )
}

impl Stated for Queue {
    fn stat_block(&self, step: &str) -> anyhow::Result<String> {
        let ds = match msg::ipc_stat(self.id()) {
            Ok(ds) => ds,
            // msgq1 removes its queue as soon as the reply is taken: msgq2 may find it gone.
            Err(Errno::EINVAL | Errno::EIDRM) => {
                let id = self.id();
                return Ok(format!(
                    "  [msqid_ds after {step}] msqid {id}: the queue is gone (its server removed it)"
                ));
            }
            Err(e) => return Err(e).context(format!("msgctl(queue {}, IPC_STAT)", self.key())),
        };
        let mode = format!("{:04o}", ds.msg_perm.mode & 0o777);
        Ok(block(
            "msqid_ds",
            step,
            format!("msqid {}", self.id()),
            &[
                &[("msg_perm", perm(&ds.msg_perm, mode))],
                &[
                    ("msg_qnum", ds.msg_qnum.to_string()),
                    ("msg_cbytes", ds.__msg_cbytes.to_string()),
                    ("msg_qbytes", ds.msg_qbytes.to_string()),
                ],
                &[
                    ("msg_lspid", ds.msg_lspid.to_string()),
                    ("msg_lrpid", ds.msg_lrpid.to_string()),
                ],
                &[
                    ("msg_stime", time_of_day(ds.msg_stime)),
                    ("msg_rtime", time_of_day(ds.msg_rtime)),
                    ("msg_ctime", time_of_day(ds.msg_ctime)),
                ],
            ],
        ))
    }
}

impl Stated for Segment {
    fn stat_block(&self, step: &str) -> anyhow::Result<String> {
        let ds = self.stat()?.0;
        Ok(block(
            "shmid_ds",
            step,
            format!("shmid {}", self.id()),
            &[
                &[("shm_perm", perm(&ds.shm_perm, shm::mode(&ds)))],
                &[
                    ("shm_segsz", ds.shm_segsz.to_string()),
                    ("shm_nattch", ds.shm_nattch.to_string()),
                ],
                &[
                    ("shm_cpid", ds.shm_cpid.to_string()),
                    ("shm_lpid", ds.shm_lpid.to_string()),
                ],
                &[
                    ("shm_atime", time_of_day(ds.shm_atime)),
                    ("shm_dtime", time_of_day(ds.shm_dtime)),
                    ("shm_ctime", time_of_day(ds.shm_ctime)),
                ],
            ],
        ))
    }
}

/// The lines of `/proc/self/maps` whose address ranges overlap `start..end`: the mappings that
/// hold those bytes, as the kernel describes them (trailing blanks removed).
pub fn maps_lines(start: usize, end: usize) -> anyhow::Result<Vec<String>> {
    let maps = std::fs::read_to_string("/proc/self/maps").context("reading /proc/self/maps")?;
    let overlaps = |line: &&str| {
        let range = line.split(' ').next().and_then(|r| r.split_once('-'));
        let bound = |hex: &str| usize::from_str_radix(hex, 16).ok();
        match range.and_then(|(lo, hi)| Some((bound(lo)?, bound(hi)?))) {
            Some((lo, hi)) => lo < end && start < hi,
            None => false,
        }
    };
    Ok(maps
        .lines()
        .filter(overlaps)
        .map(|l| l.trim_end().to_owned())
        .collect())
}
