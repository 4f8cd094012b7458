//! System V semaphores: the textbook way to take turns in shared memory (ipcbench's `shm-sem`).
//!
//! | C (the slides)                         | here                                          |
//! |----------------------------------------|-----------------------------------------------|
//! | `semget(key, nsems, semflg)`           | [`semget`] → a [`SemId`]                      |
//! | `semop(semid, sops, nsops)`            | [`semop`] (P: `sem_op` −1, V: `sem_op` +1)    |
//! | `semctl(semid, semnum, SETVAL, arg)`   | [`semctl_setval`]                             |
//! | `semctl(semid, 0, IPC_RMID)`           | dropping the [`SemSet`], or [`semctl_rmid`]   |
//!
//! Each call goes through [`ipclab::sys::trace::call`], so `--trace` shows it in C notation
//! (`semop(32769, [{0, -1, 0}], 1) = 0`). [`SemSet`] owns a set it made and removes it when
//! dropped — on success, on error, and when a caught termination signal travels up through `?`.
//!
//! A `semop` that has to wait sleeps in the kernel until another process's `semop` lets it go:
//! no busy waiting, but two context switches per hand-off. A termination signal ends the wait
//! with `EINTR` (the suite's handlers have no `SA_RESTART`), and so does removing the set
//! (`EIDRM`).

use std::fmt;

use anyhow::Context;
use ipclab::sys::ipc::{Key, MODE};
use ipclab::sys::trace;
use nix::errno::Errno;

/// A semaphore set identifier, as `semget` returns it (`ipcs -s` lists it as `semid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SemId(libc::c_int);

impl SemId {
    /// The identifier as the kernel gives it.
    pub fn raw(self) -> libc::c_int {
        self.0
    }
}

impl fmt::Display for SemId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

const GET_FLAGS: [(i64, &str); 2] = [
    (libc::IPC_CREAT as i64, "IPC_CREAT"),
    (libc::IPC_EXCL as i64, "IPC_EXCL"),
];

/// `semget(key, nsems, semflg)`: the set of `nsems` semaphores with `key`, made if `semflg` has
/// `IPC_CREAT` (with `IPC_EXCL`: only if it does not exist yet; the low 9 bits are its mode).
pub fn semget(key: Key, nsems: libc::c_int, semflg: libc::c_int) -> nix::Result<SemId> {
    trace::call(
        || {
            let flags = trace::flags(semflg.into(), &GET_FLAGS, "0");
            format!("semget({key}, {nsems}, {flags})")
        },
        || {
            // SAFETY: semget takes integers only and touches no memory of this process.
            Errno::result(unsafe { libc::semget(key.raw(), nsems, semflg) }).map(SemId)
        },
        SemId::to_string,
    )
}

/// One operation of a [`semop`]: add `sem_op` to semaphore `sem_num` (−1 waits while it is 0).
pub fn sembuf(sem_num: u16, sem_op: i16) -> libc::sembuf {
    libc::sembuf {
        sem_num,
        sem_op,
        sem_flg: 0,
    }
}

/// `semop(semid, sops, nsops)`: makes all the operations of `sops` at once, waiting until they
/// can all be made.
pub fn semop(semid: SemId, sops: &mut [libc::sembuf]) -> nix::Result<()> {
    let describe = || {
        let shown: Vec<String> = sops
            .iter()
            .map(|op| format!("{{{}, {}, {}}}", op.sem_num, op.sem_op, op.sem_flg))
            .collect();
        format!("semop({semid}, [{}], {})", shown.join(", "), sops.len())
    };
    let described = match trace::enabled() {
        true => describe(),
        false => String::new(),
    };
    trace::call(
        || described,
        || {
            // SAFETY: `sops` is a live slice of sembuf, and the kernel reads exactly
            // `sops.len()` of them.
            let result = unsafe { libc::semop(semid.0, sops.as_mut_ptr(), sops.len()) };
            Errno::result(result).map(drop)
        },
        |()| "0".into(),
    )
}

/// The fourth argument of `semctl`, a C `union semun`.
#[repr(C)]
#[derive(Clone, Copy)]
union Semun {
    val: libc::c_int,
    buf: *mut libc::semid_ds,
}

/// `semctl(semid, semnum, SETVAL, arg)`: sets semaphore `semnum` to `val` (waking whoever that
/// lets go).
pub fn semctl_setval(semid: SemId, semnum: libc::c_int, val: libc::c_int) -> nix::Result<()> {
    trace::call(
        || format!("semctl({semid}, {semnum}, SETVAL, {val})"),
        || {
            let arg = Semun { val };
            // SAFETY: SETVAL reads the `val` member of the union passed by value; no pointer.
            let result = unsafe { libc::semctl(semid.0, semnum, libc::SETVAL, arg) };
            Errno::result(result).map(drop)
        },
        |()| "0".into(),
    )
}

