//! ipcbench's integration tests: the benchmark run as a person runs it, and section 10 of the lab
//! manual. They share the lecture crate's bench (`tests/it/harness.rs`) and its checks of
//! labs.md (`labs.rs`, `manual.rs`), which here take the section of ipcbench.

// Not every helper of the lecture's bench is needed here.
#[allow(dead_code)]
#[path = "../../../tests/it/harness.rs"]
mod harness;
mod ipcbench;
#[path = "../../../tests/it/labs.rs"]
mod labs;
#[path = "../../../tests/it/manual.rs"]
mod manual;

use std::sync::LazyLock;

/// The exercises ipcbench is tried with, beside it: those that share its keys.
const EXERCISES: [&str; 4] = ["msgq1", "msgq2", "sipc1", "sipc2"];

/// This package's program, as cargo built it for this test run, and the exercises (see
/// [`harness::exe`]).
static PROGRAMS: LazyLock<Vec<(&str, &str)>> = LazyLock::new(|| {
    let ipcbench = env!("CARGO_BIN_EXE_ipcbench");
    let mut programs = vec![("ipcbench", ipcbench)];
    programs.extend(harness::exercises_beside(ipcbench, &EXERCISES));
    programs
});

/// The repository's root: labs.md, the Makefile, scripts/.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
