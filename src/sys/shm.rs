//! The shared memory calls: `shmget`, `shmat`, `shmdt`, `shmctl`, with their C argument order,
//! each said by classroom mode as it is made (`[sipc1 4711] shmat(32769, NULL, 0) =
//! 0x7f3c2a1d4000`). The owners that detach and remove are in [`crate::segment`].

use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;

use nix::errno::Errno;

use super::ipc::Key;
use super::trace::{self, Pause};

/// A shared memory identifier, as `shmget` returns it (`ipcs -m` lists it as `shmid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShmId(libc::c_int);

impl ShmId {
    /// The identifier as the kernel gives it.
    pub fn raw(self) -> libc::c_int {
        self.0
    }
}

impl fmt::Display for ShmId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `shm_perm.mode` bit: the segment is marked for removal (IPC_RMID) and goes when the last
/// process detaches (`ipcs -m` says `dest`). Not in the `libc` crate.
pub const SHM_DEST: u32 = 0o1000;

const GET_FLAGS: [(i64, &str); 2] = [
    (libc::IPC_CREAT as i64, "IPC_CREAT"),
    (libc::IPC_EXCL as i64, "IPC_EXCL"),
];

const AT_FLAGS: [(i64, &str); 4] = [
    (libc::SHM_RDONLY as i64, "SHM_RDONLY"),
    (libc::SHM_RND as i64, "SHM_RND"),
    (libc::SHM_REMAP as i64, "SHM_REMAP"),
    (libc::SHM_EXEC as i64, "SHM_EXEC"),
];

/// `shmget(key, size, shmflg)`: the segment with `key`, made if `shmflg` has `IPC_CREAT`
/// (with `IPC_EXCL`: only if it does not exist yet). The low 9 bits of `shmflg` are the mode of
/// a new segment.
pub fn shmget(key: Key, size: usize, shmflg: libc::c_int) -> nix::Result<ShmId> {
    trace::call(
        || {
            let flags = trace::flags(shmflg.into(), &GET_FLAGS, "0");
            format!("shmget({key}, {size}, {flags})")
        },
        || {
            // SAFETY: shmget takes integers only and touches no memory of this process.
            let id = unsafe { libc::shmget(key.raw(), size, shmflg) };
            Errno::result(id).map(ShmId)
        },
        ShmId::to_string,
    )
}

/// `shmat(shmid, NULL, shmflg)`: attaches the segment at an address the kernel chooses (the
/// course always passes NULL; a chosen address could replace memory in use) and returns it.
///
/// Use the memory through [`Attached`], which detaches it when dropped.
pub fn shmat(shmid: ShmId, shmflg: libc::c_int) -> nix::Result<NonNull<c_void>> {
    trace::call(
        || {
            let flags = trace::flags(shmflg.into(), &AT_FLAGS, "0");
            format!("shmat({shmid}, NULL, {flags})")
        },
        || {
            // SAFETY: with a NULL address the kernel places the segment where nothing is
            // mapped, so no memory of this process changes; shmat returns (void *) -1 on error.
            let addr = unsafe { libc::shmat(shmid.0, std::ptr::null(), shmflg) };
            if addr as isize == -1 {
                Err(Errno::last())
            } else {
                NonNull::new(addr).ok_or(Errno::EINVAL)
            }
        },
        |addr| format!("{:p}", addr.as_ptr()),
    )
}

/// `shmdt(shmaddr)`: detaches the segment attached at `shmaddr`.
///
/// # Safety
/// `shmaddr` must be an address [`shmat`] returned and that is still attached, and nothing may
/// use the memory there afterwards (no reference into it may outlive this call).
pub unsafe fn shmdt(shmaddr: *const c_void) -> nix::Result<()> {
    // SAFETY: the caller's guarantee (see above).
    unsafe { detach(shmaddr, Pause::EndedBySignal) }
}

/// `shmctl(shmid, cmd, buf)` for the commands of the slides: `IPC_STAT` (fills `buf`),
/// `IPC_SET` (takes the owner and mode from `buf`) and `IPC_RMID` (`buf` unused: `None`, the C's
/// NULL). Another command fails with `EINVAL` (they fill other structures than `shmid_ds`).
pub fn shmctl(
    shmid: ShmId,
    cmd: libc::c_int,
    buf: Option<&mut libc::shmid_ds>,
) -> nix::Result<libc::c_int> {
    let (result, filled) = control(shmid, cmd, buf.as_deref().copied(), Pause::EndedBySignal)?;
    if let Some(buf) = buf {
        *buf = filled; // as it was, unless IPC_STAT filled it
    }
    Ok(result)
}

