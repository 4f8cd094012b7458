//! Classroom mode on a projector: trace lines that start at column 0, prompts that fit 80
//! columns, `--step-at`, `--trace-to`, `--trace-time`, colours, and the lecture's descriptors at
//! the numbers the C gets.

use std::path::Path;

use crate::classroom::{press, start_on_a_terminal};
use crate::harness::{exe, step_to, wait_until, Lab, Running, Stepped};

/// Starts msgq1 and waits until its queue is there.
fn msgq1(lab: &Lab) -> Running {
    let server = lab.start("msgq1", &[] as &[&str]);
    let key = ipclab::sys::ipc::Key::queue(lab.id());
    wait_until("msgq1's queue", || ipclab::sys::msg::msgget(key, 0).is_ok());
    server
}

#[test]
fn trace_lines_start_at_column_0_when_stdout_and_stderr_share_a_file() {
    let lab = Lab::new();
    let server = msgq1(&lab);
    let both = lab.dir().join("both");
    let msgq2 = exe("msgq2").unwrap();
    let run = lab.run("sh", &["-c", r#"exec "$0" --trace >both 2>&1"#, msgq2]);
    run.assert_success();
    server.finish().assert_success();
    let text = std::fs::read_to_string(&both).unwrap();
    // The trace line that follows "Sent a request....." starts a line of its own there ...
    assert!(text.contains("Sent a request.....\n[msgq2 "), "{text}");
    for line in text.lines() {
        assert!(
            line.starts_with("[msgq2 ")
                || line.starts_with("Sent a request")
                || line.starts_with("Received reply"),
            "a line that does not start at column 0: {line:?}\n{text}"
        );
    }
    // ... while stdout alone is byte for byte the C's.
    let alone = lab.run("sh", &["-c", r#"exec "$0" --trace 2>/dev/null"#, msgq2]);
    assert_eq!(alone.code(), Some(1), "no server any more: {alone}");
}

#[test]
fn trace_to_sends_the_lines_to_a_file_and_leaves_stderr_empty() {
    let lab = Lab::new();
    let pipe = lab.run("pipe", &["--trace-to", "calls"]);
    pipe.assert_success();
    let calls = std::fs::read_to_string(lab.dir().join("calls")).unwrap();
    assert!(calls.contains("] pipe(["), "{calls}");
    assert!(
        calls.contains("] fork() = 0"),
        "the child's lines too: {calls}"
    );
    assert!(!calls.contains('\x1b'), "no colour in a file: {calls:?}");
    let mode = std::fs::metadata(lab.dir().join("calls")).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
        0o600
    );
    let bad = lab.run("pipe", &["--trace-to", "no/such/dir/calls"]);
    bad.assert_failure(
        2,
        "--trace-to no/such/dir/calls: ENOENT: No such file or directory",
    );
    // A FIFO nobody reads: refused at once, not waited on for ever in open.
    nix::unistd::mkfifo(&lab.dir().join("unread"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let escaped = lab.run("pipe", &["--trace-to", "no\x1b[2J/calls"]);
    escaped.assert_failure(2, "--trace-to no\\33[2J/calls: ENOENT");
    let unread = lab.run("pipe", &["--trace-to", "unread"]);
    unread.assert_failure(
        2,
        "--trace-to unread: a FIFO nobody reads (start its reader first)",
    );
}

#[test]
fn trace_to_another_terminal_starts_at_column_0_after_its_shell_s_prompt() {
    let lab = Lab::new();
    // Another pane: a shell's prompt, the cursor after it.
    let pane = Stepped::on_terminal(&lab, "pane", "tty >pane.tty; printf 'pane$ '; exec cat");
    let tty = lab.dir().join("pane.tty");
    wait_until("the pane's terminal", || {
        std::fs::read_to_string(&tty).is_ok_and(|name| name.ends_with('\n'))
    });
    wait_until("the pane's prompt", || pane.screen().contains("pane$ "));
    let tty = std::fs::read_to_string(&tty).unwrap();
    lab.run("pipe", &["--trace-to", tty.trim()])
        .assert_success();
    wait_until("the trace in the pane", || {
        pane.screen().contains("] waitpid(")
    });
    let screen = pane.bytes_on_screen();
    let screen = String::from_utf8_lossy(&screen);
    let (_, after_prompt) = screen.split_once("pane$ ").unwrap();
    let (before_first_line, _) = after_prompt.split_once("[pipe ").unwrap();
    assert!(
        before_first_line.contains('\r'),
        "the first line starts after the prompt: {screen:?}"
    );
}

#[test]
fn trace_time_stamps_each_line_and_says_when_a_wait_starts() {
    let lab = Lab::new();
    let sync = lab.run("sync", &["--loops", "1", "--trace-time"]);
    assert_eq!(sync.code(), Some(0), "{sync}");
    for line in sync.stderr.lines() {
        let (time, rest) = line.split_once(' ').unwrap();
        assert!(is_time_to_the_microsecond(time), "{line}");
        assert!(rest.starts_with("[sync "), "{line}");
    }
    // A read that waits for the peer shows when it starts and when it returns.
    assert!(sync.stderr.contains(") <unfinished …>"), "{}", sync.stderr);
    assert!(
        sync.stderr.contains("<… resumed> read(3, \"p\", 1) = 1"),
        "{}",
        sync.stderr
    );
    let env = lab.command("sync", &["--loops", "1"]);
    let mut env = env;
    env.env("IPCLAB_TRACE", "time");
    let by_env = Running::spawn(env).finish();
    assert!(
        is_time_to_the_microsecond(by_env.stderr.split(' ').next().unwrap()),
        "{by_env}"
    );
}

#[test]
fn trace_time_says_a_wait_as_it_starts_not_once_the_peer_has_come() {
    // Each server, with no client yet: its wait for a request is said at once.
    let servers = [
        ("fifos", "read(3, buf, 4000) <unfinished …>"), // 25 records at most
        ("msgq1", ", 128, 1, IPC_NOWAIT|MSG_NOERROR) <unfinished …>"),
        ("sipc1", "while (*flag == 0) <unfinished …>"),
    ];
    let labs: Vec<Lab> = servers.iter().map(|_| Lab::new()).collect();
    let running: Vec<Running> = servers
        .iter()
        .zip(&labs)
        .map(|((server, _), lab)| lab.start(server, &["--trace-time"]))
        .collect();
    for ((_, wait), server) in servers.iter().zip(&running) {
        server.wait_for_stderr(wait);
        server.signal(nix::sys::signal::Signal::SIGTERM);
    }
    for ((server, _), run) in servers.iter().zip(running) {
        // The signal ends the wait, as it would end C's call (or loop).
        let run = run.finish();
        let ended = match *server {
            "sipc1" => "<… resumed> *flag == 0 after ",
            _ => "= -1 EINTR (Interrupted system call)",
        };
        assert!(run.stderr.contains(ended), "{run}");
    }

    // A client's wait for its reply (the server held at a prompt before it writes one), and
    // sync's child's wait for its parent (held before its first write).
    let lab = Lab::new();
    let server = Stepped::start_with(&lab, "fifos", &["--step-at", "write", "--count", "1"]);
    wait_until(".fifo", || lab.dir().join(".fifo").exists());
    let client = lab.start("fifoc", &["--trace-time"]);
    let (_, call) = server.prompt(1);
    assert!(call.starts_with("write("), "{call}");
    client.wait_for_stderr("read(3, buf, 160) <unfinished …>");
    server.run_on();
    let (run, _) = server.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    client.finish();
    let sync = Stepped::start_with(
        &lab,
        "sync",
        &["--loops", "1", "--trace-time", "--step-at", "write"],
    );
    let (parent, call) = sync.prompt(1);
    assert!(call.starts_with("write("), "{call}");
    wait_until("the child's read, said as it starts", || {
        let screen = sync.screen();
        screen.lines().any(|l| {
            l.contains(" read(")
                && l.ends_with("<unfinished …>")
                && !l.contains(&parent.to_string())
        })
    });
    sync.run_on();
    let (run, _) = sync.finish();
    assert_eq!(run.code(), Some(0), "{run}");
}

/// `10:31:22.483211`.
fn is_time_to_the_microsecond(text: &str) -> bool {
    let (clock, micros) = text.split_once('.').unwrap_or_default();
    micros.len() == 6
        && micros.bytes().all(|b| b.is_ascii_digit())
        && clock.split(':').count() == 3
        && clock
            .split(':')
            .all(|p| p.len() == 2 && p.parse::<u8>().is_ok())
}

#[test]
fn prompts_fit_80_columns_and_say_the_keys_once_per_process() {
    let lab = Lab::new();
    let server = msgq1(&lab);
    let client = Stepped::start(&lab, "msgq2");
    // Enter at each prompt once it shows (one typed before would answer none).
    let mut answered = 0;
    loop {
        wait_until("the next prompt or the end", || {
            let screen = client.screen();
            screen.matches("] next: ").count() > answered || screen.contains("Received reply")
        });
        if client.screen().contains("Received reply") {
            break;
        }
        answered += 1;
        client.press_enter();
    }
    let (run, screen) = client.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    server.finish().assert_success();
    let prompts: Vec<&str> = screen.lines().filter(|l| l.contains("] next: ")).collect();
    assert!(prompts.len() >= 4, "{screen}");
    for prompt in &prompts {
        assert!(
            prompt.chars().count() <= 80,
            "{} columns: {prompt}",
            prompt.chars().count()
        );
    }
    assert!(
        prompts.iter().any(|p| p.ends_with('…')),
        "the msgsnd prompt is cut: {screen}"
    );
    let keys = screen.matches("c Enter: run to the end").count();
    assert_eq!(keys, 1, "{screen}");
    // The call cut in its prompt is whole in its trace line.
    assert!(screen.contains("\"This is a request from "), "{screen}");
}

#[test]
fn step_at_stops_only_before_the_calls_named_and_traces_the_rest() {
    let lab = Lab::new();
    let server = msgq1(&lab);
    let client = Stepped::start_with(&lab, "msgq2", &["--step-at", "msgrcv"]);
    let (_, call) = client.prompt(1);
    assert!(call.starts_with("msgrcv("), "{call}");
    let screen = client.screen();
    // msgget, msgctl, msgsnd were made and traced without a stop.
    assert!(
        screen.contains("] msgsnd(") && screen.contains(") = 0"),
        "{screen}"
    );
    assert_eq!(screen.matches("] next: ").count(), 1, "{screen}");
    client.press_enter();
    let (run, _) = client.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    server.finish().assert_success();
}

#[test]
fn step_at_takes_the_names_of_the_trace_trimmed_and_refuses_others() {
    let lab = Lab::new();
    for (bad, refused) in [
        ("", ""),
        (" ", " "),
        ("nosuchcall", "nosuchcall"),
        ("MSGRCV", "MSGRCV"),
        ("shmat,", ""), // the name after the comma
        ("strcpy(shm", "strcpy(shm"),
    ] {
        let run = lab.run("pipe", &["--step-at", bad]);
        run.assert_failure(
            2,
            &format!("invalid value '{refused}' for '--step-at <CALLS>'"),
        );
        assert!(run.stderr.contains(", msgrcv, "), "names the calls\n{run}");
        assert!(run.stderr.contains(", *flag, "), "and the events\n{run}");
        assert!(run.stdout.is_empty(), "{run}");
    }
    let upper = lab.run("pipe", &["--step-at", "MSGRCV"]);
    upper.assert_failure(2, "lower case: msgrcv");
    // As one types a list: a blank after the comma, one after the last name.
    let shm = Stepped::start_with(&lab, "shm", &["--step-at", "' shmat, shmdt '"]);
    let (_, call) = shm.prompt(1);
    assert!(call.starts_with("shmat("), "{call}");
    shm.press_enter();
    let (_, call) = shm.prompt(2);
    assert!(call.starts_with("shmdt("), "{call}");
    shm.press_enter();
    let (run, screen) = shm.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    assert_eq!(screen.matches("] next: ").count(), 2, "{screen}");
}

#[test]
fn each_process_has_a_colour_on_a_terminal_and_none_with_no_color() {
    let lab = Lab::new();
    let sync = exe("sync").unwrap();
    let mut command = lab.command(
        "script",
        &["-qfec", &format!("{sync} --loops 1 --trace"), "/dev/null"],
    );
    command.env_remove("NO_COLOR");
    let coloured = Running::spawn(command).finish();
    let screen = coloured.stdout();
    let colours: std::collections::BTreeSet<&str> = screen
        .match_indices("\x1b[")
        .filter_map(|(at, _)| screen[at..].split_once('m').map(|(code, _)| code))
        .filter(|code| *code != "\x1b[0")
        .collect();
    assert_eq!(
        colours.len(),
        2,
        "parent and child each a colour: {colours:?}\n{screen}"
    );
    let (plain, _) = start_on_a_terminal(&lab, &format!("{sync} --loops 1 --trace"));
    let plain = plain.finish(); // the harness sets NO_COLOR
    assert!(!plain.stdout().contains('\x1b'), "{plain}");
}

/// The numbers of a process's open descriptors (`/proc/PID/fd`).
fn descriptors(pid: nix::unistd::Pid) -> Vec<i32> {
    let mut fds: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort();
    fds
}

#[test]
fn the_lecture_s_descriptors_get_the_c_numbers_and_the_step_page_its_own_name() {
    let lab = Lab::new();
    let server = Stepped::start_with(&lab, "fifos", &["--step-at", "read", "--count", "1"]);
    wait_until(".fifo", || lab.dir().join(".fifo").exists());
    let client = lab.start("fifoc", &[] as &[&str]);
    let (pid, call) = server.prompt(1); // about to read (and wait for) the request
    assert!(call.starts_with("read(3, "), "{call}");
    // 3 and 4 are the FIFO's two ends, as in C; nothing of the suite's own (the terminal,
    // the signal self-pipe) sits among the low numbers. (The harness's terminal may pass on a
    // descriptor or two of its own, such as /dev/null.)
    let link = |fd: i32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
    for fd in [3, 4] {
        assert!(
            link(fd).to_string_lossy().ends_with("/.fifo"),
            "{fd}: {:?}",
            link(fd)
        );
    }
    for fd in descriptors(pid)
        .into_iter()
        .filter(|&fd| (5..100).contains(&fd))
    {
        let target = link(fd).to_string_lossy().into_owned();
        let ours = ["/dev/tty", "/dev/pts", "pipe:", "memfd:", ".fifo"];
        assert!(!ours.iter().any(|o| target.contains(o)), "{fd} -> {target}");
    }
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(maps.contains("/memfd:ipclab-step"), "{maps}");
    assert!(!maps.contains("/dev/zero"), "{maps}");
    server.run_on();
    let (run, _) = server.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    client.finish().assert_success();
    assert!(!Path::new(&lab.dir().join(".fifo")).exists());
}

#[test]
fn before_the_closes_pipe_s_parent_and_child_hold_both_ends_at_3_and_4() {
    // What labs.md's exercises 1 and 3 have students look at: the pipe at the C's numbers, the
    // terminal --step reads at 100, and nothing of the suite's own below 100 (mymore's pipe
    // that reports a failed exec is there too).
    for (program, args) in [
        ("pipe", &[][..]),
        ("mymore", &["--pager", "cat", "--", "echo", "hi"][..]),
    ] {
        let lab = Lab::new();
        let stepped = Stepped::start_with(&lab, program, args);
        step_to(&stepped, &["pipe(fd)", "fork()", "close("]);
        let ((first, _), (second, call)) = (stepped.prompt(3), stepped.prompt(4));
        assert!(call.starts_with("close("), "{call}");
        assert_ne!(first, second, "the parent's prompt and the child's");
        for pid in [first, second] {
            let link = |fd: i32| std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
            let (read_end, write_end) = (link(3), link(4));
            assert!(
                read_end.to_string_lossy().starts_with("pipe:["),
                "{program}: {read_end:?}"
            );
            assert_eq!(read_end, write_end, "{program}: one pipe");
            assert_eq!(link(100), Path::new("/dev/tty"));
            // (What the test's own environment passed down, such as a /dev/null, may be there.)
            let pipes_below_100: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))
                .unwrap()
                .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&fd| fd < 100 && link(fd).to_string_lossy().starts_with("pipe:"))
                .collect();
            assert_eq!(pipes_below_100, [3, 4], "{program}");
        }
        stepped.run_on();
        let (run, _) = stepped.finish();
        assert_eq!(run.code(), Some(0), "{program}: {run}");
    }
}

#[test]
fn a_prompt_on_the_terminal_of_an_unfinished_line_starts_a_line_of_its_own() {
    let lab = Lab::new();
    let server = msgq1(&lab);
    let msgq2 = exe("msgq2").unwrap();
    let (run, keys) = start_on_a_terminal(&lab, &format!("{msgq2} --step-at msgrcv"));
    run.wait_for_stdout("next: msgrcv(");
    let screen = run.stdout_so_far().replace('\r', "");
    assert!(
        screen.contains("Sent a request.....\n[msgq2 "),
        "{screen:?}"
    );
    press(&keys, "\n");
    let run = run.finish();
    assert!(run.status.success(), "{run}");
    server.finish().assert_success();
}

#[test]
fn the_sipc_hand_off_is_traced_and_stepped_as_events() {
    let lab = Lab::new();
    let server = lab.start("sipc1", &["--trace"]);
    let client = Stepped::start_with(&lab, "sipc2", &["--step-at", "'*flag'"]);
    let (_, event) = client.prompt(1);
    assert_eq!(event, "*flag = 1");
    // Stopped before the flag: the text is in the segment already, the flag still 0.
    let key = ipclab::sys::ipc::Key::segment(lab.id());
    let shmid = ipclab::sys::shm::shmget(key, 0, 0).unwrap();
    let peek = ipclab::segment::Attached::attach(shmid).unwrap();
    let area = peek.sipc().unwrap();
    let (flag, text) = area.take();
    assert_eq!(flag, 0);
    assert!(text.unwrap().starts_with("This is a request from "));
    drop(peek);
    client.run_on();
    let (run, screen) = client.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        screen.contains("] strcpy(shm + 4, \"This is a request from "),
        "{screen}"
    );
    assert!(screen.contains("] *flag = 1"), "{screen}");
    assert!(screen.contains("] *flag == 0 seen after "), "{screen}");
    let server = server.finish();
    assert_eq!(server.code(), Some(0), "{server}");
    for event in [
        "*flag == 1 seen after ",
        "strcpy(shm + 4, \"This is a reply from ",
        "*flag = 0",
    ] {
        assert!(server.stderr.contains(event), "{event}\n{server}");
    }
}

#[test]
fn an_enter_typed_before_the_prompt_shows_answers_no_prompt() {
    let lab = Lab::new();
    let server = Stepped::start_with(&lab, "sipc1", &["--step-at", "'*flag'"]);
    wait_until("the server's segment", || {
        server.screen().contains("] shmat(")
    });
    // While the server waits for a request, Enter twice: the terminal echoes (and keeps) them.
    let before = server.screen().len();
    server.press_enter();
    server.press_enter();
    wait_until("the echo of both", || {
        server.screen()[before..].matches('\n').count() >= 2
    });
    let client = lab.start("sipc2", &[] as &[&str]);
    let (_, event) = server.prompt(1);
    assert_eq!(event, "*flag = 0");
    // Stopped there, the Enters typed before it notwithstanding: the reply is written, the
    // flag still 1. (The segment is marked for removal already: found by its ID.)
    let screen = server.screen();
    let shmget = screen.lines().find(|l| l.contains("] shmget(")).unwrap();
    let shmid = shmget.rsplit(" = ").next().unwrap().parse().unwrap();
    let peek = ipclab::segment::Attached::attach(ipclab::sys::shm::ShmId(shmid))
        .unwrap_or_else(|e| panic!("the server went on past its prompt: {e:#}\n{screen}"));
    let (flag, text) = peek.sipc().unwrap().take();
    assert_eq!(flag, 1, "{}", server.screen());
    assert!(text.unwrap().starts_with("This is a reply from "));
    drop(peek);
    server.press_enter();
    let (run, screen) = server.finish();
    assert_eq!(run.code(), Some(0), "{run}\n{screen}");
    client.finish().assert_success();
}

#[test]
fn clearing_a_stale_request_is_an_event_that_step_at_stops_before() {
    let lab = Lab::new();
    crate::shm::leave_a_stale_request(&lab);
    let server = Stepped::start_with(&lab, "sipc1", &["--step-at", "'*flag'"]);
    let (_, event) = server.prompt(1); // no client has come: the stale request's
    assert_eq!(event, "*flag = 0");
    let key = ipclab::sys::ipc::Key::segment(lab.id());
    let shmid = ipclab::sys::shm::shmget(key, 0, 0).unwrap();
    let peek = ipclab::segment::Attached::attach(shmid).unwrap();
    assert_eq!(peek.sipc().unwrap().take().0, 1, "not cleared yet");
    server.press_enter();
    wait_until("the warning", || server.screen().contains("stale request"));
    assert_eq!(peek.sipc().unwrap().take().0, 0, "cleared");
    drop(peek);
    let screen = server.screen();
    let cleared = screen.find("] *flag = 0\n").unwrap();
    assert!(cleared < screen.find("stale request").unwrap(), "{screen}");
    let client = lab.start("sipc2", &[] as &[&str]);
    server.prompt(2); // the reply's *flag = 0
    server.run_on();
    let (run, screen) = server.finish();
    assert_eq!(run.code(), Some(0), "{run}\n{screen}");
    client.finish().assert_success();
}

#[test]
fn mipc_s_counter_is_an_event_that_step_at_stops_before() {
    let lab = Lab::new();
    let run = Stepped::start_with(
        &lab,
        "mipc",
        &["--loops", "2", "--step-at", "'(*counter)++'"],
    );
    let (_, event) = run.prompt(1);
    assert_eq!(event, "(*counter)++");
    assert!(!run.screen().contains("counter=0"), "{}", run.screen());
    run.press_enter();
    let (_, event) = run.prompt(2); // the child's turn
    assert_eq!(event, "(*counter)++");
    run.press_enter();
    let (done, screen) = run.finish();
    assert_eq!(done.code(), Some(0), "{done}");
    assert!(
        screen.contains("] (*counter)++ = 0") && screen.contains("] (*counter)++ = 1"),
        "{screen}"
    );
}

#[test]
fn a_prompt_fits_a_pane_narrower_than_80_columns() {
    // Three panes side by side on a projector's screen are 79 or 80 columns wide, or less: a
    // cut prompt's "…" must not wrap onto a line of its own.
    let lab = Lab::new();
    std::fs::write(lab.dir().join("source"), "text").unwrap();
    let dest = "d".repeat(70);
    let mycp3 = exe("mycp3").unwrap();
    let stepped = Stepped::on_terminal(
        &lab,
        "narrow",
        &format!("stty cols 60; exec {mycp3} --step-at linkat source {dest}"),
    );
    let (_, call) = stepped.prompt(1);
    assert!(call.starts_with("linkat("), "{call}");
    let screen = stepped.screen();
    let line = screen.lines().find(|l| l.contains("] next: ")).unwrap();
    assert!(line.chars().count() <= 60, "{line:?}");
    assert!(line.ends_with('…'), "{line:?}");
    stepped.run_on();
    let (run, _) = stepped.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    std::fs::remove_file(lab.dir().join(&dest)).unwrap();
}
