//! The Makefile's helpers that tests can run without building twice: `make ipcclean`.

use ipclab::sys::ipc::Key;

use crate::harness::Lab;

/// `make ipcclean` runs this script from the repository root; here it runs in the lab's directory.
const IPCCLEAN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/ipcclean.sh");

#[test]
fn ipcclean_removes_the_fifos_and_says_what_it_removed() {
    let lab = Lab::new();
    for name in [".fifo", ".fifo1234"] {
        nix::unistd::mkfifo(
            &lab.dir().join(name),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    }
    let run = lab.run(IPCCLEAN, &[lab.id().to_string()]);
    run.assert_success();
    assert_eq!(
        run.lines(),
        [
            format!("no message queue {}", Key::queue(lab.id())),
            format!("no shared memory segment {}", Key::segment(lab.id())),
            "removed ./.fifo".to_string(),
            "removed ./.fifo1234".to_string(),
        ],
        "{run}"
    );
    assert!(lab.leftovers().is_empty());
}

#[test]
fn ipcclean_removes_a_leftover_queue_and_segment() {
    let lab = Lab::new();
    // A crashed exercise's leftovers, made here with Perl's core System V bindings.
    let make_leftovers = format!(
        "use IPC::SysV qw(IPC_CREAT); defined(msgget({q}, IPC_CREAT|0600)) or die $!; \
         defined(shmget({s}, 1024, IPC_CREAT|0600)) or die $!;",
        q = Key::queue(lab.id()).raw(),
        s = Key::segment(lab.id()).raw()
    );
    lab.run("perl", &["-e", &make_leftovers]).assert_success();
    assert_eq!(lab.leftovers().len(), 2);
    let hex_id = format!("{:#x}", lab.id());
    let run = lab.run(IPCCLEAN, &[hex_id]);
    run.assert_success();
    assert_eq!(
        run.lines()[..2],
        [
            format!("removed message queue {}", Key::queue(lab.id())),
            format!("removed shared memory segment {}", Key::segment(lab.id())),
        ],
        "{run}"
    );
    assert!(lab.leftovers().is_empty());
}

#[test]
fn ipcclean_rejects_an_id_that_is_not_a_number_below_0x1000() {
    let lab = Lab::new();
    for bad in ["4096", "0x1000", "five", "0x", "-1"] {
        lab.run(IPCCLEAN, &[bad])
            .assert_failure(2, "ipcclean: ID must be a number below 0x1000");
    }
}

#[test]
fn ipcclean_check_names_leftovers_and_removes_nothing() {
    let lab = Lab::new();
    let clean = lab.run(IPCCLEAN, &["--check", &lab.id().to_string()]);
    clean.assert_success();
    assert!(clean.stdout.is_empty(), "{clean}");

    let fifo = lab.dir().join(".fifo99");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let run = lab.run(IPCCLEAN, &["--check", &lab.id().to_string()]);
    run.assert_failure(1, "ipcclean: left behind: ./.fifo99");
    assert!(fifo.exists(), "--check must not remove anything\n{run}");
    std::fs::remove_file(fifo).unwrap();
}

/// `make test` checks its tools first: one missing is named, with the way to get it.
#[test]
fn the_tool_check_names_what_is_missing_and_make_setup() {
    let lab = Lab::new();
    // A PATH with every tool the check looks for but strace.
    let bin = lab.dir().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for tool in [
        "make", "more", "ipcs", "ipcrm", "setsid", "setpriv", "taskset", "mount", "unshare",
        "script", "perl", "bash", "cc", "id", "sh", "env",
    ] {
        if let Some(found) = which(tool) {
            std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
        }
    }
    let check = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup.sh");
    let mut command = lab.command("bash", &[check, "--check"]);
    command.env("PATH", &bin);
    let run = crate::harness::Running::spawn(command).finish();
    run.assert_failure(
        1,
        "setup: missing: strace. Run make setup (it installs them)",
    );
    let mut command = lab.command("bash", &[check, "--check"]);
    command.env("PATH", std::env::var_os("PATH").unwrap());
    crate::harness::Running::spawn(command)
        .finish()
        .assert_success();
}

/// Where `tool` is on `$PATH`.
fn which(tool: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| candidate.is_file())
}
