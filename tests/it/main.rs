//! The integration tests: each runs the real binaries as a student would in a lab session.
//! `harness` is the bench; one module per mechanism.

mod classroom;
mod cpeers;
mod errors;
mod fifo;
mod hardening;
mod harness;
mod labs;
mod make;
mod manual;
mod mman;
mod msgq;
mod pipes;
mod projector;
mod shm;

/// The exercises, as cargo built them for this test run (see [`harness::exe`]).
const PROGRAMS: &[(&str, &str)] = &[
    ("pipe", env!("CARGO_BIN_EXE_pipe")),
    ("sync", env!("CARGO_BIN_EXE_sync")),
    ("mymore", env!("CARGO_BIN_EXE_mymore")),
    ("fifos", env!("CARGO_BIN_EXE_fifos")),
    ("fifoc", env!("CARGO_BIN_EXE_fifoc")),
    ("msgq1", env!("CARGO_BIN_EXE_msgq1")),
    ("msgq2", env!("CARGO_BIN_EXE_msgq2")),
    ("shm", env!("CARGO_BIN_EXE_shm")),
    ("sipc1", env!("CARGO_BIN_EXE_sipc1")),
    ("sipc2", env!("CARGO_BIN_EXE_sipc2")),
    ("mycp3", env!("CARGO_BIN_EXE_mycp3")),
    ("mipc", env!("CARGO_BIN_EXE_mipc")),
];

/// The repository's root: labs.md, the Makefile, scripts/.
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
