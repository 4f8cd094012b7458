//! What the kernel says about the lecture's objects, as a program shows it: `--stat` (the
//! `msqid_ds` of a queue, the `shmid_ds` of a segment, after each step, in one format; labs.md
//! shows both) and `shm --maps` (the line of `/proc/self/maps` that holds an address).
//!
//! A block's header says when the snapshot was taken, to the microsecond. The kernel keeps the
//! times of the object itself in whole seconds (`ktime_get_real_seconds()` in ipc/msg.c and
//! ipc/shm.c): within one second the snapshots, not those fields, tell the steps apart.

use nix::errno::Errno;

use crate::queue::Queue;
use crate::rt::clock::{now, time_of_day};
use crate::segment::Segment;
use crate::sys::failed;
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
        Stat::print(self.block(object, step)?)
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

/// `  [msqid_ds after msgsnd] msqid 327737, at 10:31:22.483211`, then the `ipc_perm` of the
/// slides' row (`msg_perm   key 0x8000, uid 1000, cuid 1000, mode 0600`) and the other `rows`.
fn block(head: String, perm: (&str, &libc::ipc_perm, String), rows: [String; 3]) -> String {
    let (name, perm, mode) = perm;
    let key = Key::from_raw(perm.__key);
    let (uid, cuid) = (perm.uid, perm.cuid);
    let perm = format!("{name}   key {key}, uid {uid}, cuid {cuid}, mode {mode}");
    let rows: String = [perm]
        .iter()
        .chain(&rows)
        .map(|row| format!("\n    {row}"))
        .collect();
    format!("{head}, at {}{rows}", now())
}

impl Stated for Queue {
    fn stat_block(&self, step: &str) -> anyhow::Result<String> {
        let head = format!("  [msqid_ds after {step}] msqid {}", self.id());
        let call = || format!("msgctl(queue {}, IPC_STAT)", self.key());
        let ds = match msg::ipc_stat(self.id()) {
            // msgq1 removes its queue as soon as the reply is taken: msgq2 may find it gone.
            Err(Errno::EINVAL | Errno::EIDRM) => {
                return Ok(format!("{head}: the queue is gone (its server removed it)"));
            }
            found => found.map_err(|e| failed(e, call()))?,
        };
        let mode = format!("{:04o}", ds.msg_perm.mode & 0o777);
        let [stime, rtime, ctime] = [ds.msg_stime, ds.msg_rtime, ds.msg_ctime].map(time_of_day);
        let (qnum, cbytes, qbytes) = (ds.msg_qnum, ds.__msg_cbytes, ds.msg_qbytes);
        let rows = [
            format!("msg_qnum {qnum}, msg_cbytes {cbytes}, msg_qbytes {qbytes}"),
            format!("msg_lspid {}, msg_lrpid {}", ds.msg_lspid, ds.msg_lrpid),
            format!("msg_stime {stime}, msg_rtime {rtime}, msg_ctime {ctime}"),
        ];
        Ok(block(head, ("msg_perm", &ds.msg_perm, mode), rows))
    }
}

impl Stated for Segment {
    fn stat_block(&self, step: &str) -> anyhow::Result<String> {
        let head = format!("  [shmid_ds after {step}] shmid {}", self.id());
        let ds = self.stat()?;
        let [atime, dtime, ctime] = [ds.shm_atime, ds.shm_dtime, ds.shm_ctime].map(time_of_day);
        let rows = [
            format!("shm_segsz {}, shm_nattch {}", ds.shm_segsz, ds.shm_nattch),
            format!("shm_cpid {}, shm_lpid {}", ds.shm_cpid, ds.shm_lpid),
            format!("shm_atime {atime}, shm_dtime {dtime}, shm_ctime {ctime}"),
        ];
        let mode = shm::mode(&ds);
        Ok(block(head, ("shm_perm", &ds.shm_perm, mode), rows))
    }
}

/// The lines of `/proc/self/maps` whose address ranges overlap `start..end`: the mappings that
/// hold those bytes, as the kernel describes them (trailing blanks removed).
pub fn maps_lines(start: usize, end: usize) -> anyhow::Result<Vec<String>> {
    let maps = std::fs::read("/proc/self/maps").map_err(|e| {
        let errno = Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO));
        failed(errno, "read(/proc/self/maps)")
    })?;
    let overlaps = |line: &&str| {
        let range = line.split(' ').next().and_then(|r| r.split_once('-'));
        let bound = |hex: &str| usize::from_str_radix(hex, 16).ok();
        match range.and_then(|(lo, hi)| Some((bound(lo)?, bound(hi)?))) {
            Some((lo, hi)) => lo < end && start < hi,
            None => false,
        }
    };
    let maps = String::from_utf8_lossy(&maps);
    Ok(maps
        .lines()
        .filter(overlaps)
        .map(|l| l.trim_end().to_owned())
        .collect())
}
