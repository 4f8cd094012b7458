//! One error format for the whole suite: a failing command of each program (a missing peer, a
//! refused object, a bad path, a full output), every line it writes on stderr matched against
//! `NAME: what failed (object): reason`, an errno always as `ENAME: text`.

use crate::harness::{Finished, Lab};

/// The errno texts a message may hold; each must come after its name (`ENOENT: No such …`).
const ERRNO_TEXTS: [(&str, &str); 6] = [
    ("ENOENT", "No such file or directory"),
    ("EACCES", "Permission denied"),
    ("ENOSPC", "No space left on device"),
    ("EEXIST", "File exists"),
    ("EINVAL", "Invalid argument"),
    ("ENOTDIR", "Not a directory"),
];

/// Asserts `run` failed, and that each of its stderr lines has the suite's one form.
fn assert_one_form(program: &str, run: &Finished) {
    assert!(!run.status.success(), "{run}");
    assert!(!run.stderr.is_empty(), "a failure says why\n{run}");
    for line in run.stderr.lines() {
        let message = line
            .strip_prefix(&format!("{program}: "))
            .unwrap_or_else(|| panic!("{line:?} does not start with '{program}: '\n{run}"));
        assert!(!message.trim().is_empty(), "{run}");
        assert!(!line.contains("(os error"), "Rust's errno form in {line:?}");
        for (name, text) in ERRNO_TEXTS {
            if let Some(at) = line.find(text) {
                let named = line[..at].ends_with(&format!("{name}: "));
                assert!(named, "{text:?} without its name {name} in {line:?}");
            }
        }
    }
}

/// Runs `program args…` in the lab through `sh -c`, so that `redirect` (`>/dev/full`) applies.
fn run_sh(lab: &Lab, program: &str, args: &str, redirect: &str) -> Finished {
    let exe = crate::harness::exe(program).unwrap();
    lab.run(
        "sh",
        &["-c", &format!("exec \"$0\" {args} {redirect}"), exe],
    )
}

#[test]
fn every_program_fails_in_the_one_form() {
    let lab = Lab::new();
    let cases: [(&str, &str, &str); 14] = [
        ("pipe", "", ">/dev/full"),
        ("sync", "--loops 1", ">/dev/full"),
        ("mymore", "--pager cat -- ./no-such-program", ""),
        ("fifos", "--dir ./no/such/dir", ""),
        ("fifoc", "", ""),                    // no server
        ("fifoc", "--dir ./no/such/dir", ""), // a bad path
        ("msgq2", "", ""),                    // no server
        ("shm", "", ">/dev/full"),
        ("mycp3", "./no-such-source copy", ""), // a missing file
        ("mycp3", "/etc ./copy", ""),           // not a regular file
        ("mycp3", "/etc/hostname ./no/such/dir/copy", ""),
        ("mipc", "--loops 2", ">/dev/full"),
        ("msgq1", "--timeout 0.01", ""), // nobody comes
        ("sipc2", "--timeout 0.01", ""), // nobody comes
    ];
    for (program, args, redirect) in cases {
        let run = run_sh(&lab, program, args, redirect);
        assert_one_form(program, &run);
    }
}

#[test]
fn refused_objects_fail_in_the_one_form() {
    let lab = Lab::new();
    // A queue and a segment of ours, open to everyone: both pairs refuse them.
    let key = |base: i32| base + lab.id() as i32;
    let open_to_all = format!(
        "use IPC::SysV qw(IPC_CREAT); defined(msgget({}, IPC_CREAT|0666)) or die $!; \
         defined(shmget({}, 1024, IPC_CREAT|0666)) or die $!",
        key(0x8000),
        key(0x9000)
    );
    lab.run("perl", &["-e", &open_to_all]).assert_success();
    for program in ["msgq1", "msgq2", "sipc1", "sipc2"] {
        let run = lab.run(program, &["--timeout", "1"]);
        assert_one_form(program, &run);
        assert!(run.stderr.contains("use another --id"), "{run}");
    }
    let cleanup = format!(
        "use IPC::SysV qw(IPC_RMID); msgctl(msgget({}, 0), IPC_RMID, 0); \
         shmctl(shmget({}, 0, 0), IPC_RMID, 0)",
        key(0x8000),
        key(0x9000)
    );
    lab.run("perl", &["-e", &cleanup]).assert_success();
}
