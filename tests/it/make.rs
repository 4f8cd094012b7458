//! The Makefile's helpers that tests can run without building twice: `make test`'s check of
//! its tools. (`make ipcclean` is ipcwatch's package's `ipcclean`, tested there.)

use crate::harness::Lab;

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
