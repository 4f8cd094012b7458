//! # ipclab — the Unix IPC lab suite
//!
//! One binary per exercise of the lecture (`src/bin/*.rs`) and this small library that they
//! share. The binaries read like the slides; the library holds what would otherwise be written
//! twelve times, and every `unsafe` block of the exercises. (The benchmark `ipcbench`, with its
//! System V semaphores, is a package of its own in `bench/` that uses this library.)
//!
//! | module        | concern                                                                 |
//! |---------------|-------------------------------------------------------------------------|
//! | [`cli`]       | common options (`--id`, `--dir`, `--timeout`), the shared `main` runner, the error format |
//! | [`error`]     | an error that carries its own exit status ([`error::Exit`])             |
//! | [`out`](mod@out) | printing a whole or partial line and flushing it at once ([`out!`], [`outln!`]) |
//! | [`signals`]   | catching SIGHUP/SIGINT/SIGQUIT/SIGTERM… so that waits end and owned objects are removed |
//! | [`wait`]      | deadlines and waiting for a file descriptor without missing a signal   |
//! | [`process`]   | `fork`, waiting for children, finding and `exec`ing a program           |
//! | [`fifo`]      | the FIFO client–server pair: paths and the 160-byte record              |
//! | [`msg`]       | System V message queues: msgget/msgsnd/msgrcv/msgctl, the 136-byte message, the server's queue |
//! | [`shm`]       | System V shared memory: shmget/shmat/shmdt/shmctl, the segment owners |
//! | [`sipc`]      | the sipc1/sipc2 pair: the 1024-byte layout, the hand-off, the server and client sides |
//! | [`peer`]      | the liveness model: who is alive (a server's lock, kernel facts), what is a leftover, what is refused |
//! | [`text`]      | the one policy for a peer's text: shown in C notation, never refused for its bytes |
//! | [`sysv`]      | System V keys (`0x8000 + ID`, `0x9000 + ID`) and the ownership check of an object found by key |
//! | [`sys`]       | the lecture's calls on pipes, FIFOs and files (`pipe`, `read`, `write`, `open`, `mkfifo`…), traced |
//! | [`trace`]     | classroom mode: `--trace`, `--step`, `--slow` around each lecture call  |
//! | [`sync`]      | the course's *synclib*: TELL_WAIT, TELL_PARENT, WAIT_PARENT, TELL_CHILD, WAIT_CHILD |
//! | [`mman`]      | memory-mapped files: `mmap`/`munmap`, a `memcpy` between mappings, mipc's shared counter |
//! | [`copy`]      | mycp3's copy policy: SOURCE and its data ranges, the unnamed copy that becomes DEST whole or not at all, the SIGBUS handler |
//!
//! The lab manual (`labs.md`) explains the concepts; the code points to it.

pub mod cli;
pub mod copy;
pub mod error;
pub mod fifo;
pub mod mman;
pub mod msg;
pub mod out;
pub mod peer;
pub mod process;
pub mod shm;
pub mod signals;
pub mod sipc;
pub mod sync;
pub mod sys;
pub mod sysv;
pub mod text;
pub mod trace;
pub mod wait;
