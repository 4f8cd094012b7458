//! ipcwatch beside the pairs, at each step a class would stop at: what it shows is what the
//! kernel says, and looking changes nothing.

use ipclab::sys::ipc::Key;
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;

use crate::harness::{exe, step_to, wait_until, Lab, Stepped};

/// One snapshot (`--once`) of the lab, every line checked to fit 80 columns.
fn look(lab: &Lab) -> Vec<String> {
    let run = lab.run("ipcwatch", &["--once"]);
    run.assert_success();
    let lines = run.lines();
    for line in &lines {
        assert!(
            line.chars().count() <= 80,
            "wider than 80 columns: {line:?}\n{run}"
        );
    }
    assert!(
        lines[0].starts_with(&format!("ipcwatch: lab {} (", lab.id())),
        "{run}"
    );
    lines
}

/// Asserts that `lines` has one starting with `start`.
fn has(lines: &[String], start: &str) {
    assert!(
        lines.iter().any(|line| line.starts_with(start)),
        "no line starts with {start:?}:\n{}",
        lines.join("\n")
    );
}

/// Asserts that `lines` has no line containing `text`.
fn lacks(lines: &[String], text: &str) {
    assert!(
        !lines.iter().any(|line| line.contains(text)),
        "a line has {text:?}:\n{}",
        lines.join("\n")
    );
}

/// Asserts that the lab has nothing (the second line says so).
fn nothing(lines: &[String], lab: &Lab) {
    assert!(
        lines[1].starts_with(&format!("Nothing of lab {}:", lab.id())),
        "{}",
        lines.join("\n")
    );
}

/// The line of the processes' table for `pid` running `program`.
fn process_line(pid: impl std::fmt::Display, program: &str) -> String {
    format!("  {pid:>7}  {program:<15}  ")
}

/// What `/proc/sysvipc/TABLE` says of the object with `key`: its columns by name.
fn sysv(table: &str, key: Key) -> Option<Vec<(String, String)>> {
    let text = std::fs::read_to_string(format!("/proc/sysvipc/{table}")).unwrap();
    let mut lines = text.lines();
    let columns: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    lines
        .map(|line| {
            let values = line.split_whitespace().map(str::to_owned);
            columns
                .iter()
                .map(|c| c.to_string())
                .zip(values)
                .collect::<Vec<_>>()
        })
        .find(|row| row[0].1 == key.raw().to_string())
}

fn column(row: &[(String, String)], name: &str) -> String {
    row.iter().find(|(c, _)| c == name).unwrap().1.clone()
}