/// `semctl(semid, 0, IPC_RMID)`: removes the set; processes waiting in `semop` on it fail with
/// `EIDRM`. A cleanup call ([`trace::cleanup_call`]): a signal does not stop it.
pub fn semctl_rmid(semid: SemId) -> nix::Result<()> {
    trace::cleanup_call(
        || format!("semctl({semid}, 0, IPC_RMID)"),
        || {
            // SAFETY: IPC_RMID takes no argument and touches no memory of this process.
            Errno::result(unsafe { libc::semctl(semid.0, 0, libc::IPC_RMID) }).map(drop)
        },
        |()| "0".into(),
    )
}

/// `semctl(semid, 0, IPC_STAT, &buf)`: the set's `semid_ds`.
pub fn semctl_stat(semid: SemId) -> nix::Result<libc::semid_ds> {
    trace::call(
        || format!("semctl({semid}, 0, IPC_STAT, &buf)"),
        || {
            // SAFETY: semid_ds is plain integers; all-zero bytes are a valid value.
            let mut ds: libc::semid_ds = unsafe { std::mem::zeroed() };
            let arg = Semun { buf: &mut ds };
            // SAFETY: IPC_STAT writes one semid_ds through `arg.buf`, a valid local one.
            let result = unsafe { libc::semctl(semid.0, 0, libc::IPC_STAT, arg) };
            Errno::result(result).map(|_| ds)
        },
        |ds| {
            format!(
                "0 {{sem_perm.mode={:04o}, sem_nsems={}}}",
                ds.sem_perm.mode, ds.sem_nsems
            )
        },
    )
}

/// A semaphore set this process made; removed (`IPC_RMID`) when dropped.
#[derive(Debug)]
pub struct SemSet {
    id: SemId,
    key: Key,
    /// The lab ID, for the advice on a set that could not be removed.
    lab: u32,
}

impl SemSet {
    /// `semget(0x9000 + lab, nsems, IPC_CREAT|IPC_EXCL|0600)`: a new set of `nsems` semaphores,
    /// all 0, under the segment's key (System V keeps a table of keys per kind of object). A
    /// set that exists already under the key is not taken over (it may be another program's):
    /// the error says how to remove a leftover, or to use another `--id`.
    pub fn create(lab: u32, nsems: u16) -> anyhow::Result<SemSet> {
        let key = Key::segment(lab);
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | MODE as libc::c_int;
        let call = || format!("semget(key {key})");
        match semget(key, nsems.into(), flags) {
            Ok(id) => Ok(SemSet { id, key, lab }),
            Err(Errno::EEXIST) => Err(crate::key_in_use(call(), "a semaphore set", lab)),
            Err(errno) => Err(anyhow::Error::new(errno).context(call())),
        }
    }

    /// The set's identifier.
    pub fn id(&self) -> SemId {
        self.id
    }

    /// The key it was made with.
    pub fn key(&self) -> Key {
        self.key
    }

    /// `semctl(semid, semnum, SETVAL, val)`.
    pub fn set(&self, semnum: u16, val: i32) -> anyhow::Result<()> {
        semctl_setval(self.id, semnum.into(), val)
            .with_context(|| format!("semctl({}, {semnum}, SETVAL, {val})", self.id))
    }
}

impl Drop for SemSet {
    fn drop(&mut self) {
        if let Err(errno) = semctl_rmid(self.id) {
            crate::warn_not_removed(
                &format!("semctl({}, 0, IPC_RMID)", self.id),
                errno,
                self.lab,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_counts_down_and_up_and_is_removed_when_dropped() {
        let set = SemSet {
            id: semget(Key::IPC_PRIVATE, 2, libc::IPC_CREAT | 0o600).unwrap(),
            key: Key::IPC_PRIVATE,
            lab: 0,
        };
        let id = set.id();
        assert_eq!(semctl_stat(id).unwrap().sem_nsems, 2);
        set.set(1, 2).unwrap();
        semop(id, &mut [sembuf(1, -1), sembuf(1, -1)]).unwrap();
        let mut nowait = [libc::sembuf {
            sem_flg: libc::IPC_NOWAIT as i16,
            ..sembuf(1, -1)
        }];
        assert_eq!(semop(id, &mut nowait), Err(Errno::EAGAIN), "it was 0");
        semop(id, &mut [sembuf(0, 1)]).unwrap();
        drop(set);
        assert!(semctl_stat(id).is_err(), "the set was not removed");
    }
}
