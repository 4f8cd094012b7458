//! The shared memory calls: `shmget`, `shmat`, `shmdt`, `shmctl`, with their C argument order,
//! each said by classroom mode as it is made (`[sipc1 4711] shmat(32769, NULL, 0) =
//! 0x7f3c2a1d4000`). The owners that detach and remove are in [`crate::segment`].

use std::ffi::c_void;
use std::fmt;
use std::ptr::NonNull;

use libc::{c_int, shmid_ds};
use nix::errno::Errno;

use super::ipc::Key;
use super::trace::{self, Pause};

/// A shared memory identifier, as `shmget` returns it (`ipcs -m` lists it as `shmid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShmId(pub c_int);

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
pub fn shmget(key: Key, size: usize, shmflg: c_int) -> nix::Result<ShmId> {
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
/// Use the memory through [`crate::segment::Attached`], which detaches it when dropped.
pub fn shmat(shmid: ShmId, shmflg: c_int) -> nix::Result<NonNull<c_void>> {
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

/// `shmdt(shmaddr)`: detaches the segment attached at `shmaddr`. A cleanup call, made even when
/// a termination signal ends the classroom pause before it ([`trace::cleanup_call`]).
///
/// # Safety
/// `shmaddr` must be an address [`shmat`] returned and that is still attached, and nothing may
/// use the memory there afterwards (no reference into it may outlive this call).
pub unsafe fn shmdt(shmaddr: *const c_void) -> nix::Result<()> {
    trace::cleanup_call(
        || format!("shmdt({shmaddr:p})"),
        // SAFETY: the caller guarantees that nothing uses this memory any more.
        || Errno::result(unsafe { libc::shmdt(shmaddr) }).map(drop),
        |()| "0".into(),
    )
}

/// `shmctl(shmid, cmd, buf)` for the commands of the slides: `IPC_STAT` (fills `buf`),
/// `IPC_SET` (takes the owner and mode from `buf`) and `IPC_RMID` (`buf` unused: `None`, the C's
/// NULL). Another command fails with `EINVAL` (they fill other structures than `shmid_ds`).
pub fn shmctl(shmid: ShmId, cmd: c_int, buf: Option<&mut shmid_ds>) -> nix::Result<c_int> {
    shmctl_as(shmid, cmd, buf, Pause::EndedBySignal)
}

/// [`shmctl`], made as `pause` says: an owner's cleanup call ([`Pause::NeverEnds`]) is made
/// whatever happens during the classroom pause before it ([`trace::cleanup_call`]).
pub fn shmctl_as(
    shmid: ShmId,
    cmd: c_int,
    buf: Option<&mut shmid_ds>,
    pause: Pause,
) -> nix::Result<c_int> {
    let with_buffer = if buf.is_some() { "&buf" } else { "NULL" };
    let describe = || match cmd {
        libc::IPC_STAT => format!("shmctl({shmid}, IPC_STAT, {with_buffer})"),
        libc::IPC_SET => format!("shmctl({shmid}, IPC_SET, {with_buffer})"),
        libc::IPC_RMID => format!("shmctl({shmid}, IPC_RMID, {with_buffer})"),
        _ => format!("shmctl({shmid}, {cmd}, {with_buffer})"),
    };
    let make = move || {
        let mut buf = buf;
        if !matches!(cmd, libc::IPC_STAT | libc::IPC_SET | libc::IPC_RMID) {
            return Err(Errno::EINVAL);
        }
        let pointer = buf
            .as_deref_mut()
            .map_or(std::ptr::null_mut(), std::ptr::from_mut);
        // SAFETY: for these three commands the kernel reads or writes at most one shmid_ds at
        // `pointer`, a live one borrowed for the call, or NULL (then it fails with EFAULT
        // where it needs one).
        let result = Errno::result(unsafe { libc::shmctl(shmid.0, cmd, pointer) })?;
        let filled = buf.filter(|_| cmd == libc::IPC_STAT);
        Ok((result, filled.map(|ds| -> &shmid_ds { ds })))
    };
    let show = |(result, ds): &(c_int, Option<&shmid_ds>)| match ds {
        Some(ds) => {
            let (mode, segsz, nattch) = (mode(ds), ds.shm_segsz, ds.shm_nattch);
            format!("{result} {{shm_perm.mode={mode}, shm_segsz={segsz}, shm_nattch={nattch}}}")
        }
        None => result.to_string(),
    };
    trace::traced(describe, make, show, pause).map(|(result, _)| result)
}

/// `shmctl(shmid, IPC_STAT, &buf)`: the segment's state.
pub fn ipc_stat(shmid: ShmId) -> nix::Result<shmid_ds> {
    ipc_stat_as(shmid, Pause::EndedBySignal)
}

/// [`ipc_stat`], made as `pause` says (see [`shmctl_as`]).
pub fn ipc_stat_as(shmid: ShmId, pause: Pause) -> nix::Result<shmid_ds> {
    // SAFETY: shmid_ds is plain integers; all-zero bytes are a valid value for each field.
    let mut ds: shmid_ds = unsafe { std::mem::zeroed() };
    shmctl_as(shmid, libc::IPC_STAT, Some(&mut ds), pause)?;
    Ok(ds)
}

/// The mode, with `SHM_DEST` named: `0600|SHM_DEST`.
pub fn mode(ds: &shmid_ds) -> String {
    let mode = u32::from(ds.shm_perm.mode);
    let dest = (mode & SHM_DEST != 0).then_some("|SHM_DEST");
    format!("{:04o}{}", mode & 0o777, dest.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_shmctl_commands_are_refused() {
        assert_eq!(shmctl(ShmId(0), libc::IPC_INFO, None), Err(Errno::EINVAL));
    }
}
