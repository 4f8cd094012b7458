//! The owners of System V shared memory, so that no path (success, error, a caught signal)
//! leaves anything behind: [`Segment`], a segment found or made by key, removed when dropped if
//! it is this process's to remove; [`Attached`], one attachment, detached (`shmdt`) when
//! dropped. A wait on a segment ([`Segment::wait_until`]) ends when no peer can reach it any
//! more. Used by `shm` and by the `sipc1`/`sipc2` pair ([`crate::sipc`]).

use std::cell::Cell;
use std::ffi::c_void;
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use anyhow::anyhow;
use libc::shmid_ds;
use nix::errno::Errno;

use crate::layout::sipc::{Sipc, SIPC_SIZE};
use crate::peer;
use crate::rt::wait::{Deadline, Wait};
use crate::rt::{exit, out};
use crate::sys::failed;
use crate::sys::ipc::{self, Key, MODE, OTHER_ID_HINT, SEGMENT_KEY_BASE};
use crate::sys::shm::{self, shmat, shmctl_as, shmget, ShmId, SHM_DEST};
use crate::sys::trace::Pause;

/// The error of a `shmget` that could not make a segment of `size` bytes: as [`failed`], with
/// the system's limit when `EINVAL` comes from it (`kernel.shmmax`, per IPC namespace).
fn not_made(errno: Errno, size: usize, call: String) -> anyhow::Error {
    let shmmax = std::fs::read_to_string("/proc/sys/kernel/shmmax").ok();
    match shmmax.and_then(|text| text.trim().parse::<u64>().ok()) {
        Some(max) if errno == Errno::EINVAL && size as u64 > max => anyhow!(
            "{call}: {}: this system allows segments of at most {max} bytes (kernel.shmmax); \
             raise the limit (as root: sysctl -w kernel.shmmax={size})",
            exit::reason(errno)
        ),
        _ => failed(errno, call),
    }
}

/// Who removes a [`Segment`], and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Removal {
    /// When dropped: a segment this process made for itself.
    WhenDropped,
    /// When dropped, if no process is attached any more: a segment two processes share, of
    /// which either may start first and either may be stopped — whoever is last removes it.
    IfLastOut,
    /// Never by this process: it is removed already, or the peer removes it.
    NotHere,
}

/// A shared memory segment, removed when dropped if it is this process's to remove — on
/// success, on error and, with [`crate::rt::signals::catch_termination`], when a signal ends a
/// wait.
#[derive(Debug)]
pub struct Segment {
    id: ShmId,
    key: Key,
    size: usize,
    removal: Cell<Removal>,
}

impl Segment {
    /// `shmget(IPC_PRIVATE, size, IPC_CREAT|0600)`: a new segment that only this process knows
    /// (by its id); removed when dropped.
    pub fn create_private(size: usize) -> anyhow::Result<Segment> {
        let (key, flags) = (Key::IPC_PRIVATE, libc::IPC_CREAT | MODE as libc::c_int);
        let id = shmget(key, size, flags)
            .map_err(|e| not_made(e, size, format!("shmget(IPC_PRIVATE, {size} bytes)")))?;
        Ok(Segment::new(id, key, size, Removal::WhenDropped))
    }

    /// `shmget(key, size, IPC_CREAT|IPC_EXCL|0600)`: a new segment with `key`, removed when
    /// dropped. A segment that exists already under `key` is not taken over (it may be another
    /// program's): the error says how to remove a leftover, or to use another `--id`.
    pub fn create(key: Key, size: usize) -> anyhow::Result<Segment> {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | MODE as libc::c_int;
        match shmget(key, size, flags) {
            Ok(id) => Ok(Segment::new(id, key, size, Removal::WhenDropped)),
            Err(Errno::EEXIST) => Err(anyhow!(
                "shmget(key {key}): a segment with this key exists already (another program's, \
                 or a leftover: {}); {OTHER_ID_HINT}",
                ipcclean(key)
            )),
            Err(e) => Err(failed(e, format_args!("shmget(key {key}, {size} bytes)"))),
        }
    }

