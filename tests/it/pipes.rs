//! Pipes: `pipe`, `sync` (the synclib) and `mymore` (`ls -l | more` by hand).

use nix::sys::signal::Signal;

use crate::harness::{children_of, Lab};

// ---- pipe -------------------------------------------------------------------------------------

#[test]
fn pipe_prints_the_c_versions_three_lines_without_a_nul_byte() {
    let lab = Lab::new();
    let run = lab.run("pipe", &[] as &[&str]);
    run.assert_success();
    assert!(!run.stdout.contains(&0), "a NUL byte was printed\n{run}");
    let lines = run.lines();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "Child : Received data from parent: Hello, World!",
            "Child : Wait for parent to send data",
            "Parent: Send data to child",
        ],
        "{run}"
    );
    // The child's two lines keep their order; the parent's line may come before or after them.
    let position = |text: &str| lines.iter().position(|l| l.starts_with(text)).unwrap();
    assert!(
        position("Child : Wait") < position("Child : Received"),
        "{run}"
    );
}

// ---- sync -------------------------------------------------------------------------------------

const PARENT_LINES: [&str; 2] = ["Parent: Tell to child", "Parent: Wait for child to tell"];
const CHILD_LINES: [&str; 2] = ["Child: Wait for parent to tell", "Child: Tell to parent"];

/// Checks what the synclib guarantees about `sync`'s output: each process prints its own lines in
/// its own order, and neither runs more than one round ahead of the other.
fn assert_takes_turns(lines: &[String], loops: usize, report: &dyn std::fmt::Display) {
    let from = |prefix: &str| -> Vec<&str> {
        lines
            .iter()
            .filter(|l| l.starts_with(prefix))
            .map(String::as_str)
            .collect()
    };
    assert_eq!(
        from("Parent"),
        PARENT_LINES.repeat(loops),
        "parent's order\n{report}"
    );
    assert_eq!(
        from("Child"),
        CHILD_LINES.repeat(loops),
        "child's order\n{report}"
    );
    assert_eq!(lines.len(), 4 * loops, "stray lines\n{report}");

    // The parent tells for round k only after the child has said it waits in round k-1, and the
    // child tells in round k only after the parent has said it waits in round k-1.
    let (mut parent_tells, mut parent_waits, mut child_waits, mut child_tells) = (0, 0, 0, 0);
    for (at, line) in lines.iter().enumerate() {
        match line.as_str() {
            l if l == PARENT_LINES[0] => parent_tells += 1,
            l if l == PARENT_LINES[1] => parent_waits += 1,
            l if l == CHILD_LINES[0] => child_waits += 1,
            _ => child_tells += 1,
        }
        assert!(
            parent_tells <= child_waits + 1,
            "parent ran ahead at line {at}\n{report}"
        );
        assert!(
            child_tells <= parent_waits + 1,
            "child ran ahead at line {at}\n{report}"
        );
    }
}

/// Runs `sync` with `args` and checks it takes `loops` turns.
fn sync_takes_turns(args: &[&str], loops: usize) {
    let lab = Lab::new();
    let run = lab.run("sync", args);
    run.assert_success();
    assert_takes_turns(&run.lines(), loops, &run);
}

#[test]
fn sync_takes_five_turns_in_twenty_lines() {
    sync_takes_turns(&[], 5);
}

#[test]
fn sync_takes_one_turn_with_loops_1() {
    sync_takes_turns(&["--loops", "1"], 1);
}

#[test]
fn sync_takes_fifty_turns_with_loops_50() {
    sync_takes_turns(&["--loops", "50"], 50);
}

#[test]
fn sync_ends_quietly_when_its_reader_goes_away() {
    let lab = Lab::new();
    let sync = lab.command("sync", &["--loops", "100000"]);
    let script = format!(
        "{:?} --loops 100000 | head -n 1; echo \"sync exited with ${{PIPESTATUS[0]}}\"",
        sync.get_program()
    );
    let run = lab.run("bash", &["-c", &script]);
    run.assert_success(); // nothing on stderr: no panic, no "Broken pipe", no lost peer
    let lines = run.lines();
    assert_eq!(lines.len(), 2, "{run}");
    assert!(
        [PARENT_LINES[0], CHILD_LINES[0]].contains(&lines[0].as_str()),
        "{run}"
    );
    assert_eq!(lines[1], "sync exited with 0", "{run}");
}