#[test]
fn a_queue_is_shown_empty_then_holding_the_request_then_gone() {
    let lab = Lab::new();
    let key = Key::queue(lab.id());
    let server = Stepped::start(&lab, "msgq1");
    let server_pid = step_to(&server, &["msgget(", "msgrcv("]); // made, not yet received
    let seen = look(&lab);
    has(&seen, &format!("Message queue {key}: msqid "));
    has(&seen, "  msg_qnum 0 messages, msg_cbytes 0 bytes");
    has(&seen, "  msg_lspid -");
    has(&seen, &format!("  queue {key}: held by {server_pid} msgq1"));
    has(&seen, &process_line(server_pid, "msgq1"));

    let client = lab.start("msgq2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let seen = look(&lab);
    has(&seen, "  msg_qnum 1 message, msg_cbytes 128 bytes");
    has(&seen, &format!("  msg_lspid {} msgq2 at ", client.pid()));
    has(&seen, "  msg_lrpid -");
    has(&seen, &process_line(client.pid(), "msgq2"));
    // The client has the lock file open too, to watch it: the lock is the server's alone.
    let held = format!("  queue {key}: held by {server_pid} msgq1");
    assert!(
        seen.contains(&held),
        "no line {held:?}:\n{}",
        seen.join("\n")
    );

    server.run_on();
    client.finish().assert_success();
    assert_eq!(server.finish().0.code(), Some(0));
    nothing(&look(&lab), &lab);
}

#[test]
fn a_segment_is_shown_with_nattch_flag_and_text_at_each_step_of_the_pair() {
    let lab = Lab::new();
    let key = Key::segment(lab.id());
    let server = Stepped::start(&lab, "sipc1");
    let server_pid = step_to(&server, &["shmget(", "shmat("]); // made, not yet attached
    let seen = look(&lab);
    has(&seen, &format!("Shared memory {key}: shmid "));
    has(&seen, "  shm_nattch 0");
    has(
        &seen,
        "  bytes not shown: nobody has it attached (ipcwatch never attaches)",
    );
    has(
        &seen,
        &format!("  segment {key}: held by {server_pid} sipc1"),
    );

    server.press_enter(); // shmat, then it waits for a request
    wait_until("sipc1 attached", || {
        sysv("shm", key).is_some_and(|row| column(&row, "nattch") == "1")
    });
    let seen = look(&lab);
    has(&seen, &format!("  shm_nattch 1: {server_pid} sipc1"));
    has(&seen, "  flag 0 (empty: no request waiting)");
    has(&seen, "  text \"\"");

    let client = lab.start("sipc2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let (_, call) = server.prompt(3);
    assert!(call.contains("IPC_STAT"), "{call}"); // the server has seen the request
    let seen = look(&lab);
    let both = [
        format!("  shm_nattch 2: {server_pid} sipc1, {} sipc2", client.pid()),
        format!("  shm_nattch 2: {} sipc2, {server_pid} sipc1", client.pid()),
    ];
    assert!(
        seen.iter().any(|line| both.contains(line)),
        "{}",
        seen.join("\n")
    );
    has(&seen, "  flag 1 (a request waiting for the server)");
    has(
        &seen,
        &format!("  text \"This is a request from {}.\"", client.pid()),
    );

    server.press_enter(); // IPC_STAT
    let (_, call) = server.prompt(4);
    assert!(call.contains("IPC_RMID"), "{call}");
    server.press_enter(); // IPC_RMID
    let (_, event) = server.prompt(5);
    assert!(event.starts_with("strcpy(shm + 4, "), "{event}");
    server.press_enter(); // the reply's text
    let (_, event) = server.prompt(6);
    assert_eq!(event, "*flag = 0");
    server.press_enter(); // the reply is the client's
    client.finish().assert_success(); // it has detached
    let (_, call) = server.prompt(7);
    assert!(call.starts_with("shmdt("), "{call}");
    let seen = look(&lab);
    has(&seen, &format!("Shared memory {key} (dest): shmid "));
    has(&seen, "  marked for removal (IPC_RMID)");
    has(&seen, &format!("  shm_nattch 1: {server_pid} sipc1"));
    has(&seen, "  flag 0 (empty: no request waiting)");
    has(
        &seen,
        &format!("  text \"This is a reply from {server_pid}.\""),
    );

    server.run_on();
    assert_eq!(server.finish().0.code(), Some(0));
    nothing(&look(&lab), &lab);
}

#[test]
fn looking_changes_neither_nattch_nor_shm_lpid_nor_the_segments_times() {
    let lab = Lab::new();
    let key = Key::segment(lab.id());
    let server = lab.start("sipc1", &[] as &[&str]);
    wait_until("sipc1 attached", || {
        sysv("shm", key).is_some_and(|row| column(&row, "nattch") == "1")
    });
    // What a student watches (the memory's residence, rss and swap, is the kernel's business).
    let shown = |row: Vec<(String, String)>| -> Vec<(String, String)> {
        row.into_iter()
            .filter(|(column, _)| column != "rss" && column != "swap")
            .collect()
    };
    let before = shown(sysv("shm", key).unwrap());
    // Looking many times (with stdout a pipe, --interval prints a snapshot each time)…
    let watcher = lab.start("ipcwatch", &["--interval", "0.01"]);
    wait_until("ten snapshots that read the flag", || {
        watcher.stdout_so_far().matches("  flag 0 (").count() >= 10
    });
    assert_eq!(
        shown(sysv("shm", key).unwrap()),
        before,
        "while ipcwatch runs"
    );
    watcher.signal(Signal::SIGINT);
    let watched = watcher.finish();
    assert_eq!(watched.code(), Some(0), "{watched}");
    has(&look(&lab), "  flag 0 (empty: no request waiting)"); // one look more
    assert_eq!(shown(sysv("shm", key).unwrap()), before, "after ipcwatch");
    // … and sipc1, which counts the processes attached, still serves.
    lab.run("sipc2", &[] as &[&str]).assert_success();
    server.finish().assert_success();
}

#[test]
fn a_fifo_pair_shows_who_holds_each_fifo_open_and_locked() {
    let lab = Lab::new();
    let server = lab.start("fifos", &[] as &[&str]);
    wait_until("the server's .fifo", || lab.dir().join(".fifo").exists());
    let client = Stepped::start(&lab, "fifoc");
    let client_pid = step_to(&client, &["mkfifo(", "open(", "open(", "write("]);
    let (server_pid, client_fifo) = (server.pid(), format!(".fifo{client_pid}"));
    let seen = look(&lab);
    has(&seen, "FIFOs in .");
    has(
        &seen,
        &format!("  .fifo: locked (flock) by {server_pid} fifos"),
    );
    has(
        &seen,
        &format!("    open by {server_pid} fifos reading+writing, {client_pid} fifoc writing"),
    );
    has(
        &seen,
        &format!("  {client_fifo}: locked (flock) by {client_pid} fifoc"),
    );
    has(&seen, &format!("    open by {client_pid} fifoc reading"));
    has(&seen, &process_line(server_pid, "fifos"));
    has(&seen, &process_line(client_pid, "fifoc"));

    client.run_on();
    assert_eq!(client.finish().0.code(), Some(0));
    lacks(&look(&lab), &client_fifo);
    server.signal(Signal::SIGINT);
    assert_eq!(server.finish().code(), Some(0));
    nothing(&look(&lab), &lab);
}

#[test]
fn names_that_would_drive_the_terminal_are_escaped_and_cut_to_80_columns() {
    let lab = Lab::new();
    let fifo = format!(".fifo\x1b[2J{}", "\u{4e2d}".repeat(60));
    nix::unistd::mkfifo(&lab.dir().join(&fifo), Mode::from_bits_truncate(0o600)).unwrap();
    // A process whose name clears the screen holds it open.
    let holder = lab.start(
        "perl",
        &[
            "-e",
            r#"$| = 1; $0 = "\e[2Jevil"; open(F, "+<", $ARGV[0]) or die; print "open\n"; sleep 60"#,
            &fifo,
        ],
    );
    holder.wait_for_stdout("open");
    let seen = look(&lab);
    has(&seen, "  .fifo\\33[2J\u{4e2d}\u{4e2d}");
    has(
        &seen,
        &format!("    open by {} \\33[2Jevil reading+writing", holder.pid()),
    );
    has(&seen, &process_line(holder.pid(), "\\33[2Jevil"));
    lacks(&seen, "\x1b");
    drop(holder);
    std::fs::remove_file(lab.dir().join(&fifo)).unwrap();
}

/// ipcwatch on a terminal (`script`) until `key` is typed: it draws, draws again with a change
/// in bold, and gives the terminal back as it found it. Returns the terminal's bytes.
fn on_terminal_until(key: &[u8]) -> String {
    let lab = Lab::new();
    let command = format!(
        "trap : INT; stty -g > before; {} --interval 0.05; echo \"ipcwatch ended: $?\"; \
         stty -g > after",
        exe("ipcwatch").unwrap()
    );
    let terminal = Stepped::on_terminal(&lab, "ipcwatch", &command);
    wait_until("the first screen", || {
        terminal.screen().contains("Nothing of lab")
    });
    let fifo = lab.dir().join(".fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    wait_until("the new FIFO, in bold", || {
        terminal.screen().contains("\x1b[1mFIFOs in .\x1b[m\x1b[K")
    });
    std::fs::remove_file(&fifo).unwrap();
    wait_until("the screen without it", || {
        terminal
            .screen()
            .rsplit("\x1b[H")
            .next()
            .unwrap()
            .contains("Nothing of lab")
    });
    nix::unistd::write(&terminal.keys, key).unwrap();
    let (run, screen) = terminal.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(screen.contains("ipcwatch ended: 0"), "{screen}");
    let setting = |name| std::fs::read_to_string(lab.dir().join(name)).unwrap();
    assert_eq!(
        setting("before"),
        setting("after"),
        "stty settings not restored"
    );
    assert_eq!(
        screen.matches("\x1b[2J").count(),
        1,
        "cleared once, then drawn over"
    );
    assert!(screen.matches("\x1b[H").count() >= 3, "redrawn in place");
    screen
}

#[test]
fn on_a_terminal_it_redraws_in_place_and_q_quits_leaving_the_terminal_as_it_was() {
    let screen = on_terminal_until(b"q");
    assert!(screen.contains("q: quit"), "{screen}");
}

#[test]
fn on_a_terminal_ctrl_c_quits_leaving_the_terminal_as_it_was() {
    on_terminal_until(b"\x03");
}

/// `make watch` on a terminal, ended with Ctrl-C: the key quits the view, and make ends with it,
/// status 0 and not a word. (A SIGINT would reach make as well, in the terminal's foreground
/// process group; GNU make 4.3 then fails about one time in ten with `wait: No child
/// processes`, whatever its child does.)
#[test]
fn make_watch_ends_with_ctrl_c_and_make_with_it() {
    let lab = Lab::new();
    let quoted = |word: &str| format!("'{}'", word.replace('\'', "'\\''"));
    let make: Vec<String> = crate::make_args(&["watch"])
        .iter()
        .map(|arg| quoted(arg))
        .collect();
    let command = format!(
        "trap : INT; unset {}; make {}; echo \"make ended: $?\"",
        crate::MAKE_ENVIRONMENT.join(" "),
        make.join(" ")
    );
    let terminal = Stepped::on_terminal(&lab, "make", &command);
    wait_until("the first screen", || {
        terminal.screen().contains("Nothing of lab")
    });
    nix::unistd::write(&terminal.keys, b"\x03").unwrap();
    let (run, screen) = terminal.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(screen.contains("make ended: 0"), "{screen}");
    assert!(!screen.contains("make: "), "make complained:\n{screen}");
}

#[test]
fn without_a_terminal_each_snapshot_marks_what_changed_with_a_star() {
    let lab = Lab::new();
    let watcher = lab.start("ipcwatch", &["--interval", "0.02"]);
    watcher.wait_for_stdout("Nothing of lab");
    let so_far = watcher.stdout_so_far();
    assert!(!so_far.contains("\n* "), "nothing changed yet:\n{so_far}");
    let fifo = lab.dir().join(".fifo");
    nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
    watcher.wait_for_stdout("* FIFOs in .\n*   .fifo: no lock (no owner of this suite)\n");
    std::fs::remove_file(&fifo).unwrap();
    watcher.wait_for_stdout("* Nothing of lab");
    watcher.signal(Signal::SIGTERM);
    let watched = watcher.finish();
    assert_eq!(watched.code(), Some(0), "{watched}");
    for line in watched.lines() {
        assert!(line.chars().count() <= 80, "{line:?}");
    }
}

#[test]
fn objects_and_processes_that_vanish_between_two_looks_are_normal() {
    let lab = Lab::new();
    let watcher = lab.start("ipcwatch", &["--interval", "0.001"]);
    for round in 0..5 {
        let server = lab.start("sipc1", &[] as &[&str]);
        lab.run("sipc2", &[] as &[&str]).assert_success();
        server.finish().assert_success();
        let server = lab.start("msgq1", &[] as &[&str]);
        wait_until("the queue", || sysv("msg", Key::queue(lab.id())).is_some());
        if round == 0 {
            watcher.wait_for_stdout("Message queue"); // it looks while the pairs come and go
        }
        lab.run("msgq2", &[] as &[&str]).assert_success();
        server.finish().assert_success();
    }
    watcher.signal(Signal::SIGINT);
    let watched = watcher.finish();
    assert_eq!(
        (watched.code(), watched.stderr.as_str()),
        (Some(0), ""),
        "{watched}"
    );
}

#[test]
fn bad_options_are_usage_errors_and_a_failing_stdout_or_directory_is_said() {
    let lab = Lab::new();
    for args in [
        &["--id", "0x1000"][..],
        &["--interval", "0"],
        &["--once", "--interval", "1"],
        &["--bogus"],
        &["--once", "--trace"], // it makes no lecture call: no classroom mode
    ] {
        let run = lab.run("ipcwatch", args);
        assert_eq!(run.code(), Some(2), "{args:?}\n{run}");
    }
    // Nor do the classroom variables exported in the class's shell mean anything to it.
    let mut stepped = lab.command("ipcwatch", &["--once"]);
    stepped
        .env("IPCLAB_STEP", "1")
        .env("IPCLAB_TRACE_TO", "/no/such/dir/x");
    crate::harness::Running::spawn(stepped)
        .finish()
        .assert_success();
    let watch = exe("ipcwatch").unwrap();
    let full = lab.run("sh", &["-c", &format!("{watch} --once > /dev/full")]);
    full.assert_failure(
        1,
        "ipcwatch: writing to stdout: ENOSPC: No space left on device",
    );
    let early = lab.run(
        "bash",
        &[
            "-c",
            &format!("{watch} --interval 0.01 | head -c1 >/dev/null; echo ${{PIPESTATUS[0]}}"),
        ],
    );
    assert_eq!(
        (early.stdout(), early.stderr.as_str()),
        ("0\n".into(), ""),
        "{early}"
    );
    let missing = lab.run("ipcwatch", &["--dir", "/nonexistent/\x1b[2J"]);
    missing.assert_success();
    has(&missing.lines(), "FIFOs in /nonexistent/\\33[2J: not shown");
    has(
        &missing.lines(),
        "  opendir(/nonexistent/\\33[2J): ENOENT: No such file or directory",
    );
    lacks(&missing.lines(), "\x1b");
}

#[test]
fn another_users_objects_are_listed_and_never_break_it() {
    if !nix::unistd::geteuid().is_root() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: another user's objects: not root"
        );
        return;
    }
    let lab = Lab::new();
    let nobody = ["--reuid=65534", "--regid=65534", "--clear-groups"];
    // nobody's queue with our key, which root sees …
    let key = Key::queue(lab.id()).raw().to_string();
    let mut queue = lab.command("setpriv", &nobody);
    queue.args([
        "perl",
        "-MIPC::SysV=IPC_CREAT",
        "-e",
        "msgget($ARGV[0], IPC_CREAT|0600) or die",
        &key,
    ]);
    let made = crate::harness::Running::spawn(queue).finish();
    made.assert_success();
    let seen = look(&lab);
    assert!(
        seen[1].starts_with("Message queue ") && seen[1].ends_with("mode 600, owner nobody"),
        "{}",
        seen.join("\n")
    );
    // … and root's segment, attached by sipc1, which nobody sees without its bytes.
    let server = lab.start("sipc1", &[] as &[&str]);
    wait_until("sipc1 attached", || {
        sysv("shm", Key::segment(lab.id())).is_some_and(|row| column(&row, "nattch") == "1")
    });
    let mut watch = lab.command("setpriv", &nobody);
    watch.args([exe("ipcwatch").unwrap(), "--once", "--dir", "/"]);
    let seen = crate::harness::Running::spawn(watch).finish();
    seen.assert_success();
    let lines = seen.lines();
    has(&lines, "  shm_nattch 1");
    has(
        &lines,
        "  bytes not shown: attached only by processes /proc does not show",
    );
    has(&lines, "Message queue ");
    lab.run("sipc2", &[] as &[&str]).assert_success();
    server.finish().assert_success();
    let removed = lab.run("ipcrm", &["-Q", &Key::queue(lab.id()).to_string()]);
    removed.assert_success();
}

