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

/// The arguments of `make ARGS…` with the repository's Makefile, for a make run in a lab's
/// directory as a student runs it in theirs: with nothing to build (`CARGO=true`, these tests
/// built the programs already) and `BIN_DIR` where they are, so that its `./ipcclean` and
/// `./ipcwatch` are links, in the lab's directory, to this package's programs.
fn make_args(args: &[&str]) -> Vec<String> {
    let programs = std::path::Path::new(env!("CARGO_BIN_EXE_ipcclean"))
        .parent()
        .unwrap();
    let mut make = vec![
        "--no-print-directory".to_owned(),
        "-f".to_owned(),
        format!("{ROOT}/Makefile"),
        "CARGO=true".to_owned(),
        format!("BIN_DIR={}", programs.display()),
    ];
    make.extend(args.iter().map(|&arg| arg.to_owned()));
    make
}

/// What a `make` inherits from a `make test` around the tests and must not see (a
/// `make test ID=5` would give it ID=5), nor from the person who runs them.
const MAKE_ENVIRONMENT: [&str; 4] = ["MAKEFLAGS", "MFLAGS", "MAKELEVEL", "ID"];
