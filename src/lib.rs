//! # ipclab — the Unix IPC lab suite
//!
//! One binary per exercise of the lecture (`src/bin/*.rs`) and this library that they share.
//! The binaries read like the slides; the library holds what would otherwise be written twelve
//! times, and all `unsafe` code of the suite but none of the binaries'. It is cut by layer; a
//! module uses only the layers above it in this table (ARCHITECTURE.md tells where a new
//! mechanism's pieces go):
//!
//! | layer | modules | what it is |
//! |-------|---------|------------|
//! | runtime | [`rt`]: [`exit`](rt::exit), [`out`](rt::out), [`signals`](rt::signals), [`wait`](rt::wait), [`clock`](rt::clock) | how a program ends, prints, catches signals and waits |
//! | C layouts | [`layout`]: [`record`](layout::record), [`message`](layout::message), [`sipc`](layout::sipc), [`text`](layout::text) | the bytes shared with the C programs; the one policy for a peer's text. No I/O |
//! | system calls | [`sys`]: [`fd`](sys::fd), [`proc`](sys::proc), [`ipc`](sys::ipc), [`msg`](sys::msg), [`shm`](sys::shm), [`mman`](sys::mman), [`trace`](sys::trace) | the lecture's calls under their C names, each said by classroom mode |
//! | liveness | [`peer`] | who is alive, what is a leftover, what is refused: kernel facts only |
//! | owners | [`fifo`], [`queue`], [`segment`], [`sipc`], [`sync`], [`process`], [`copy`], [`stat`] | the objects of each exercise, removed when dropped, and their protocols |
//! | command line | [`cli`] | the options, the one `main` of every binary; the only module that knows clap |
//!
//! The lab manual (`labs.md`) explains the concepts; the code points to it.

pub mod cli;
pub mod copy;
pub mod fifo;
pub mod layout;
pub mod peer;
pub mod process;
pub mod queue;
pub mod rt;
pub mod segment;
pub mod sipc;
pub mod stat;
pub mod sync;
pub mod sys;