/// [`shmdt`], made as `pause` says: a lecture call, or a cleanup call made whatever happens
/// (an owner detaching when it is dropped, see [`trace::cleanup_call`]).
///
/// # Safety
/// As for [`shmdt`].
pub unsafe fn detach(shmaddr: *const c_void, pause: Pause) -> nix::Result<()> {
    trace::traced(
        || format!("shmdt({shmaddr:p})"),
        // SAFETY: the caller guarantees that nothing uses this memory any more.
        || Errno::result(unsafe { libc::shmdt(shmaddr) }).map(drop),
        |_| "0".into(),
        pause,
    )
}

/// [`shmctl`] with `buf` passed by value and returned (filled by `IPC_STAT`), made as `pause`
/// says (see [`detach`]).
pub fn control(
    shmid: ShmId,
    cmd: libc::c_int,
    buf: Option<libc::shmid_ds>,
    pause: Pause,
) -> nix::Result<(libc::c_int, libc::shmid_ds)> {
    let ds = buf.unwrap_or_else(empty_stat);
    let describe = move || {
        let (name, shown) = match cmd {
            libc::IPC_STAT => ("IPC_STAT", "&buf".to_string()),
            libc::IPC_SET => (
                "IPC_SET",
                format!(
                    "{{uid={}, gid={}, mode={:04o}}}",
                    ds.shm_perm.uid, ds.shm_perm.gid, ds.shm_perm.mode
                ),
            ),
            libc::IPC_RMID => ("IPC_RMID", "NULL".to_string()),
            _ => return format!("shmctl({shmid}, {cmd}, ...)"),
        };
        let shown = if buf.is_some() { shown } else { "NULL".into() };
        format!("shmctl({shmid}, {name}, {shown})")
    };
    let make = move || {
        let mut ds = ds;
        if !matches!(cmd, libc::IPC_STAT | libc::IPC_SET | libc::IPC_RMID) {
            return Err(Errno::EINVAL);
        }
        let pointer = match buf {
            Some(_) => &mut ds as *mut libc::shmid_ds,
            None => std::ptr::null_mut(),
        };
        // SAFETY: for these three commands the kernel reads or writes at most one shmid_ds at
        // `pointer`, a valid local one, or NULL (then it fails with EFAULT where it needs one).
        let result = Errno::result(unsafe { libc::shmctl(shmid.0, cmd, pointer) })?;
        Ok((result, ds))
    };
    let show = |(result, ds): &(libc::c_int, libc::shmid_ds)| match cmd {
        libc::IPC_STAT => format!("{result} {}", brief(ds)),
        _ => result.to_string(),
    };
    trace::traced(describe, make, show, pause)
}

/// A zeroed `shmid_ds`, for `IPC_STAT` to fill in.
pub fn empty_stat() -> libc::shmid_ds {
    // SAFETY: shmid_ds is plain integers; all-zero bytes are a valid value for each field.
    unsafe { std::mem::zeroed() }
}

/// The mode, with `SHM_DEST` named: `0600|SHM_DEST`.
pub fn mode(ds: &libc::shmid_ds) -> String {
    let mode = u32::from(ds.shm_perm.mode);
    let dest = if mode & SHM_DEST != 0 {
        "|SHM_DEST"
    } else {
        ""
    };
    format!("{:04o}{dest}", mode & 0o777)
}

/// What a trace line shows of `IPC_STAT`: `{shm_perm.mode=0600, shm_segsz=1024, shm_nattch=2}`.
fn brief(ds: &libc::shmid_ds) -> String {
    format!(
        "{{shm_perm.mode={}, shm_segsz={}, shm_nattch={}}}",
        mode(ds),
        ds.shm_segsz,
        ds.shm_nattch
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_shmctl_commands_are_refused() {
        assert_eq!(shmctl(ShmId(0), libc::IPC_INFO, None), Err(Errno::EINVAL));
    }
}
