//! `semctl` as `ipcclean` and `ipcwatch` need it for ipcbench's semaphore set (key `0x9000 + ID`,
//! beside the segment): who waits on it, who used it last, and its removal. The lecture has no
//! semaphore exercise; ipcbench makes and uses its set itself.

use nix::errno::Errno;

/// `semctl(semid, semnum, cmd)` for a query that takes no argument and returns a count or a
/// PID: `GETNCNT` (processes waiting for the value to grow), `GETZCNT` (waiting for 0),
/// `GETPID` (the last process to operate on it).
pub fn semctl_get(semid: i32, semnum: i32, cmd: libc::c_int) -> nix::Result<i32> {
    assert!(matches!(cmd, libc::GETNCNT | libc::GETZCNT | libc::GETPID));
    // SAFETY: these commands take no fourth argument and read nothing from the caller.
    Errno::result(unsafe { libc::semctl(semid, semnum, cmd) })
}

/// `semctl(semid, 0, IPC_RMID)`: removes the set; processes waiting on it fail with `EIDRM`.
pub fn semctl_rmid(semid: i32) -> nix::Result<()> {
    // SAFETY: IPC_RMID takes no fourth argument; a wrong id fails with EINVAL.
    Errno::result(unsafe { libc::semctl(semid, 0, libc::IPC_RMID) }).map(drop)
}
