//! The parent's orders to the child between measurements, and the child's reports, over two
//! pipes of their own (never the pipes being measured).
//!
//! Each record is four little-endian `u64`s. A closed pipe means the other process has gone:
//! the child then simply ends; the parent reports it as an error.

use std::os::fd::{AsFd, OwnedFd};

use anyhow::{anyhow, Context};
use ipclab::rt::wait::{self, Deadline};
use ipclab::sys::fd as sys;
use nix::poll::PollFlags;

const RECORD: usize = 32;

/// What the parent asks of the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Answer `trips` messages of `bytes` bytes, each with itself.
    Echo { trips: u64, bytes: u64 },
    /// Receive `count` chunks of `size` bytes, check each, then [`Report`].
    Receive { size: u64, count: u64 },
    /// End.
    Quit,
}

/// What the child says after a batch of chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report {
    /// Chunks whose checksum was not that of the chunk expected.
    pub bad: u64,
    /// When the last chunk had been checked (CLOCK_MONOTONIC, ns: the same clock in both
    /// processes).
    pub end_ns: u64,
}

/// Two pipes, made before `fork`; each process keeps one end of each.
#[derive(Debug)]
pub struct Control {
    orders: (OwnedFd, OwnedFd),
    reports: (OwnedFd, OwnedFd),
}

/// One process's ends.
#[derive(Debug)]
pub struct End {
    input: OwnedFd,
    output: OwnedFd,
}

impl Control {
    /// `pipe` twice.
    pub fn new() -> anyhow::Result<Control> {
        Ok(Control {
            orders: sys::pipe().context("pipe (orders to the child)")?,
            reports: sys::pipe().context("pipe (reports to the parent)")?,
        })
    }

    /// The parent's ends (the child's are closed here, so that a child that has gone reads
    /// as end-of-file).
    pub fn parent(self) -> End {
        End {
            input: self.reports.0,
            output: self.orders.1,
        }
    }

    /// The child's ends.
    pub fn child(self) -> End {
        End {
            input: self.orders.0,
            output: self.reports.1,
        }
    }
}

impl End {
    fn write(&self, words: [u64; 4]) -> anyhow::Result<()> {
        let mut record = [0u8; RECORD];
        for (at, word) in words.iter().enumerate() {
            record[at * 8..at * 8 + 8].copy_from_slice(&word.to_le_bytes());
        }
        sys::write_all(self.output.as_fd(), &record).context("write (control pipe)")
    }

    /// The next record, `None` at end-of-file. Waits with [`wait::poll`]: a termination signal
    /// ends the wait.
    fn read(&self) -> anyhow::Result<Option<[u64; 4]>> {
        let mut record = [0u8; RECORD];
        let mut done = 0;
        while done < RECORD {
            wait::poll(&[(self.input.as_fd(), PollFlags::POLLIN)], Deadline::NEVER)?;
            match sys::read(self.input.as_fd(), &mut record[done..]) {
                Ok(0) if done == 0 => return Ok(None),
                Ok(0) => return Err(anyhow!("read (control pipe): a record cut short")),
                Ok(n) => done += n,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e).context("read (control pipe)"),
            }
        }
        let word = |at: usize| u64::from_le_bytes(record[at * 8..at * 8 + 8].try_into().unwrap());
        Ok(Some([word(0), word(1), word(2), word(3)]))
    }

    /// The parent's order.
    pub fn order(&self, command: Command) -> anyhow::Result<()> {
        self.write(match command {
            Command::Echo { trips, bytes } => [1, trips, bytes, 0],
            Command::Receive { size, count } => [2, size, count, 0],
            Command::Quit => [3, 0, 0, 0],
        })
    }

    /// The child's next order; `Quit` when the parent has gone.
    pub fn next_order(&self) -> anyhow::Result<Command> {
        Ok(match self.read()? {
            None | Some([3, ..]) => Command::Quit,
            Some([1, trips, bytes, _]) => Command::Echo { trips, bytes },
            Some([2, size, count, _]) => Command::Receive { size, count },
            Some(other) => return Err(anyhow!("unknown order {other:?} on the control pipe")),
        })
    }

    /// The child's report.
    pub fn report(&self, report: Report) -> anyhow::Result<()> {
        self.write([report.bad, report.end_ns, 0, 0])
    }

    /// The child says its link is ready (its ends are open).
    pub fn ready(&self) -> anyhow::Result<()> {
        self.write([0; 4])
    }

    /// The parent waits until the child's link is ready.
    pub fn wait_ready(&self) -> anyhow::Result<()> {
        self.wait_report().map(drop)
    }

    /// The parent waits for the child's report.
    pub fn wait_report(&self) -> anyhow::Result<Report> {
        match self.read()? {
            Some([bad, end_ns, ..]) => Ok(Report { bad, end_ns }),
            None => Err(crate::links::ended("waiting for the receiver's report")),
        }
    }
}