#[test]
fn sync_fails_at_once_when_the_child_is_killed_mid_protocol() {
    let lab = Lab::new();
    let sync = lab.start("sync", &["--loops", "1000000"]);
    sync.wait_for_stdout("Child: Tell to parent");
    let child = children_of(sync.pid());
    assert_eq!(child.len(), 1, "sync should have one child");
    nix::sys::signal::kill(child[0], Signal::SIGKILL).unwrap();
    let run = sync.finish_at_once();
    run.assert_failure(1, "sync: ");
    assert!(run.stderr.contains("child exited before"), "{run}");
    assert_eq!(run.stderr.lines().count(), 1, "one error line\n{run}");
}

#[test]
fn sync_child_fails_at_once_when_the_parent_is_killed_mid_protocol() {
    let lab = Lab::new();
    let sync = lab.start("sync", &["--loops", "1000000"]);
    sync.wait_for_stdout("Parent: Wait for child to tell");
    sync.signal(Signal::SIGKILL);
    // The orphaned child still holds our stderr: finishing waits for it to let go.
    let run = sync.finish_at_once();
    assert!(run.stderr.contains("sync: "), "{run}");
    assert!(run.stderr.contains("parent exited before"), "{run}");
}

#[test]
fn sync_rejects_a_bad_option_with_usage_status() {
    let lab = Lab::new();
    lab.run("sync", &["--loops", "many"])
        .assert_failure(2, "--loops");
}

// ---- mymore -----------------------------------------------------------------------------------

/// A directory with a known content, and its `ls -l`.
fn listing_dir(lab: &Lab, files: usize) -> String {
    let dir = lab.dir().join("listing");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..files {
        std::fs::write(
            dir.join(format!("file-with-a-long-name-{i:05}.txt")),
            "x".repeat(i),
        )
        .unwrap();
    }
    let ls = lab.run("ls", &["-l", "listing"]);
    ls.assert_success();
    ls.stdout()
}

#[test]
fn mymore_shows_ls_l_through_the_pager_in_pager_env() {
    let lab = Lab::new();
    std::fs::write(lab.dir().join("notes.txt"), "some text").unwrap();
    std::fs::create_dir(lab.dir().join("subdir")).unwrap();
    let expected = lab.run("ls", &["-l"]);
    let mut mymore = lab.command("mymore", &[] as &[&str]);
    mymore.env("PAGER", "cat");
    let run = crate::harness::Running::spawn(mymore).finish();
    run.assert_success();
    assert_eq!(run.stdout(), expected.stdout(), "{run}");
    assert!(run.stdout().contains("notes.txt"), "{run}");
}

#[test]
fn mymore_with_more_on_a_pipe_passes_the_listing_through() {
    let lab = Lab::new();
    let expected = listing_dir(&lab, 20);
    let run = lab.run("mymore", &["--", "ls", "-l", "listing"]); // PAGER unset: more
    run.assert_success();
    assert_eq!(run.stdout(), expected, "{run}");
}

#[test]
fn mymore_runs_the_command_after_double_dash() {
    let lab = Lab::new();
    let run = lab.run("mymore", &["--pager", "cat", "--", "echo", "one", "two"]);
    run.assert_success();
    assert_eq!(run.stdout(), "one two\n", "{run}");
}

#[test]
fn mymore_quitting_the_pager_early_prints_no_broken_pipe() {
    let lab = Lab::new();
    let expected = listing_dir(&lab, 3000); // far more than a pipe holds
    assert!(expected.len() > 200_000);
    let run = lab.run(
        "mymore",
        &["--pager", "head -n1", "--", "ls", "-l", "listing"],
    );
    run.assert_success(); // stderr empty: ls ended by SIGPIPE, quietly, as under a shell
    assert_eq!(run.lines(), [expected.lines().next().unwrap()], "{run}");
}

#[test]
fn mymore_with_a_command_that_does_not_exist_fails_with_127() {
    let lab = Lab::new();
    let run = lab.run("mymore", &["--pager", "cat", "--", "no-such-command", "-x"]);
    run.assert_failure(
        127,
        "mymore: cannot run 'no-such-command': command not found",
    );
    assert!(run.stdout.is_empty(), "{run}");
}

#[test]
fn mymore_with_a_pager_that_does_not_exist_fails_with_127() {
    let lab = Lab::new();
    let run = lab.run("mymore", &["--pager", "no-such-pager -R"]);
    run.assert_failure(127, "mymore: cannot run 'no-such-pager': command not found");
    assert_eq!(run.stderr.lines().count(), 1, "{run}");
}

