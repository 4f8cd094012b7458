//! ipcwatch's integration tests: the watcher next to the real exercises, stepped as a class steps
//! them. They share the lecture crate's bench (`tests/it/harness.rs`) and its checks of labs.md
//! (`labs.rs`), which here take the commands that run ipcwatch.

// Not every helper of the lecture's bench is needed here.
mod clean;
#[allow(dead_code)]
#[path = "../../../tests/it/harness.rs"]
mod harness;
#[path = "../../../tests/it/labs.rs"]
mod labs;
mod watch;

use std::sync::LazyLock;

/// The exercises ipcwatch is tried with, beside it.
const EXERCISES: [&str; 6] = ["fifos", "fifoc", "msgq1", "msgq2", "sipc1", "sipc2"];

/// This package's programs, and the exercises they are tried with (see [`harness::exe`]).
static PROGRAMS: LazyLock<Vec<(&str, &str)>> = LazyLock::new(|| {
    let ipcwatch = env!("CARGO_BIN_EXE_ipcwatch");
    let mut programs = vec![
        ("ipcwatch", ipcwatch),
        ("ipcclean", env!("CARGO_BIN_EXE_ipcclean")),
    ];
    programs.extend(harness::exercises_beside(ipcwatch, &EXERCISES));
    programs
});

/// The repository's root: labs.md, the Makefile, scripts/.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
