//! Classroom mode: `--trace` says each lecture call with its real values, in the order the
//! kernel sees them; `--step` stops before each until Enter; `--slow` paces them.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{exe, wait_until, Finished, Lab, Running};

/// One lecture call: its name as the slides say it, its first argument and its result, e.g.
/// `("write", "4", "14")`. Enough to tell calls apart and to check their real values.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    name: String,
    first: String,
    result: String,
}

/// The calls of `--trace` lines (`[pipe 4711] write(4, "Hello", 5) = 5`), by PID.
fn traced_calls(stderr: &str) -> HashMap<u32, Vec<Call>> {
    let mut calls: HashMap<u32, Vec<Call>> = HashMap::new();
    for line in stderr.lines() {
        let Some((whose, call)) = line.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
            continue;
        };
        let pid = whose.rsplit(' ').next().unwrap().parse().unwrap();
        if let Some(call) = parse_call(call, |name| Some(name.to_string())) {
            calls.entry(pid).or_default().push(call);
        }
    }
    calls
}

/// `name(first, …) = result` → a [`Call`], the name mapped by `rename` (None: not a call we
/// compare). Quoted first arguments (paths, in `--trace` and strace alike) are kept quoted.
fn parse_call(text: &str, rename: impl Fn(&str) -> Option<String>) -> Option<Call> {
    let (name, rest) = text.split_once('(')?;
    let name = rename(name)?;
    // strace pads the result to a column: `close(4)          = 0`.
    let (args, result) = rest.rsplit_once(" = ")?;
    let args = args.trim_end().strip_suffix(')')?;
    let args = args.strip_prefix("AT_FDCWD, ").unwrap_or(args);
    let first = match args.strip_prefix('[') {
        Some(list) => list.split(']').next()?.to_string(), // pipe's fd pair
        None => args.split(", ").next()?.to_string(),
    };
    let result = result.split_whitespace().next()?.to_string();
    // fork's arguments are clone's flags in strace: its result (the child's PID) is what counts.
    let first = if name == "fork" { String::new() } else { first };
    Some(Call {
        name,
        first,
        result,
    })
}

/// The lecture's name of a system call that strace shows (`pipe2` is the slides' `pipe`).
fn lecture_name(syscall: &str) -> Option<String> {
    Some(
        match syscall {
            "pipe2" | "pipe" => "pipe",
            "clone" | "clone3" | "fork" | "vfork" => "fork",
            "wait4" | "waitpid" => "waitpid",
            "execve" => "execv",
            "openat" | "open" => "open",
            "mknodat" | "mknod" => "mkfifo",
            "unlinkat" | "unlink" => "unlink",
            "dup2" | "dup3" => "dup2",
            "renameat2" => "renameat2",
            "close" | "read" | "write" => syscall,
            _ => return None,
        }
        .to_string(),
    )
}

/// `strace -ff` (one file per process, so no call is split into `unfinished`/`resumed`
/// halves) of `program --trace args`, its files named `NAME.<PID>` in the lab's directory.
fn under_strace(lab: &Lab, name: &str, program: &str, args: &[&str]) -> Vec<String> {
    let mut strace_args = vec![
        "-ff".to_string(),
        "-qq".into(),
        "-o".into(),
        lab.dir().join(name).display().to_string(),
        "-e".into(),
        "trace=pipe2,clone,clone3,close,read,write,wait4,execve,openat,mknodat,unlink,unlinkat,dup2,dup3,renameat2".into(),
        exe(program).unwrap().into(),
        "--trace".into(),
    ];
    strace_args.extend(args.iter().map(|a| a.to_string()));
    strace_args
}

