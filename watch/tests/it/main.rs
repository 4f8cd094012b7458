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

use std::path::Path;
use std::process::Command;
use std::sync::LazyLock;

/// The exercises ipcwatch is tried with, beside it.
const EXERCISES: [&str; 6] = ["fifos", "fifoc", "msgq1", "msgq2", "sipc1", "sipc2"];

/// This package's program, and the exercises as the lecture crate builds them (see
/// [`harness::exe`]). Cargo gives a test crate the paths of its own package's binaries only, so
/// the exercises are built here once, with the same profile into the same directory — in a
/// `cargo test --workspace` they are up to date already, and cargo has nothing to do.
static PROGRAMS: LazyLock<Vec<(&str, &str)>> = LazyLock::new(|| {
    let ipcwatch = env!("CARGO_BIN_EXE_ipcwatch");
    let binaries = Path::new(ipcwatch).parent().unwrap();
    let profile = match binaries.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let built = Command::new(env!("CARGO"))
        .args([
            "build",
            "--quiet",
            "--package",
            "ipclab",
            "--profile",
            profile,
        ])
        .args(EXERCISES.iter().flat_map(|name| ["--bin", name]))
        .arg("--target-dir")
        .arg(binaries.parent().unwrap())
        .current_dir(ROOT)
        .status()
        .expect("cargo build of the exercises");
    assert!(built.success(), "cargo build of the exercises failed");
    let mut programs = vec![
        ("ipcwatch", ipcwatch),
        ("ipcclean", env!("CARGO_BIN_EXE_ipcclean")),
    ];
    for name in EXERCISES {
        let path = binaries.join(name).to_str().unwrap().to_owned();
        programs.push((name, path.leak()));
    }
    programs
});

/// The repository's root: labs.md, the Makefile, scripts/.
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
