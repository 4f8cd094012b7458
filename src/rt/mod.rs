//! The runtime: how every program of the suite ends, prints, catches signals and waits. It
//! depends on nothing else in the crate; everything else may use it.
//!
//! | module | concern |
//! |--------|---------|
//! | [`aside`] | the suite's own descriptors, kept at 100 and above |
//! | [`clock`] | times of day, to the second or the microsecond |
//! | [`exit`] | an error that decides the exit status ([`exit::Exit`]); errno as `EACCES: Permission denied` |
//! | [`out`] | printing a whole or partial line, flushed at once ([`out!`](crate::out!), [`outln!`](crate::outln!)), warnings, notes; never a panic |
//! | [`signals`] | SIGHUP/SIGINT/SIGQUIT/SIGTERM… caught, so that waits end and owners clean up |
//! | [`wait`] | one wait for a peer: a deadline, a signal, a polite pause, a note when it lasts |

pub mod aside;
pub mod clock;
pub mod exit;
pub mod out;
pub mod signals;
pub mod wait;
