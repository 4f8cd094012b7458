//! ipcwatch: one lab's IPC objects and who uses them, live, for the projector.
//!
//! A package of its own beside the lecture crate [`ipclab`], whose liveness model
//! (`ipclab::peer`), layouts and options it uses through its public API; students building the
//! exercises do not build it. It only looks, and looking changes nothing a student watches
//! ([`lab`] says how).
//!
//! | module | what it is |
//! |--------|------------|
//! | [`clean`] | what `ipcclean` removes: the lab's objects no live process uses |
//! | [`lab`] | what a lab has and who uses it, at one moment: an [`Inventory`](lab::Inventory) — for any tool that must know (a cleaner that removes only proven leftovers) |
//! | [`procfs`] | the kernel facts under `/proc` it is read from |
//! | [`screen`] | how an inventory is drawn, in 80 columns |
//! | [`terminal`] | keys one at a time, the window's size, a screen redrawn in place |

pub mod clean;
pub mod lab;
pub mod procfs;
pub mod screen;
pub mod terminal;
