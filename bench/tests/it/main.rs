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

/// This package's program, as cargo built it for this test run (see [`harness::exe`]).
const PROGRAMS: &[(&str, &str)] = &[("ipcbench", env!("CARGO_BIN_EXE_ipcbench"))];

/// The repository's root: labs.md, the Makefile, scripts/.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
