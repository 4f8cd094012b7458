//! ipcbench — which IPC is fastest? Every mechanism of the lecture, measured side by side.
//!
//! Demonstrates: the lecture's claim that shared memory is the fastest form of IPC, with
//! numbers from this machine. Between a parent and the child it forks, over each mechanism in
//! turn (pipe, FIFO, UNIX socket, message queue, shared memory with a spinning flag or with
//! semaphores, mmap of /dev/zero), it measures the round trip of a 64-byte message (p50, p99)
//! and the one-way throughput of 4 KiB, 64 KiB and 1 MiB chunks, the receiver checking every
//! byte; `memcpy` in one process is the limit. `--bare` puts each mechanism's simplest
//! ping-pong loop next to ipcbench's own, so the cost of the measuring itself shows.
//!
//! System calls: pipe, mkfifo/open, socketpair, msgget/msgsnd/msgrcv/msgctl,
//! shmget/shmat/shmdt/shmctl, semget/semop/semctl, mmap/munmap, fork, read/write, waitpid.
//! Run:     make ipcbench && ./ipcbench          (about 10 s; ./ipcbench --only pipe,shm-spin)
//! Observe: the copies each mechanism makes (labs.md, section 10);  ipcs while it runs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use ipcbench::output::OutputFile;
use ipcbench::report::{self, Progress};
use ipcbench::{bare, Mechanism, Settings, DEFAULT_SIZES};
use ipclab::cli::IdOption;
use ipclab::{out, outln};

/// Measures every IPC mechanism of the lecture: 64-byte round-trip latency and throughput.
#[derive(Parser)]
#[command(version)]
struct Options {
    /// Only these mechanisms, comma-separated
    #[arg(long, value_name = "MECH[,MECH]", value_delimiter = ',')]
    only: Vec<Mechanism>,

    /// Throughput chunk size(s) in bytes, comma-separated (K and M allowed) [default: 4K,64K,1M]
    #[arg(long, value_name = "BYTES", value_delimiter = ',', value_parser = ipcbench::parse_size)]
    size: Vec<usize>,

    /// Run each measurement SECS seconds [default: latency 0.5 s; throughput 256 MiB per size]
    #[arg(long, value_name = "SECS", value_parser = ipclab::cli::parse_seconds,
          allow_negative_numbers = true)]
    duration: Option<Duration>,

    /// Print the results as JSON, one object per measurement
    #[arg(long)]
    json: bool,

    /// Also draw the charts as an SVG picture (for slides) into FILE
    #[arg(long, value_name = "FILE", conflicts_with = "bare")]
    svg: Option<PathBuf>,

    #[arg(long, help = bare_help())]
    bare: bool,

    #[command(flatten)]
    id: IdOption,

    /// (tests) flip one byte of the first chunk of each batch after its checksum was taken
    #[arg(long, hide = true)]
    corrupt_one_byte: bool,

    /// (tests) round trips of each --bare run
    #[arg(long, hide = true, default_value_t = bare::ROUND_TRIPS)]
    round_trips: u64,
}

/// `--bare`'s help, with the figures the comparison uses.
fn bare_help() -> String {
    format!(
        "Compare ipcbench's latency loop with the simplest ping-pong loop of pipe, msgq, \
         unix-socket and shm-spin ({} round trips), and shm-spin's throughput with the simplest \
         ring ({} chunks, {} slots); {} runs each",
        bare::ROUND_TRIPS,
        report::size_name(bare::RING_CHUNK),
        bare::RING_SLOTS,
        bare::ROUNDS
    )
}

fn main() -> ExitCode {
    ipclab::cli::run(env!("CARGO_BIN_NAME"), bench)
}

fn bench(options: Options) -> anyhow::Result<()> {
    ipclab::rt::signals::catch_termination()?;
    // Before minutes of measuring: a chart that cannot be written fails now.
    let svg = options.svg.as_deref().map(OutputFile::check).transpose()?;
    let settings = Settings {
        mechanisms: distinct(&options.only, &Mechanism::ALL),
        sizes: distinct(&options.size, &DEFAULT_SIZES),
        duration: options.duration,
        round_trips: None,
        throughput: true,
        id: options.id.id,
        corrupt_one_byte: options.corrupt_one_byte,
    };
    let progress = Progress::new(&settings.mechanisms);

    if options.bare {
        let compared = bare::compare(&settings, options.round_trips, &progress);
        progress.clear();
        let compared = compared?;
        if !compared.results.is_empty() {
            match options.json {
                true => out!("{}", report::bare_json(&compared.results))?,
                false => out!("{}", report::bare_table(&compared.results))?,
            }
        }
        return compared.outcome();
    }

    let run = ipcbench::measure_all(&settings, &progress);
    progress.clear();
    let run = run?;
    let results = &run.results;
    if results.is_empty() {
        return run.outcome();
    }
    if options.json {
        out!("{}", report::json(results))?;
    } else {
        outln!("{}\n", report::heading(results, settings.duration))?;
        outln!("{}", report::table(results))?;
        out!("{}", report::chart(results))?;
    }
    if let Some(file) = svg {
        file.write(report::svg(results)?.as_bytes())?;
    }
    let corrupted = report::corrupted(results);
    anyhow::ensure!(
        corrupted.is_empty(),
        "data arrived corrupted (verified: false): {}",
        corrupted.join(", ")
    );
    run.outcome()
}

/// The values `given` on the command line, each once and in order (`--size 4K,4K` measures
/// once), or all of `default`.
fn distinct<T: Ord + Clone>(given: &[T], default: &[T]) -> Vec<T> {
    let mut values = match given.is_empty() {
        true => default.to_vec(),
        false => given.to_vec(),
    };
    values.sort();
    values.dedup();
    values
}
