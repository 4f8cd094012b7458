//! # ipclab — the Unix IPC lab suite
//!
//! One binary per exercise of the lecture (`src/bin/*.rs`) and this small library that they
//! share. The binaries read like the slides; the library holds what would otherwise be written
//! twelve times, and every `unsafe` block of the suite.
//!
//! | module        | concern                                                                 |
//! |---------------|-------------------------------------------------------------------------|
//! | [`cli`]       | common options (`--id`, `--dir`, `--timeout`), the shared `main` runner, the error format and exit status |
//! | [`out`](mod@out) | printing a whole or partial line and flushing it at once ([`out!`], [`outln!`]) |
//! | [`signals`]   | catching SIGINT/SIGTERM so that waits end and owned objects are removed |
//! | [`wait`]      | deadlines and waiting for a file descriptor without missing a signal   |
//! | [`process`]   | `fork`, waiting for children, finding and `exec`ing a program           |
//! | [`fifo`]      | the FIFO client–server pair: paths and the 160-byte record              |
//! | [`sync`]      | the course's *synclib*: TELL_WAIT, TELL_PARENT, WAIT_PARENT, TELL_CHILD, WAIT_CHILD |
//!
//! The lab manual (`labs.md`) explains the concepts; the code points to it.

pub mod cli;
pub mod fifo;
pub mod out;
pub mod process;
pub mod signals;
pub mod sync;
pub mod wait;