/// The lecture calls strace saw, by PID, from the files `NAME.<PID>` (which are removed).
fn strace_calls(lab: &Lab, name: &str) -> HashMap<u32, Vec<Call>> {
    let mut seen = HashMap::new();
    for entry in std::fs::read_dir(lab.dir()).unwrap().filter_map(Result::ok) {
        let file = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = file.strip_prefix(&format!("{name}.")) else {
            continue;
        };
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let calls: Vec<Call> = text
            .lines()
            .filter_map(|line| parse_call(line, lecture_name))
            .collect();
        seen.insert(pid.parse().unwrap(), calls);
        std::fs::remove_file(entry.path()).unwrap();
    }
    seen
}

/// Asserts that each process's `--trace` lines (in `run`'s stderr) are, in order, among the
/// calls strace saw for that process, with the same first argument and result (real
/// descriptors, PIDs, sizes); returns the names of the calls traced.
fn assert_matches(run: &Finished, seen: &HashMap<u32, Vec<Call>>) -> Vec<String> {
    assert!(run.status.success(), "{run}");
    let traced = traced_calls(&run.stderr);
    assert!(!traced.is_empty(), "no --trace lines\n{run}");
    for (pid, calls) in &traced {
        let strace_calls = seen
            .get(pid)
            .unwrap_or_else(|| panic!("strace saw no process {pid}\n{run}"));
        let mut rest = strace_calls.iter();
        for call in calls {
            // A forked child's own `fork() = 0` is the return of its parent's clone.
            if call.name == "fork" && call.result == "0" {
                continue;
            }
            assert!(
                rest.any(|seen| seen == call),
                "process {pid}: {call:?} is not where strace saw it\ntrace: {calls:#?}\nstrace: {strace_calls:#?}"
            );
        }
    }
    traced.values().flatten().map(|c| c.name.clone()).collect()
}

/// [`assert_matches`] for one program, which must trace at least the calls `at_least`.
fn assert_trace_matches_strace(program: &str, args: &[&str], at_least: &[&str]) {
    let lab = Lab::new();
    let run = lab.run("strace", &under_strace(&lab, "strace", program, args));
    let names = assert_matches(&run, &strace_calls(&lab, "strace"));
    for name in at_least {
        assert!(
            names.iter().any(|n| n == name),
            "no {name} in the trace\n{run}"
        );
    }
}

#[test]
fn pipe_traces_its_calls_in_the_order_strace_sees_them() {
    assert_trace_matches_strace(
        "pipe",
        &[],
        &["pipe", "fork", "close", "write", "read", "waitpid"],
    );
}

#[test]
fn sync_traces_its_calls_in_the_order_strace_sees_them() {
    assert_trace_matches_strace(
        "sync",
        &["--loops", "3"],
        &["pipe", "fork", "close", "write", "read", "waitpid"],
    );
}

#[test]
fn mymore_traces_its_calls_in_the_order_strace_sees_them() {
    assert_trace_matches_strace(
        "mymore",
        &["--pager", "cat", "--", "echo", "hi"],
        &["pipe", "fork", "close", "dup2"],
    );
}

