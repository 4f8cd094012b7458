//! The lecture's system calls, under the slides' names and in the C argument order, one module
//! per family, like nix's `src/sys/*`: thin wrappers that take types instead of bare integers
//! (a descriptor, a queue ID, a key) and return `Result` instead of `-1`.
//!
//! | module | calls |
//! |--------|-------|
//! | [`fd`] | `pipe`, `read`, `write`, `close`, `dup2`, `open`, `mkfifo`, `unlink`, `rename`, `lseek`, `fchmod`, `linkat` |
//! | [`proc`] | `fork`, `execv`, `waitpid` |
//! | [`ipc`] | what queues and segments share: keys (`0x8000 + ID`), the ownership check |
//! | [`msg`] | `msgget`, `msgsnd`, `msgrcv`, `msgctl` |
//! | [`shm`] | `shmget`, `shmat`, `shmdt`, `shmctl` |
//! | [`mman`] | `mmap`, `munmap`, `madvise`, `ftruncate`, `posix_fallocate` |
//! | [`sem`] | `semctl`, for `ipcclean`/`ipcwatch` on ipcbench's semaphore set (untraced) |
//! | [`trace`] | classroom mode: every call above says itself, in C notation, as it is made |
//!
//! Every wrapper goes through [`trace`], so `--trace` shows the call with its real values and
//! `--step` stops before it; when classroom mode is off that costs one branch. A call that
//! failed becomes one error, whose message has the same form everywhere ([`failed`]).

pub mod fd;
pub mod ipc;
pub mod mman;
pub mod msg;
pub mod proc;
pub mod sem;
pub mod shm;
pub mod trace;

use std::fmt;

use nix::errno::Errno;

use crate::rt::{exit, signals};

/// The error of a lecture call that failed with `errno`: `CALL(OBJECT): ENAME: text`, the one
/// form of such a message in the suite (`msgget(key 0x8000): ENOENT: No such file or
/// directory`). When the call was not made because a termination signal ended the classroom
/// pause before it (`EINTR`, a signal caught), the signal instead: a quiet exit, 128+signal.
pub fn failed(errno: Errno, call: impl fmt::Display) -> anyhow::Error {
    failed_hinting(errno, call, "")
}

/// [`failed`], with `hint` after the reason (`" (another user's queue?); use another --id"`).
pub fn failed_hinting(errno: Errno, call: impl fmt::Display, hint: &str) -> anyhow::Error {
    match signals::check() {
        Err(stop) if errno == Errno::EINTR => anyhow::Error::new(stop).context(call.to_string()),
        _ => anyhow::anyhow!("{call}: {}{hint}", exit::reason(errno)),
    }
}
