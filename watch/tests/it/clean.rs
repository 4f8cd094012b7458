//! `make ipcclean`: everything a killed program of a lab can leave is removed, and nothing that
//! a live process uses — that is left, naming who uses it.

use std::os::unix::fs::PermissionsExt;

use ipclab::sys::ipc::Key;
use ipclab::sys::msg;

use crate::harness::{as_nobody, step_to, sysv_keys, wait_until, Finished, Lab, Running, Stepped};

/// Makes what a killed program of the lab leaves, with Perl's System V bindings (its process
/// ends at once: nobody alive uses them): a queue with one message, a segment, a semaphore set.
fn leftovers(lab: &Lab) {
    let script = format!(
        "use IPC::SysV qw(IPC_CREAT); my $q = msgget({q}, IPC_CREAT|0600) // die $!; \
         msgsnd($q, pack('l! a8', 1, 'left'), 0) or die $!; \
         defined(shmget({s}, 1024, IPC_CREAT|0600)) or die $!; \
         defined(semget({s}, 4, IPC_CREAT|0600)) or die $!;",
        q = Key::queue(lab.id()).raw(),
        s = Key::segment(lab.id()).raw()
    );
    lab.run("perl", &["-e", &script]).assert_success();
}

#[test]
fn every_kind_of_leftover_is_removed_and_said() {
    let lab = Lab::new();
    leftovers(&lab);
    for name in [".fifo", ".fifo99999999"] {
        nix::unistd::mkfifo(&lab.dir().join(name), nix::sys::stat::Mode::S_IRWXU).unwrap();
    }
    // A killed ipcbench's FIFO directory in the lab's TMPDIR, and a killed msgq1's lock file
    // in a lock directory of the lab's own (IPCLAB_LOCK_DIR).
    let tmp = lab.dir().join("tmp");
    let uid = nix::unistd::geteuid();
    let bench_dir = tmp.join(format!("ipcbench-{uid}-{}-abc123", lab.id()));
    std::fs::create_dir_all(&bench_dir).unwrap();
    nix::unistd::mkfifo(&bench_dir.join("ping"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let lock = tmp.join(format!("ipclab-{uid}-queue-{}.lock", Key::queue(lab.id())));
    std::fs::write(&lock, "4242 msgq1 99\n").unwrap();

    let mut command = lab.command("ipcclean", &["--id", &format!("{:#x}", lab.id())]);
    command.env("TMPDIR", &tmp).env("IPCLAB_LOCK_DIR", &tmp);
    let run = Running::spawn(command).finish();
    run.assert_success();
    let out = run.stdout();
    for removed in [
        format!("removed message queue {} (msqid ", Key::queue(lab.id())),
        format!(
            "removed shared memory segment {} (shmid ",
            Key::segment(lab.id())
        ),
        format!("removed semaphore set {} (semid ", Key::segment(lab.id())),
        "removed ./.fifo\n".into(),
        "removed ./.fifo99999999\n".into(),
        format!(
            "removed the queue {}'s lock file {}",
            Key::queue(lab.id()),
            lock.display()
        ),
        format!("removed ipcbench's FIFO directory {}", bench_dir.display()),
    ] {
        assert!(out.contains(&removed), "{removed:?} not said\n{run}");
    }
    assert!(lab.leftovers().is_empty());
    assert!(!sysv_keys("sem").contains(&i64::from(Key::segment(lab.id()).raw())));
    assert!(!lock.exists() && !bench_dir.exists());

    let again = lab.run("ipcclean", &[] as &[&str]);
    again.assert_success();
    assert_eq!(
        again.lines(),
        [format!("nothing of lab {} is left (dir .)", lab.id())]
    );
}

#[test]
fn an_object_a_live_process_uses_is_left_naming_it() {
    let lab = Lab::new();
    // Started from another terminal, whose TMPDIR differs: its lock is where ipcclean looks.
    let server_tmp = lab.dir().join("server-tmp");
    std::fs::create_dir(&server_tmp).unwrap();
    let mut msgq1 = lab.command("msgq1", &[] as &[&str]);
    msgq1.env("TMPDIR", &server_tmp);
    let server = Running::spawn(msgq1);
    let key = Key::queue(lab.id());
    wait_until("msgq1's queue", || msg::msgget(key, 0).is_ok());
    let fifos = lab.start("fifos", &[] as &[&str]);
    wait_until(".fifo", || lab.dir().join(".fifo").exists());

    let run = lab.run("ipcclean", &[] as &[&str]);
    run.assert_failure(1, &format!("ipcclean: left message queue {key} (msqid "));
    run.assert_failure(
        1,
        &format!("its server holds its lock: pid {} (msgq1)", server.pid()),
    );
    run.assert_failure(
        1,
        &format!(
            "ipcclean: left ./.fifo: open in pid {} (fifos)\n", // once: read and written
            fifos.pid()
        ),
    );
    assert!(
        msg::msgget(key, 0).is_ok(),
        "the live server's queue was removed\n{run}"
    );
    assert!(lab.dir().join(".fifo").exists());

    // Its servers still work.
    lab.run("msgq2", &[] as &[&str]).assert_success();
    server.finish().assert_success();
    lab.run("fifoc", &[] as &[&str]).assert_success();
    fifos.signal(nix::sys::signal::Signal::SIGTERM);
    fifos.finish().assert_success();
}

#[test]
fn a_queue_a_c_server_waits_on_is_left_naming_it_once() {
    let lab = Lab::new();
    // A server of another program: it takes no lock of ours, and waits in msgrcv. Having sent
    // and taken a message of its own first, it is the queue's last sender, its last receiver
    // and its waiter: one process, named once.
    let script = format!(
        "use IPC::SysV qw(IPC_CREAT); $| = 1; my $q = msgget({}, IPC_CREAT|0600) // die $!; \
         my $m; msgsnd($q, pack('l! a*', 1, 'mine'), 0) or die $!; \
         msgrcv($q, $m, 128, 0, 0) or die $!; \
         print \"waiting\\n\"; msgrcv($q, $m, 128, 0, 0); msgctl($q, 0, 0);",
        Key::queue(lab.id()).raw()
    );
    let c_server = lab.start("perl", &["-e", &script]);
    c_server.wait_for_stdout("waiting");
    wait_until("the server in msgrcv", || {
        std::fs::read_to_string(format!("/proc/{}/syscall", c_server.pid()))
            .is_ok_and(|s| s.starts_with(&libc::SYS_msgrcv.to_string()))
    });
    let run = lab.run("ipcclean", &[] as &[&str]);
    run.assert_failure(1, &format!("in use by pid {} (perl)\n", c_server.pid()));
    let queue = msg::msgget(Key::queue(lab.id()), 0).unwrap();
    msg::ipc_rmid(queue).unwrap(); // the C server ends on EIDRM
    let _ = c_server.finish();
}

#[test]
fn a_semaphore_set_a_live_process_waits_on_is_left_and_removed_once_it_has_gone() {
    // Any program may use the key of ipcbench's set: a process blocked in semop on it (seen in
    // /proc, and as semncnt by the kernel) keeps it.
    let lab = Lab::new();
    let script = format!(
        "use IPC::SysV qw(IPC_CREAT); $| = 1; my $s = semget({}, 1, IPC_CREAT|0600) // die $!; \
         print \"waiting\\n\"; semop($s, pack('s!3', 0, -1, 0)); print \"woken: $!\\n\";",
        Key::segment(lab.id()).raw()
    );
    let waiter = lab.start("perl", &["-e", &script]);
    waiter.wait_for_stdout("waiting");
    wait_until("the waiter in semop", || {
        std::fs::read_to_string(format!("/proc/{}/syscall", waiter.pid())).is_ok_and(|s| {
            [libc::SYS_semop, libc::SYS_semtimedop]
                .iter()
                .any(|call| s.starts_with(&format!("{call} ")))
        })
    });
    let run = lab.run("ipcclean", &[] as &[&str]);
    run.assert_failure(1, &format!("in use by pid {} (perl)\n", waiter.pid()));
    assert!(sysv_keys("sem").contains(&i64::from(Key::segment(lab.id()).raw())));
    waiter.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = waiter.finish();
    let run = lab.run("ipcclean", &[] as &[&str]);
    run.assert_success();
    assert!(run.stdout().contains("removed semaphore set"), "{run}");
}

/// msgq2 waiting for its reply has the server's lock file open too, read-only (it watches
/// whether the server lives): only the server, which holds the lock, is named.
#[test]
fn a_client_watching_the_servers_lock_is_not_named_as_holding_it() {
    let lab = Lab::new();
    let key = Key::queue(lab.id());
    let server = Stepped::start(&lab, "msgq1");
    let server_pid = step_to(&server, &["msgget(", "msgrcv("]); // the queue made and recorded
    let client = lab.start("msgq2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request....."); // its watch opened before it sent

    let run = lab.run("ipcclean", &[] as &[&str]);
    let held = format!("pid {server_pid} (msgq1)\n");
    run.assert_failure(1, &format!("ipcclean: left message queue {key} (msqid "));
    run.assert_failure(1, &format!("its server holds its lock: {held}"));
    run.assert_failure(
        1,
        &format!(
            "ipcclean: left the queue {key}'s lock file {}: held by {held}",
            ipclab::peer::lock_path(ipclab::queue::MSGQ1, key).display()
        ),
    );
    assert!(!run.stderr.contains("(msgq2)"), "the client named\n{run}");

    server.run_on();
    client.finish().assert_success();
    assert_eq!(server.finish().0.code(), Some(0));
}

/// A `.fifo*` of another user is not ours to remove, whoever runs the cleaner: not root's live
/// C server's FIFO (whose descriptors `/proc` does not show to another user), not nobody's to
/// root — said with the words of another user's System V object.
#[test]
fn another_users_fifos_are_left_whoever_cleans() {
    let lab = Lab::new();
    let Some(nobody_cleans) = as_nobody(&lab, "ipcclean", &[] as &[&str]) else {
        return;
    };
    // A directory everyone may write in, without the sticky bit: nothing but the cleaner's own
    // judgement keeps a FIFO of one user from the other.
    std::fs::set_permissions(lab.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let (roots, nobodys) = (lab.dir().join(".fifo"), lab.dir().join(".fifo123"));
    for fifo in [&roots, &nobodys] {
        nix::unistd::mkfifo(fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    }
    let nobody = Some(nix::unistd::Uid::from_raw(65534));
    nix::unistd::chown(&nobodys, nobody, None).unwrap();
    let c_server = lab.start(
        "perl",
        &[
            "-e",
            "open(my $f, '+<', '.fifo') or die $!; $| = 1; print \"open\\n\"; sleep;",
        ],
    );
    c_server.wait_for_stdout("open");

    // A lock file with root's name is nobody's too, when nobody made it.
    let locks = lab.dir().join("locks");
    std::fs::create_dir(&locks).unwrap();
    let key = Key::queue(lab.id());
    let lock = locks.join(format!("ipclab-0-queue-{key}.lock"));
    std::fs::write(&lock, "4242 msgq1 99\n").unwrap();
    nix::unistd::chown(&lock, nobody, None).unwrap();

    let mut root_cleans = lab.command("ipcclean", &[] as &[&str]);
    root_cleans.env("IPCLAB_LOCK_DIR", &locks);
    let root_cleans = Running::spawn(root_cleans).finish();
    root_cleans.assert_failure(1, "ipcclean: left ./.fifo123: it belongs to uid 65534\n");
    root_cleans.assert_failure(
        1,
        &format!(
            "ipcclean: left the queue {key}'s lock file {}: it belongs to uid 65534\n",
            lock.display()
        ),
    );
    assert!(nobodys.exists(), "nobody's FIFO was removed\n{root_cleans}");
    assert!(
        lock.exists(),
        "nobody's lock file was removed\n{root_cleans}"
    );

    let nobody_cleans = Running::spawn(nobody_cleans).finish();
    nobody_cleans.assert_failure(1, "ipcclean: left ./.fifo: it belongs to uid 0\n");
    assert!(
        roots.exists(),
        "root's live FIFO was removed\n{nobody_cleans}"
    );
    assert!(
        nobody_cleans.stdout().contains("removed ./.fifo123\n"),
        "its own leftover is nobody's to remove\n{nobody_cleans}"
    );

    c_server.signal(nix::sys::signal::Signal::SIGTERM);
    let _ = c_server.finish();
    std::fs::remove_file(&roots).unwrap();
}

/// Two cleaners at once over one leftover FIFO directory of ipcbench: one removes it, the other
/// finds it gone — neither fails, and neither takes the other for a running ipcbench.
#[test]
fn two_cleaners_at_once_remove_ipcbenchs_directory_and_name_no_owner() {
    let lab = Lab::new();
    let tmp = lab.dir().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let uid = nix::unistd::geteuid();
    for round in 0..30 {
        let bench_dir = tmp.join(format!("ipcbench-{uid}-{}-race{round:02}", lab.id()));
        std::fs::create_dir(&bench_dir).unwrap();
        // ping and pong, and more: the longer a removal lasts, the likelier the two meet.
        for name in ["ping", "pong"]
            .map(String::from)
            .into_iter()
            .chain((0..200).map(|n| format!("fifo{n}")))
        {
            nix::unistd::mkfifo(&bench_dir.join(name), nix::sys::stat::Mode::S_IRWXU).unwrap();
        }
        let cleaners: Vec<Running> = (0..2)
            .map(|_| {
                let mut command = lab.command("ipcclean", &[] as &[&str]);
                command.env("TMPDIR", &tmp).env("IPCLAB_LOCK_DIR", &tmp);
                Running::spawn(command)
            })
            .collect();
        let what = format!("ipcbench's FIFO directory {}", bench_dir.display());
        let said = [
            format!("removed {what}\n"),
            format!("{what} had gone meanwhile\n"),
            format!("nothing of lab {} is left", lab.id()),
        ];
        for run in cleaners.into_iter().map(Running::finish) {
            let quiet = run.code() == Some(0) && run.stderr.is_empty();
            assert!(quiet, "round {round}: not a success\n{run}");
            let out = run.stdout();
            assert!(said.iter().any(|s| out.contains(s)), "round {round}\n{run}");
        }
        assert!(!bench_dir.exists(), "round {round}: {what} is left");
    }
}

#[test]
fn check_names_what_is_there_and_removes_nothing() {
    let lab = Lab::new();
    let clean = lab.run("ipcclean", &["--check"]);
    clean.assert_success();
    assert!(clean.stdout.is_empty(), "{clean}");
    let fifo = lab.dir().join(".fifo99");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
    let run = lab.run("ipcclean", &["--check"]);
    run.assert_failure(1, "ipcclean: left behind: ./.fifo99");
    assert!(fifo.exists(), "--check must not remove anything\n{run}");
    std::fs::remove_file(fifo).unwrap();
}

#[test]
fn the_keys_come_from_the_one_lab_id_parser() {
    let lab = Lab::new();
    let keys = lab.run("ipcclean", &["--keys", "--id", "010"]);
    assert_eq!(
        keys.stdout(),
        "0x800a 0x900a\n",
        "010 is ten, not octal\n{keys}"
    );
    for bad in ["4096", "0x1000", "five", "0x", "-1", "+1", " 1"] {
        let run = lab.run("ipcclean", &["--keys", "--id", bad]);
        assert_eq!(run.code(), Some(2), "{run}");
    }
    let mut empty = lab.command("ipcclean", &["--keys"]);
    empty.env("IPCLAB_ID", ""); // exported empty: unset
    let run = Running::spawn(empty).finish();
    assert_eq!(run.stdout(), "0x8000 0x9000\n", "{run}");
}

/// `make ipcclean`, with `ID=id` if given, in the lab's directory (see `crate::make_args`). The
/// lab's own ID is in the environment, as IPCLAB_ID (`Lab::command`).
fn make_ipcclean(lab: &Lab, id: Option<&str>) -> Finished {
    let id = id.map(|id| format!("ID={id}"));
    let mut args = vec!["ipcclean"];
    args.extend(id.as_deref());
    let mut command = lab.command("make", &crate::make_args(&args));
    for variable in crate::MAKE_ENVIRONMENT {
        command.env_remove(variable);
    }
    Running::spawn(command).finish()
}

#[test]
fn make_ipcclean_takes_an_empty_id_as_none_and_never_runs_an_id() {
    let lab = Lab::new();
    let nothing = format!("nothing of lab {} is left (dir .)", lab.id());
    let hex = format!("{:#x}", lab.id());
    for id in [None, Some(""), Some(hex.as_str())] {
        let run = make_ipcclean(&lab, id);
        run.assert_success();
        assert_eq!(run.lines(), [nothing.as_str()], "ID={id:?}\n{run}");
    }
    // Whatever ID holds reaches ipcclean as it is, to be refused there as a bad lab ID: no
    // shell, and not make either, runs a command in it.
    let injected = lab.dir().join("injected");
    for id in [
        format!("{}'; touch injected; '", lab.id()), // out of the quotes of --id '$(ID)'
        format!("{}; touch injected", lab.id()),
        "`touch injected`".to_owned(),
        "$(shell touch injected)".to_owned(), // make's own expansion
    ] {
        let run = make_ipcclean(&lab, Some(&id));
        run.assert_failure(
            2,
            &format!("IPCLAB_ID={id:?} in the environment is not valid"),
        );
        assert!(!injected.exists(), "ID={id} ran a command\n{run}");
    }
}

#[test]
fn names_are_shown_escaped_and_an_unreadable_directory_spares_the_rest() {
    let lab = Lab::new();
    // Anyone who may write in the directory chooses the names: they must not drive the
    // terminal, nor forge a line of ours.
    let name = ".fifo\x1b[2J\nremoved message queue 0x8000 (msqid 1, 0 message(s))";
    nix::unistd::mkfifo(&lab.dir().join(name), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let run = lab.run("ipcclean", &[] as &[&str]);
    run.assert_success();
    assert_eq!(run.lines().len(), 1, "one line\n{run}");
    assert!(
        run.stdout()
            .contains(r"removed ./.fifo\33[2J\nremoved message queue"),
        "{run}"
    );
    assert!(!run.stdout().contains('\x1b'), "{run}");

    // A --dir that does not exist: the System V leftovers are removed all the same.
    leftovers(&lab);
    let run = lab.run("ipcclean", &["--dir", "no/such/dir"]);
    run.assert_failure(
        1,
        "ipcclean: left any .fifo* in no/such/dir: opendir(no/such/dir): ENOENT",
    );
    assert!(run.stdout().contains("removed message queue"), "{run}");
    assert!(lab.leftovers().is_empty(), "{run}");
    assert!(!sysv_keys("sem").contains(&i64::from(Key::segment(lab.id()).raw())));
}

#[test]
fn a_fifo_a_c_client_is_blocked_opening_is_left() {
    // No server reads .fifo: the C client blocks in open(".fifo", O_WRONLY), holding no
    // descriptor yet. Removed, its FIFO would have no name for a server to serve it by.
    let lab = Lab::new();
    nix::unistd::mkfifo(&lab.dir().join(".fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let client = lab.start("sh", &["-c", "exec 3>.fifo"]);
    wait_until("the client blocked in open", || {
        std::fs::read_to_string(format!("/proc/{}/wchan", client.pid()))
            .is_ok_and(|wchan| wchan == "wait_for_partner")
    });
    let run = lab.run("ipcclean", &[] as &[&str]);
    run.assert_failure(
        1,
        &format!(
            "ipcclean: left ./.fifo: pid {} (sh) wait(s) to open a FIFO",
            client.pid()
        ),
    );
    client.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = client.finish();
    lab.run("ipcclean", &[] as &[&str]).assert_success();
}

#[test]
fn objects_made_but_not_yet_used_by_a_stepping_program_are_left() {
    // A class stops a program between making an object and using it: no attachment, no open
    // descriptor, no lock yet — but the process that made it lives.
    let lab = Lab::new();
    let sipc2 = Stepped::start_with(&lab, "sipc2", &["--step-at", "shmat"]);
    let (client, call) = sipc2.prompt(1);
    assert!(call.starts_with("shmat("), "{call}");
    let run = lab.run("ipcclean", &[] as &[&str]);
    run.assert_failure(
        1,
        &format!("made or last used by pid {client} (sipc2), alive"),
    );
    nix::sys::signal::kill(client, nix::sys::signal::Signal::SIGINT).unwrap();
    assert_eq!(sipc2.finish().0.code(), Some(130));

    let server = lab.start("fifos", &[] as &[&str]);
    wait_until(".fifo", || lab.dir().join(".fifo").exists());
    let fifoc = Stepped::start(&lab, "fifoc");
    let (client, call) = fifoc.prompt(1);
    assert!(call.starts_with("mkfifo("), "{call}");
    fifoc.press_enter();
    fifoc.prompt(2); // its FIFO is made, not yet opened
    let run = lab.run("ipcclean", &[] as &[&str]);
    run.assert_failure(
        1,
        &format!("left ./.fifo{client}: named after pid {client} (fifoc), alive"),
    );
    assert!(lab.dir().join(format!(".fifo{client}")).exists());
    nix::sys::signal::kill(client, nix::sys::signal::Signal::SIGINT).unwrap();
    let _ = fifoc.finish();
    server.signal(nix::sys::signal::Signal::SIGINT);
    let _ = server.finish();
}