    /// The segment with `key` and at least `size` bytes, made (mode 0600) if it does not exist:
    /// either side of a pair may start first. Whoever is last attached removes it.
    ///
    /// A segment that exists already must be the current user's, with no access for the group
    /// or others ([`ipc::check_ours`]): another user could have made the key first to read or
    /// forge every message. The error then names `--id`; one too small that is the user's own
    /// gets the advice to remove it.
    pub fn get_or_create(key: Key, size: usize) -> anyhow::Result<Segment> {
        let call = format!("shmget(key {key})");
        let mode = MODE as libc::c_int;
        // A segment found may be removed before we open it (its last user left): try again.
        for _ in 0..10 {
            match shmget(key, size, libc::IPC_CREAT | libc::IPC_EXCL | mode) {
                Ok(id) => return Ok(Segment::new(id, key, size, Removal::IfLastOut)),
                Err(Errno::EEXIST) => {}
                Err(e) => return Err(not_made(e, size, call)),
            }
            let id = match shmget(key, size, mode) {
                Ok(id) => id,
                // Too small (EINVAL) or closed to us (EACCES): found anyway, to say whose it is.
                Err(Errno::EINVAL | Errno::EACCES) => match shmget(key, 0, 0) {
                    Ok(id) => id,
                    Err(Errno::ENOENT | Errno::EIDRM) => continue,
                    Err(e) => return Err(failed(e, call)),
                },
                Err(Errno::ENOENT | Errno::EIDRM) => continue,
                Err(e) => return Err(failed(e, call)),
            };
            let (small, foreign) = match shm::ipc_stat(id) {
                Ok(ds) => {
                    let foreign = ipc::check_ours(&ds.shm_perm).err();
                    (
                        ds.shm_segsz < size,
                        foreign.map(|foreign| foreign.to_string()),
                    )
                }
                Err(Errno::EINVAL | Errno::EIDRM) => continue,
                Err(Errno::EACCES) => (false, Some("it belongs to another user".into())),
                Err(e) => return Err(failed(e, format_args!("shmctl(key {key}, IPC_STAT)"))),
            };
            let fewer = small.then(|| format!("it exists with fewer than {size} bytes"));
            match (fewer, foreign) {
                (None, None) => return Ok(Segment::new(id, key, size, Removal::IfLastOut)),
                (Some(fewer), None) => {
                    let clean = ipcclean(key);
                    anyhow::bail!("{call}: {fewer}; remove it ({clean}) or use another --id")
                }
                // Only the owner may remove it: say whose it is, suggest nothing of the kind.
                (fewer, Some(foreign)) => {
                    let fewer = fewer.map(|fewer| fewer + ", and ").unwrap_or_default();
                    anyhow::bail!("{call}: {fewer}{foreign}; {OTHER_ID_HINT}")
                }
            }
        }
        anyhow::bail!("{call}: the segment keeps disappearing; try again")
    }

    fn new(id: ShmId, key: Key, size: usize, removal: Removal) -> Segment {
        let removal = Cell::new(removal);
        Segment {
            id,
            key,
            size,
            removal,
        }
    }

    /// The segment's identifier.
    pub fn id(&self) -> ShmId {
        self.id
    }

    /// The key it was found or made with.
    pub fn key(&self) -> Key {
        self.key
    }

    /// The segment in an error message: `key 0x9005`, or `IPC_PRIVATE 32769`.
    fn name(&self) -> String {
        match self.key {
            Key::IPC_PRIVATE => format!("IPC_PRIVATE {}", self.id),
            key => format!("key {key}"),
        }
    }