#[test]
fn fifos_and_fifoc_trace_their_calls_in_the_order_strace_sees_them() {
    let lab = Lab::new();
    let server = lab.start(
        "strace",
        &under_strace(&lab, "server", "fifos", &["--count", "1"]),
    );
    wait_until(".fifo to appear", || lab.dir().join(".fifo").exists());
    let client = lab.run("strace", &under_strace(&lab, "client", "fifoc", &[]));
    let server = server.finish();
    let mut names = assert_matches(&server, &strace_calls(&lab, "server"));
    names.extend(assert_matches(&client, &strace_calls(&lab, "client")));
    for name in ["mkfifo", "open", "read", "write", "unlink", "renameat2"] {
        assert!(
            names.iter().any(|n| n == name),
            "no {name} in the traces\n{server}\n{client}"
        );
    }
    // Records are shown decoded: name and text.
    assert!(
        client.stderr.contains(r#"{".fifo"#)
            && client.stderr.contains(r#"", "This is a request from "#),
        "{client}"
    );
}

#[test]
fn trace_lines_say_the_program_pid_and_c_notation() {
    let lab = Lab::new();
    let run = lab.run("pipe", &["--trace"]);
    assert!(run.status.success(), "{run}");
    let parent = run
        .stderr
        .lines()
        .find(|l| l.contains("] pipe(["))
        .unwrap_or_else(|| panic!("no pipe line\n{run}"));
    assert!(
        parent.starts_with("[pipe ") && parent.ends_with("]) = 0"),
        "{parent}"
    );
    assert!(
        run.stderr.contains(r#", "Hello, World!\n", 14) = 14"#),
        "the write shows its data and size\n{run}"
    );
    // stdout stays the C version's, byte for byte (parent and child lines in either order).
    let mut lines = run.lines();
    lines.sort();
    assert_eq!(
        lines,
        [
            "Child : Received data from parent: Hello, World!",
            "Child : Wait for parent to send data",
            "Parent: Send data to child",
        ],
        "{run}"
    );
}

#[test]
fn the_environment_turns_tracing_on_as_the_option_does() {
    let lab = Lab::new();
    let mut command = lab.command("sync", &["--loops", "1"]);
    command.env("IPCLAB_TRACE", "1");
    let run = Running::spawn(command).finish();
    assert!(run.status.success(), "{run}");
    assert!(run.stderr.contains("] fork() = 0"), "{run}");
}

#[test]
fn without_classroom_mode_stderr_stays_empty() {
    let lab = Lab::new();
    for program in ["pipe", "sync"] {
        let mut command = lab.command(program, &[] as &[&str]);
        command.env_remove("IPCLAB_TRACE").env_remove("IPCLAB_STEP");
        Running::spawn(command).finish().assert_success();
    }
}

#[test]
fn slow_motion_paces_each_call_and_traces_it() {
    let lab = Lab::new();
    let started = Instant::now();
    let run = lab.run("pipe", &["--slow", "0.1"]);
    assert!(run.status.success(), "{run}");
    let calls = run
        .stderr
        .lines()
        .filter(|l| l.starts_with("[pipe "))
        .count();
    assert!(calls >= 8, "--slow implies --trace\n{run}");
    // The parent makes at least 5 calls one after the other, each after a 0.1 s pause.
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "--slow 0.1 did not pause: {:?}",
        started.elapsed()
    );
}

#[test]
fn slow_is_off_at_any_zero_and_refuses_a_negative_or_endless_pause() {
    let lab = Lab::new();
    for zero in ["0", "0.0", "00"] {
        lab.run("pipe", &["--slow", zero]).assert_success(); // no pause, no trace
        let mut command = lab.command("pipe", &[] as &[&str]);
        command.env("IPCLAB_SLOW", zero);
        Running::spawn(command).finish().assert_success();
    }
    for (option, negative) in [("--slow", "-1"), ("--timeout", "-0.5")] {
        let run = lab.run("msgq2", &[option, negative]);
        run.assert_failure(
            2,
            &format!("invalid value '{negative}' for '{option} <SECS>': expected a positive number of seconds, not a negative one"),
        );
    }
    for huge in ["61", "1e10"] {
        let run = lab.run("pipe", &["--slow", huge]);
        run.assert_failure(2, "at most 60 seconds: the pause comes before every call");
    }
}

#[test]
fn c_and_enter_ends_the_stepping_of_parent_and_child_alike() {
    let lab = Lab::new();
    let sync = exe("sync").unwrap();
    let (run, keys) = start_on_a_terminal(&lab, &format!("{sync} --loops 3 --step"));
    // Enter for the two pipes and the fork; then both processes wait at a prompt.
    for prompts in 1..=3 {
        wait_until("the next prompt", || {
            run.stdout_so_far().matches("next: ").count() == prompts
        });
        press(&keys, "\n");
    }
    wait_until("a prompt of each process", || {
        let seen = run.stdout_so_far();
        seen.matches("next: ").count() >= 5 // parent's and child's first prompts after fork
    });
    press(&keys, "c\n"); // one of the two reads it; the other must run on as well
    let finished = run.finish();
    assert!(finished.status.success(), "{finished}");
    assert_eq!(
        finished.stdout().matches("Child: Tell to parent").count(),
        3,
        "{finished}"
    );
}

#[test]
fn step_without_a_terminal_is_a_usage_error_naming_the_option_used() {
    let lab = Lab::new();
    // setsid: a new session without a controlling terminal, whatever the test runner has.
    let sync = exe("sync").unwrap();
    let run = lab.run("setsid", &["-w", sync, "--step"]);
    run.assert_failure(2, "error: --step needs a terminal");
    assert!(!run.stderr.contains("environment"), "{run}");
    let run = lab.run("setsid", &["-w", sync, "--step-at", "write"]);
    run.assert_failure(2, "error: --step-at needs a terminal");
    // Asked for by a variable the shell exports: the error says which, not an option.
    for (variable, value, option) in [
        ("IPCLAB_STEP", "1", "--step"),
        ("IPCLAB_STEP_AT", "write", "--step-at"),
    ] {
        let mut command = lab.command("setsid", &["-w", sync]);
        command.env(variable, value);
        let run = Running::spawn(command).finish();
        run.assert_failure(2, &format!("error: {option} needs a terminal"));
        let blamed = format!("({variable} is set in the environment: unset it)");
        assert!(run.stderr.contains(&blamed), "{run}");
    }
}

#[test]
fn a_trace_to_error_is_not_blamed_on_stepping_asked_for_in_the_environment() {
    let lab = Lab::new();
    let pipe = exe("pipe").unwrap();
    // On a terminal, so that stepping itself is fine.
    let (run, _keys) = start_on_a_terminal(
        &lab,
        &format!("IPCLAB_STEP=1 {pipe} --trace-to no/such/dir/calls"),
    );
    let run = run.finish();
    assert_eq!(run.code(), Some(2), "{run}");
    let said = run.stdout();
    assert!(
        said.contains("--trace-to no/such/dir/calls: ENOENT"),
        "{run}"
    );
    assert!(!said.contains("environment"), "{run}");
}

/// A pseudo-terminal for a program, made by util-linux `script`: what the test writes into
/// `keys` is typed on that terminal.
pub(crate) fn start_on_a_terminal(lab: &Lab, command_line: &str) -> (Running, OwnedFd) {
    let (keys_reader, keys) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut command = lab.command("script", &["-qfec", command_line, "/dev/null"]);
    command.stdin(Stdio::from(keys_reader));
    (Running::spawn(command), keys)
}

pub(crate) fn press(keys: &OwnedFd, text: &str) {
    nix::unistd::write(keys, text.as_bytes()).unwrap();
}

#[test]
fn step_stops_before_each_call_and_goes_on_at_enter() {
    let lab = Lab::new();
    let sync = exe("sync").unwrap();
    let (run, keys) = start_on_a_terminal(&lab, &format!("{sync} --loops 1 --step"));
    // Before the first call: the prompt names it, and nothing has happened yet.
    // (The terminal shows the trace lines too: script puts stderr on it.)
    let made = |run: &Running| run.stdout_so_far().matches("] pipe([").count();
    run.wait_for_stdout("next: pipe(fd)");
    assert_eq!(made(&run), 0, "pipe was made before Enter");
    press(&keys, "\n");
    run.wait_for_stdout("]) = 0");
    wait_until("the second prompt", || {
        run.stdout_so_far().matches("next: pipe(fd)").count() == 2
    });
    assert_eq!(made(&run), 1, "the second pipe was made before Enter");
    press(&keys, "\n");
    run.wait_for_stdout("next: fork()");
    assert_eq!(made(&run), 2);
    // c + Enter: the rest runs without stopping (the child, forked after it, too).
    press(&keys, "c\n");
    let finished = run.finish();
    assert!(finished.status.success(), "{finished}");
    assert!(
        finished.stdout().contains("Child: Tell to parent"),
        "{finished}"
    );
}