/// Runs `mymore -- COMMAND` for a `command` that exists but cannot be run, with a pager that
/// would say so if it started, and checks the one error line, the 127 and the silent pager.
fn mymore_cannot_run(lab: &Lab, command: &std::path::Path, reason: &str) {
    let command = command.to_str().unwrap();
    let run = lab.run(
        "mymore",
        &["--pager", "echo pager-started", "--", command, "-x"],
    );
    run.assert_failure(127, &format!("mymore: cannot run '{command}': {reason}"));
    assert_eq!(run.stderr.lines().count(), 1, "one error line\n{run}");
    assert!(run.stdout.is_empty(), "the pager started\n{run}");
}

/// Writes `content` to `name` in the lab's directory, with permission bits `mode`.
///
/// An executable is written by a child (`cp` of a draft), never through a descriptor of this
/// process: a child another test forks meanwhile would inherit that descriptor until its exec,
/// and exec of a file open for writing fails with `ETXTBSY`.
fn file_with_mode(lab: &Lab, name: &str, content: &[u8], mode: u32) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let (draft, path) = (
        lab.dir().join(format!("{name}.draft")),
        lab.dir().join(name),
    );
    std::fs::write(&draft, content).unwrap();
    lab.run("cp", &[&draft, &path]).assert_success();
    std::fs::remove_file(&draft).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn mymore_with_a_directory_as_command_fails_with_127_before_the_pager_starts() {
    let lab = Lab::new();
    mymore_cannot_run(&lab, lab.dir(), "Is a directory");
}

#[test]
fn mymore_with_a_bad_interpreter_line_fails_with_127_before_the_pager_starts() {
    let lab = Lab::new();
    let script = file_with_mode(&lab, "script", b"#!/no/such/shell -e\necho hi\n", 0o755);
    mymore_cannot_run(
        &lab,
        &script,
        "bad interpreter '/no/such/shell' in its #! line: ENOENT: No such file or directory",
    );
}

#[test]
fn mymore_with_random_bytes_as_command_fails_with_127_before_the_pager_starts() {
    let lab = Lab::new();
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let noise = file_with_mode(&lab, "noise", &noise, 0o755);
    mymore_cannot_run(&lab, &noise, "ENOEXEC: Exec format error");
    let elf = file_with_mode(&lab, "bad-elf", b"\x7fELF\x02\x01\x01\0truncated", 0o755);
    mymore_cannot_run(&lab, &elf, "ENOEXEC: Exec format error");
}

#[test]
fn mymore_with_a_file_that_is_not_executable_fails_with_127() {
    let lab = Lab::new();
    let script = file_with_mode(&lab, "script", b"#!/bin/sh\necho hi\n", 0o644);
    mymore_cannot_run(&lab, &script, "EACCES: Permission denied");
}

#[test]
fn mymore_looks_up_the_command_in_path_skipping_files_that_are_not_executable() {
    let lab = Lab::new();
    for (dir, mode) in [("first", 0o644), ("second", 0o755)] {
        std::fs::create_dir(lab.dir().join(dir)).unwrap();
        let script = format!("#!/bin/sh\necho {dir}\n");
        file_with_mode(&lab, &format!("{dir}/tool"), script.as_bytes(), mode);
    }
    let path = format!("{0}/first:{0}/second:/usr/bin:/bin", lab.dir().display());
    let mut mymore = lab.command("mymore", &["--pager", "cat", "--", "tool"]);
    mymore.env("PATH", path);
    let run = crate::harness::Running::spawn(mymore).finish();
    run.assert_success();
    assert_eq!(run.stdout(), "second\n", "{run}");
}

#[test]
fn mymore_runs_the_pager_through_sh_as_git_and_man_do() {
    let lab = Lab::new();
    let mut mymore = lab.command("mymore", &["--", "echo", "listing"]);
    mymore.env("PAGER", r#"sh -c "cat; echo done""#);
    let run = crate::harness::Running::spawn(mymore).finish();
    run.assert_success();
    assert_eq!(run.stdout(), "listing\ndone\n", "{run}");

    let run = lab.run(
        "mymore",
        &["--pager", "tr a-z A-Z | cat", "--", "echo", "hi"],
    );
    run.assert_success();
    assert_eq!(run.stdout(), "HI\n", "{run}");
}

#[test]
fn mymore_with_a_pager_that_sh_cannot_run_fails_with_127() {
    let lab = Lab::new();
    let run = lab.run(
        "mymore",
        &["--pager", "no-such-pager 'quoted'", "--", "echo", "hi"],
    );
    run.assert_failure(127, "no-such-pager");
    assert!(run.stdout.is_empty(), "{run}");
}