    /// `shmat(shmid, NULL, 0)`: attaches the segment; detached when the [`Attached`] is
    /// dropped, which happens before the segment is dropped (it borrows the segment).
    pub fn attach(&self) -> anyhow::Result<Attached<'_>> {
        Attached::new(self.id, self.size, &self.name())
    }

    /// `shmctl(shmid, IPC_STAT, &buf)`: the segment's `shmid_ds`.
    pub fn stat(&self) -> anyhow::Result<shmid_ds> {
        stat(self.id, &self.name())
    }

    /// `shmctl(shmid, IPC_RMID, NULL)`: marks the segment for removal now. Its key is free at
    /// once; the memory goes when the last process has detached it — a process still attached
    /// (the client reading its reply) keeps using it. If a signal stops the call, dropping the
    /// segment marks it.
    pub fn remove(&self) -> anyhow::Result<()> {
        self.removal.set(Removal::WhenDropped);
        shmctl_as(self.id, libc::IPC_RMID, None, Pause::EndedBySignal)
            .map_err(|e| failed(e, format_args!("shmctl({}, IPC_RMID)", self.name())))?;
        self.removal.set(Removal::NotHere);
        Ok(())
    }

    /// From now on the peer removes the segment (sipc1 does once it has a request): dropping
    /// it only detaches.
    pub fn leave_removal_to_peer(&self) {
        self.removal.set(Removal::NotHere);
    }

    /// Whether a process besides this one is attached (`shm_nattch` > 1).
    pub fn others_attached(&self) -> anyhow::Result<bool> {
        Ok(self.stat()?.shm_nattch > 1)
    }

    /// Waits until `condition` holds — a change another process makes in the segment, such as
    /// `|| area.flag.load(Acquire) == REQUEST` — politely ([`Wait::until`]), until the
    /// deadline or a termination signal. Fails when the segment has been removed (`IPC_RMID`:
    /// no process can find it by its key any more) and so the process `awaited` cannot come
    /// ([`Awaited`]): another server took the request, the server went away after `IPC_RMID`,
    /// someone ran `ipcrm`.
    pub fn wait_until(
        &self,
        deadline: Deadline,
        awaited: Awaited,
        mut condition: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let shmid = self.id.0;
        let what = move || match peer::attached(shmid) {
            attached if attached.is_empty() => {
                "the reply from a peer (nobody else is attached)".into()
            }
            attached => format!("the reply from {}", peer::listed(&attached)),
        };
        let mut wait = Wait::new(deadline);
        if awaited == Awaited::AttachedPeer {
            wait = wait.saying(&what); // a server waits for requests by nature: it says nothing
        }
        let (mut next_look, mut orphaned) = (Instant::now() + ORPHAN_LOOK, false);
        wait.until(|| {
            if condition() {
                return true;
            }
            if Instant::now() < next_look {
                return false;
            }
            next_look = Instant::now() + ORPHAN_LOOK;
            if !self.orphaned(awaited) {
                return false;
            }
            // The peer may have done its part and left while the table was read (which takes
            // long with many segments): then the condition holds now, and nothing is lost.
            orphaned = !condition();
            true
        })?;
        match orphaned {
            true => Err(anyhow!(awaited.in_vain())),
            false => Ok(()),
        }
    }

    /// Whether the segment is marked for removal and the process `awaited` can therefore not
    /// come. Read from `/proc/sysvipc/shm`, which costs no lecture call (nothing for `--trace` or
    /// `--step` while waiting).
    fn orphaned(&self, awaited: Awaited) -> bool {
        let Ok(table) = std::fs::read_to_string("/proc/sysvipc/shm") else {
            return false;
        };
        let shmid = self.id.to_string();
        // key shmid perms size cpid lpid nattch …
        let mut rows = table
            .lines()
            .skip(1)
            .map(|row| row.split_whitespace().collect::<Vec<_>>());
        let Some(fields) = rows.find(|fields| fields.get(1) == Some(&shmid.as_str())) else {
            return true;
        };
        let perms = fields.get(2).and_then(|p| u32::from_str_radix(p, 8).ok());
        let alone = fields
            .get(6)
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n <= 1);
        perms.is_some_and(|p| p & SHM_DEST != 0) && (alone || awaited == Awaited::NewPeer)
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        let remove = match self.removal.get() {
            Removal::NotHere => false,
            Removal::WhenDropped => true,
            // Our attachment is gone already (an Attached borrows its Segment).
            Removal::IfLastOut => shm::ipc_stat_as(self.id, Pause::NeverEnds).is_ok_and(|ds| {
                ds.shm_nattch == 0
                    && ds.shm_perm.__key == self.key.raw()
                    && u32::from(ds.shm_perm.mode) & SHM_DEST == 0
            }),
        };
        // Two leaving at once may both find nobody attached and both remove it: EINVAL is fine.
        match remove.then(|| shmctl_as(self.id, libc::IPC_RMID, None, Pause::NeverEnds)) {
            Some(Err(errno)) if errno != Errno::EINVAL => out::warn(format_args!(
                "shmctl({}, IPC_RMID): {}; remove it with {}",
                self.name(),
                exit::reason(errno),
                ipcclean(self.key)
            )),
            _ => {}
        }
    }
}

/// `make ipcclean ID=5`: what removes a leftover under `key` (segment key `0x9000 + ID`).
fn ipcclean(key: Key) -> String {
    match key {
        Key::IPC_PRIVATE => "make ipcclean".into(),
        key => format!("make ipcclean ID={}", key.raw() - SEGMENT_KEY_BASE),
    }
}

/// How often [`Segment::wait_until`] looks whether the segment has been orphaned.
const ORPHAN_LOOK: Duration = Duration::from_millis(50);

/// Whom a [`Segment::wait_until`] waits for, which says when it is in vain once the segment has
/// been removed (`IPC_RMID`: its key is free, so no process that comes later can find it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// A process that is attached already or never comes (the client waiting for its reply: the
    /// server that took its request is attached): in vain once nobody else is attached.
    AttachedPeer,
    /// A process yet to come (the server waiting for a request: a client that comes later
    /// cannot find a removed segment, and one attached before has put its request in already):
    /// in vain as soon as it is removed.
    NewPeer,
}