#[test]
fn sent_to_the_background_it_draws_nothing_until_brought_back() {
    // A shell with job control on the terminal: Ctrl-Z and `bg` put the live view in the
    // background, where it must neither draw over the shell nor read its keys; `fg` brings it
    // back, redrawn.
    let lab = Lab::new();
    let terminal = Stepped::on_terminal(&lab, "shell", "bash --norc --noprofile -i");
    let type_in = |keys: &[u8]| nix::unistd::write(&terminal.keys, keys).unwrap();
    let watch = exe("ipcwatch").unwrap();
    type_in(format!("{watch} --interval 0.01\n").as_bytes());
    wait_until("the first screen", || {
        terminal.screen().contains("Nothing of lab")
    });
    type_in(b"\x1a");
    wait_until("the job stopped", || terminal.screen().contains("Stopped"));
    type_in(b"bg; echo back-$((6 * 7))\n");
    wait_until("the shell's line", || terminal.screen().contains("back-42"));
    let shown = terminal.screen().len();
    type_in(b"echo still-$((6 * 7))\n");
    wait_until("the next line", || terminal.screen().contains("still-42"));
    let after = terminal.screen();
    assert!(
        !after[shown..].contains("Nothing of lab"),
        "drew in the background:\n{after}"
    );
    type_in(b"fg\n");
    wait_until("the screen again", || {
        terminal.screen()[shown..].contains("Nothing of lab")
    });
    type_in(b"q");
    wait_until("the shell's prompt again", || {
        let screen = terminal.screen();
        screen
            .rsplit("Nothing of lab")
            .next()
            .unwrap()
            .contains("bash")
    });
    type_in(b"echo ended-$?; exit\n");
    let (run, screen) = terminal.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(screen.contains("ended-0"), "{screen}");
}
