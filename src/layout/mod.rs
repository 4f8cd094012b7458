//! The byte layouts the suite shares with the course's C programs, written down once each, and
//! the one policy for a peer's text. Pure: no I/O, no system call; a test pins every offset.
//!
//! | module | layout |
//! |--------|--------|
//! | [`record`] | the FIFO pair's 160-byte record, and finding records again in a byte stream |
//! | [`message`] | the message queue pair's `{ long mtype; char mtext[128]; }` |
//! | [`sipc`] | the sipc pair's 1024-byte segment: a flag, the text, a server's claim |
//! | [`text`] | a peer's text, shown in C notation, never refused for its bytes |

pub mod message;
pub mod record;
pub mod sipc;
pub mod text;