impl Awaited {
    /// Why a wait for it is in vain on a removed segment.
    fn in_vain(self) -> &'static str {
        match self {
            Awaited::AttachedPeer => {
                "the segment was removed (IPC_RMID) and nobody else is attached: no peer can \
                 reach it any more"
            }
            Awaited::NewPeer => {
                "the segment was removed (IPC_RMID) and holds no request: no client can reach \
                 it any more (another server answered, or it was removed with ipcrm)"
            }
        }
    }
}

/// `IPC_STAT` of `shmid`, called `name` in an error message.
fn stat(shmid: ShmId, name: &str) -> anyhow::Result<shmid_ds> {
    shm::ipc_stat(shmid).map_err(|errno| match errno {
        Errno::EINVAL | Errno::EIDRM => anyhow!("shmctl({name}, IPC_STAT): the segment is gone"),
        errno => failed(errno, format_args!("shmctl({name}, IPC_STAT)")),
    })
}

/// One attachment of a segment: its memory, from [`Attached::addr`] for [`Attached::size`]
/// bytes, until it is dropped (`shmdt`). The memory stays valid for that long even if the
/// segment is removed meanwhile: removal only frees it after the last detach.
#[derive(Debug)]
pub struct Attached<'segment> {
    addr: NonNull<c_void>,
    size: usize,
    _segment: PhantomData<&'segment Segment>,
}

impl Attached<'static> {
    /// Attaches the segment `shmid` (any segment, such as one a test made with [`shmget`] to
    /// play a C peer). Its size is taken from `IPC_STAT`.
    pub fn attach(shmid: ShmId) -> anyhow::Result<Attached<'static>> {
        let name = shmid.to_string();
        Attached::new(shmid, stat(shmid, &name)?.shm_segsz, &name)
    }
}

impl Attached<'_> {
    /// `shmat(shmid, NULL, 0)` of a segment of at least `size` bytes, called `name`.
    fn new<'a>(shmid: ShmId, size: usize, name: &str) -> anyhow::Result<Attached<'a>> {
        let addr = shmat(shmid, 0).map_err(|e| failed(e, format_args!("shmat({name})")))?;
        let _segment = PhantomData;
        Ok(Attached {
            addr,
            size,
            _segment,
        })
    }

    /// The first byte of the attached memory.
    pub fn addr(&self) -> *const u8 {
        self.addr.as_ptr().cast()
    }

    /// How many bytes are used from [`Attached::addr`] on.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The memory seen as the sipc pair's layout; fails if the segment is too small for it.
    pub fn sipc(&self) -> anyhow::Result<&Sipc> {
        anyhow::ensure!(
            self.size >= SIPC_SIZE,
            "segment of {} bytes, too small for the {SIPC_SIZE} of sipc",
            self.size
        );
        // SAFETY: the memory is attached (readable and writable: shmat without SHM_RDONLY)
        // for at least SIPC_SIZE bytes as long as `self` lives, which bounds the borrow; it is
        // page-aligned, more than Sipc's 4; any bytes are valid atomics; and every access
        // through Sipc is atomic, so other processes may change it at any time.
        Ok(unsafe { self.addr.cast::<Sipc>().as_ref() })
    }
}

impl Drop for Attached<'_> {
    fn drop(&mut self) {
        // SAFETY: `addr` came from shmat and is detached only here; every borrow of the memory
        // (`sipc()`) borrows `self`, so none outlives this.
        let _ = unsafe { shm::shmdt(self.addr.as_ptr()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_segment_is_attached_and_removed_when_dropped() {
        let segment = Segment::create_private(4096).unwrap();
        let id = segment.id();
        {
            let attached = segment.attach().unwrap();
            assert_eq!(segment.stat().unwrap().shm_nattch, 1);
            let lines =
                crate::stat::maps_lines(attached.addr() as usize, attached.addr() as usize + 1)
                    .unwrap();
            assert_eq!(lines.len(), 1, "{lines:?}");
            assert!(lines[0].contains("/SYSV"), "{lines:?}");
            attached.sipc().unwrap().put("hello", 0).unwrap();
        }
        assert_eq!(segment.stat().unwrap().shm_nattch, 0);
        drop(segment);
        let gone = stat(id, "test").unwrap_err().to_string();
        assert!(gone.ends_with("the segment is gone"), "{gone}");
    }
}
