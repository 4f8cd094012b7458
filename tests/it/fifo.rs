//! FIFOs: the `fifos` server and its `fifoc` clients, also against a raw C-shaped peer.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipclab::layout::record::{split_requests, BadRecord, Request, RECORD_LEN};
use nix::errno::Errno;
use nix::fcntl::{open, Flock, FlockArg, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::sys::stat::Mode;
use nix::unistd::mkfifo;
use proptest::prelude::*;

use crate::harness::{exe, fifo_files, wait_until, Lab, Running};

// ---- a C-shaped peer, written with the C struct's offsets -----------------------------------

/// A 160-byte record as the C programs lay it out: name at 0..32, text at 32..160, NUL-padded.
fn c_record(name: &[u8], text: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0u8; 160];
    bytes[..name.len()].copy_from_slice(name);
    bytes[32..32 + text.len()].copy_from_slice(text);
    bytes
}

fn make_fifo(path: &Path) {
    mkfifo(path, Mode::from_bits_truncate(0o600)).unwrap();
}

/// Opens without blocking, and close-on-exec: tests run on threads, and a descriptor without it
/// would leak into the binaries other tests spawn meanwhile (keeping a FIFO's end open there).
fn open_nonblocking(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    open(
        path,
        flags | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Writes raw bytes into the server's `.fifo`, as a (possibly broken) C client would.
fn send_raw(lab: &Lab, bytes: &[u8]) {
    let fifo = open_nonblocking(&lab.dir().join(".fifo"), OFlag::O_WRONLY).unwrap();
    assert_eq!(nix::unistd::write(&fifo, bytes).unwrap(), bytes.len());
}

/// Reads exactly 160 bytes from `fd` (non-blocking) within the deadline.
fn read_record(fd: &OwnedFd) -> Vec<u8> {
    let mut record = Vec::new();
    let mut chunk = [0u8; 160];
    wait_until("a whole record", || {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let _ = nix::poll::poll(&mut fds, PollTimeout::from(100u16));
        match nix::unistd::read(fd, &mut chunk[..160 - record.len()]) {
            Ok(n) => record.extend_from_slice(&chunk[..n]),
            Err(Errno::EAGAIN) => {}
            Err(e) => panic!("read: {e}"),
        }
        record.len() == 160
    });
    record
}

/// The test plays the server: it owns `.fifo` (read end, plus a write end so it never sees EOF).
struct FakeServer {
    reader: OwnedFd,
    _keep_open: OwnedFd,
}

impl FakeServer {
    fn new(lab: &Lab) -> FakeServer {
        let path = lab.dir().join(".fifo");
        make_fifo(&path);
        let reader = open_nonblocking(&path, OFlag::O_RDONLY).unwrap();
        let keep_open = open_nonblocking(&path, OFlag::O_WRONLY).unwrap();
        FakeServer {
            reader,
            _keep_open: keep_open,
        }
    }

    /// Stops being a server: closes both ends and removes `.fifo`.
    fn stop(self, lab: &Lab) {
        drop(self);
        std::fs::remove_file(lab.dir().join(".fifo")).unwrap();
    }
}

/// Starts `fifos` and waits until it serves: `.fifo` appears only once the server reads it.
fn start_server(lab: &Lab, args: &[&str]) -> Running {
    let server = lab.start("fifos", args);
    let fifo = lab
        .dir()
        .join(
            args.windows(2)
                .find(|w| w[0] == "--dir")
                .map_or(".", |w| w[1]),
        )
        .join(".fifo");
    wait_until("the server's .fifo", || fifo.exists());
    server
}

fn reply_line(server: &Running) -> String {
    format!(
        "Sent a request.....Received reply: This is a reply from {}.",
        server.pid()
    )
}

/// Waits until a server reads `lab`'s `.fifo` (a client could open it for writing now).
fn wait_for_a_server(lab: &Lab) {
    wait_until("a server reading .fifo", || {
        open_nonblocking(&lab.dir().join(".fifo"), OFlag::O_WRONLY).is_ok()
    });
}

/// Stops `server` so that `stray` bytes and then the requests of three clients queue up in
/// `.fifo`, lets it go on, and checks that each client gets its reply.
fn answers_the_requests_queued_while_stopped(lab: &Lab, server: &Running, stray: &[u8]) {
    server.signal(Signal::SIGSTOP);
    send_raw(lab, stray);
    let clients: Vec<Running> = (0..3)
        .map(|_| lab.start("fifoc", &["--timeout", "10"]))
        .collect();
    for client in &clients {
        client.wait_for_stdout("Sent a request.....");
    }
    server.signal(Signal::SIGCONT);
    for client in clients {
        let client = client.finish();
        client.assert_success();
        assert_eq!(client.lines(), [reply_line(server)], "{client}");
    }
}

/// A program started behind a gate: a shell that waits until the test opens the gate, then
/// `exec`s the program. The test knows the program's PID (exec keeps it) before the program runs,
/// and can prepare what the program will find, such as a FIFO with that PID in its name.
struct Gated {
    running: Running,
    gate: PathBuf,
}

impl Gated {
    fn start(lab: &Lab, program: &str, args: &[&str]) -> Gated {
        let gate = lab.dir().join("gate");
        make_fifo(&gate);
        let mut shell_args = vec![
            "-c",
            "read -r go < gate && exec \"$0\" \"$@\"",
            exe(program).unwrap(),
        ];
        shell_args.extend(args);
        Gated {
            running: lab.start("sh", &shell_args),
            gate,
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        self.running.pid()
    }

    /// Lets the program run, and removes the gate.
    fn open(self) -> Running {
        let mut writer = None;
        wait_until("the shell at the gate", || {
            writer = open_nonblocking(&self.gate, OFlag::O_WRONLY).ok();
            writer.is_some()
        });
        nix::unistd::write(writer.unwrap(), b"go\n").unwrap();
        std::fs::remove_file(&self.gate).unwrap();
        self.running
    }
}

/// Makes the FIFO `path` and holds it the way a live client or server does: open for reading,
/// with an exclusive `flock`.
fn hold_live_fifo(path: &Path) -> Flock<OwnedFd> {
    make_fifo(path);
    let reader = open_nonblocking(path, OFlag::O_RDONLY).unwrap();
    Flock::lock(reader, FlockArg::LockExclusiveNonblock).unwrap()
}

fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path).unwrap().ino()
}

// ---- the happy paths ------------------------------------------------------------------------

#[test]
fn client_and_server_exchange_the_c_versions_texts() {
    let lab = Lab::new();
    std::fs::create_dir(lab.dir().join("shared")).unwrap();
    let server = start_server(&lab, &["--dir", "shared", "--count", "1"]);
    let client = lab.start("fifoc", &["--dir", "shared"]);
    let client_pid = client.pid();
    let client = client.finish();
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(&server)], "{client}");

    let server = server.finish(); // --count 1: it stops by itself and removes .fifo
    server.assert_success();
    assert_eq!(
        server.lines(),
        [format!(
            "Received request: This is a request from {client_pid}......Replied."
        )],
        "{server}"
    );
    assert!(fifo_files(&lab.dir().join("shared")).is_empty());
}

#[test]
fn twenty_clients_at_once_each_get_their_own_reply() {
    let lab = Lab::new();
    let server = start_server(&lab, &["--count", "20"]);
    let clients: Vec<Running> = (0..20)
        .map(|_| lab.start("fifoc", &[] as &[&str]))
        .collect();
    let mut client_pids: Vec<String> = clients.iter().map(|c| c.pid().to_string()).collect();
    for client in clients {
        let client = client.finish();
        client.assert_success();
        assert_eq!(client.lines(), [reply_line(&server)], "{client}");
    }
    let server = server.finish();
    server.assert_success();
    let mut served: Vec<String> = server
        .lines()
        .iter()
        .map(|line| {
            let pid = line
                .strip_prefix("Received request: This is a request from ")
                .and_then(|rest| rest.strip_suffix("......Replied."));
            pid.unwrap_or_else(|| panic!("unexpected line {line:?}\n{server}"))
                .to_owned()
        })
        .collect();
    served.sort();
    client_pids.sort();
    assert_eq!(served, client_pids, "one line per client\n{server}");
}

// ---- the C wire format ----------------------------------------------------------------------

#[test]
fn a_raw_c_request_gets_a_c_shaped_reply() {
    let lab = Lab::new();
    let server = start_server(&lab, &["--count", "1"]);
    // As the C client does: make the reply FIFO, open it (O_RDWR there), and only then send.
    let reply_fifo = lab.dir().join(".fifo4242");
    make_fifo(&reply_fifo);
    let reader = open_nonblocking(&reply_fifo, OFlag::O_RDONLY).unwrap();
    send_raw(
        &lab,
        &c_record(b".fifo4242", b"This is a request from 4242."),
    );
    let reply = read_record(&reader);
    assert_eq!(
        reply,
        c_record(
            b".fifo4242",
            format!("This is a reply from {}.", server.pid()).as_bytes()
        )
    );
    let server = server.finish();
    server.assert_success();
    assert_eq!(
        server.lines(),
        ["Received request: This is a request from 4242......Replied."]
    );
    std::fs::remove_file(reply_fifo).unwrap();
}

#[test]
fn the_rust_clients_request_is_c_shaped_and_a_raw_reply_is_understood() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab);
    let client = lab.start("fifoc", &[] as &[&str]);
    let request = read_record(&fake.reader);
    let name = format!(".fifo{}", client.pid());
    let text = format!("This is a request from {}.", client.pid());
    assert_eq!(request, c_record(name.as_bytes(), text.as_bytes()));

    let reply_fifo = open_nonblocking(&lab.dir().join(&name), OFlag::O_WRONLY).unwrap();
    nix::unistd::write(
        &reply_fifo,
        &c_record(name.as_bytes(), b"This is a reply from 1."),
    )
    .unwrap();
    let client = client.finish();
    client.assert_success();
    assert_eq!(
        client.stdout(),
        "Sent a request.....Received reply: This is a reply from 1.\n"
    );
    fake.stop(&lab);
}

// ---- bad input never kills the server -------------------------------------------------------

#[test]
fn bad_requests_are_reported_and_skipped_and_the_next_client_is_served() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let dir = lab.dir();

    // A FIFO outside the directory, with a reader: the server must never write into it.
    let outside = tempfile::tempdir().unwrap();
    make_fifo(&outside.path().join(".fifo77"));
    let outside_reader =
        open_nonblocking(&outside.path().join(".fifo77"), OFlag::O_RDONLY).unwrap();
    std::os::unix::fs::symlink(outside.path().join(".fifo77"), dir.join(".fifo78")).unwrap();
    std::fs::write(dir.join(".fifo79"), "a plain file").unwrap();
    make_fifo(&dir.join(".fifo80")); // exists, but no one reads it

    let outside_name = format!("{}/.fifo77", outside.path().display());
    // A text without NUL is answered, as msgq1 and sipc1 answer one, and said.
    make_fifo(&dir.join(".fifo81"));
    let reply_reader = open_nonblocking(&dir.join(".fifo81"), OFlag::O_RDONLY).unwrap();
    let mut no_text_nul = c_record(b".fifo81", b"");
    no_text_nul[32..].fill(b'x');
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"short record".to_vec(),
            "12 stray bytes that do not start a record",
        ),
        (
            vec![b'n'; 160],
            "160 stray bytes that do not start a record",
        ),
        (
            no_text_nul,
            "fifos: request(.fifo81): text without NUL in its 128 bytes; answered anyway",
        ),
        (
            c_record(b"../.fifo1", b"hi"),
            "\"../.fifo1\" is not .fifo<digits>",
        ),
        (
            c_record(outside_name.as_bytes(), b"hi"),
            "/.fifo77\" is not .fifo<digits>",
        ),
        (c_record(b".fifo1/../x", b"hi"), "is not .fifo<digits>"),
        (
            c_record(b".fifoabc", b"hi"),
            "\".fifoabc\" is not .fifo<digits>",
        ),
        (c_record(b".fifo", b"hi"), "\".fifo\" is not .fifo<digits>"),
        (
            c_record(b".fifo999999", b"hi"),
            "open(./.fifo999999): ENOENT: No such file or directory; no reply sent",
        ),
        (c_record(b".fifo78", b"hi"), "open(./.fifo78): not a FIFO"),
        (c_record(b".fifo79", b"hi"), "open(./.fifo79): not a FIFO"),
        (
            c_record(b".fifo80", b"hi"),
            "open(./.fifo80): no process reads it",
        ),
    ];
    for (bytes, complaint) in &cases {
        send_raw(&lab, bytes);
        server.wait_for_stderr(complaint);
    }
    let client = lab.run("fifoc", &[] as &[&str]);
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(&server)], "{client}");

    server.signal(Signal::SIGTERM);
    let server = server.finish();
    assert_eq!(server.code(), Some(0), "{server}");
    assert_eq!(
        server.stderr.lines().count(),
        cases.len(),
        "one line per bad request\n{server}"
    );
    assert_one_form("fifos", &server.stderr);
    let mut chunk = [0u8; 16];
    // Nothing to read: no data (EAGAIN), or end-of-file as no writer ever opened it (0).
    let outside_got = nix::unistd::read(&outside_reader, &mut chunk);
    assert!(
        matches!(outside_got, Ok(0) | Err(Errno::EAGAIN)),
        "wrote outside: {outside_got:?}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join(".fifo79")).unwrap(),
        "a plain file"
    );
    let mut reply = [0u8; 160];
    assert_eq!(
        nix::unistd::read(&reply_reader, &mut reply),
        Ok(160),
        "no reply"
    );
    assert!(reply[32..].starts_with(b"This is a reply from "));
    for name in [".fifo78", ".fifo79", ".fifo80", ".fifo81"] {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
}

#[test]
fn a_server_refuses_a_fifo_path_that_is_not_a_fifo_and_leaves_it_alone() {
    let lab = Lab::new();
    std::fs::write(lab.dir().join(".fifo"), "precious").unwrap();
    let run = lab.run("fifos", &[] as &[&str]);
    run.assert_failure(
        1,
        "fifos: mkfifo(./.fifo): exists and is not a FIFO; remove it first",
    );
    assert_eq!(
        std::fs::read_to_string(lab.dir().join(".fifo")).unwrap(),
        "precious"
    );
    std::fs::remove_file(lab.dir().join(".fifo")).unwrap();
}

#[test]
fn a_second_server_on_the_same_fifo_is_refused() {
    let lab = Lab::new();
    let first = start_server(&lab, &[]);
    lab.run("fifos", &[] as &[&str])
        .assert_failure(1, "mkfifo(./.fifo): another fifos is already serving it");
    first.signal(Signal::SIGINT);
    first.finish().assert_success();
}

#[test]
fn stray_bytes_before_queued_requests_lose_none_of_them() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    answers_the_requests_queued_while_stopped(&lab, &server, b"hello");
    server.signal(Signal::SIGTERM);
    let server = server.finish();
    assert_eq!(server.code(), Some(0), "{server}");
    assert_eq!(server.lines().len(), 3, "three replies\n{server}");
    assert_eq!(
        server.stderr,
        "fifos: bad request (./.fifo): 5 stray bytes that do not start a record; skipped\n",
        "the stray bytes reported once\n{server}"
    );
}

#[test]
fn a_hard_link_to_the_servers_own_fifo_never_gets_a_reply() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let link = lab.dir().join(".fifo999");
    std::fs::hard_link(lab.dir().join(".fifo"), &link).unwrap();
    send_raw(&lab, &c_record(b".fifo999", b"reply to yourself"));
    server.wait_for_stderr("open(./.fifo999): the server's own FIFO");
    let client = lab.start("fifoc", &["--timeout", "10"]);
    let client_pid = client.pid();
    client.finish().assert_success();

    server.signal(Signal::SIGTERM);
    let server = server.finish();
    assert_eq!(server.code(), Some(0), "{server}");
    // A reply written into .fifo would come back as a request, again and again.
    assert_eq!(
        server.lines(),
        [
            "Received request: reply to yourself.....".to_owned(),
            format!("Received request: This is a request from {client_pid}......Replied.")
        ],
        "{server}"
    );
    assert_eq!(server.stderr.lines().count(), 1, "{server}");
    std::fs::remove_file(link).unwrap();
}

#[test]
fn reply_fifos_without_a_reader_do_not_delay_the_next_client() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let unread: Vec<PathBuf> = (1000..1025)
        .map(|pid| lab.dir().join(format!(".fifo{pid}")))
        .collect();
    let mut batch = Vec::new();
    for fifo in &unread {
        make_fifo(fifo);
        let name = fifo.file_name().unwrap().to_str().unwrap();
        batch.extend(c_record(name.as_bytes(), b"no one reads my FIFO"));
    }
    send_raw(&lab, &batch); // 25 records, 4000 bytes: one atomic write
    let client = lab.start("fifoc", &["--timeout", "20"]);
    // Waiting a second for each reader, as the server once did, would take 25 s.
    let client = client.finish_within(Duration::from_secs(8));
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(&server)], "{client}");

    server.signal(Signal::SIGTERM);
    let server = server.finish();
    assert_eq!(
        server.stderr.matches("no process reads it").count(),
        25,
        "{server}"
    );
    for fifo in unread {
        std::fs::remove_file(fifo).unwrap();
    }
}

// ---- one owner per FIFO: a lock, not the PID in the name -----------------------------------

#[test]
fn of_two_servers_starting_together_on_a_stale_fifo_exactly_one_serves() {
    let lab = Lab::new();
    make_fifo(&lab.dir().join(".fifo")); // as left by a server killed with SIGKILL
                                         // strace holds the first server up for 3 s right after its first open of .fifo: the second
                                         // server starts inside that window, the moment at which two servers race.
    let first = lab.start(
        "strace",
        &[
            "-P",
            "./.fifo",
            "-e",
            "trace=openat",
            "-e",
            "inject=openat:delay_exit=3000000:when=1",
            exe("fifos").unwrap(),
            "--timeout", // should it serve, by mistake: killing strace would not stop it
            "20",
        ],
    );
    first.wait_for_stderr("(DELAYED)");
    let second = lab.start("fifos", &["--count", "1"]);
    first.wait_for_stderr(
        "fifos: mkfifo(./.fifo): another fifos is already serving it; stop it first",
    );
    let first = first.finish();
    assert_eq!(first.code(), Some(1), "{first}");

    // The refused server left .fifo to the one that serves it.
    wait_for_a_server(&lab);
    let client = lab.start("fifoc", &["--timeout", "10"]);
    let client_pid = client.pid();
    client.finish().assert_success();
    let second = second.finish(); // --count 1
    second.assert_success();
    assert_eq!(
        second.lines(),
        [format!(
            "Received request: This is a request from {client_pid}......Replied."
        )],
        "{second}"
    );
}

/// Starts `program` while a live process holds the FIFO `<prefix><PID>` that it is about to make:
/// it must fail, saying what is in the way, and leave that FIFO alone.
fn leaves_a_live_fifo_with_its_pid_alone(program: &str, prefix: &str) {
    let lab = Lab::new();
    let gated = Gated::start(&lab, program, &[]);
    // The same PID in another PID namespace (a container sharing the directory), say.
    let name = format!("{prefix}{}", gated.pid());
    let fifo = lab.dir().join(&name);
    let holder = hold_live_fifo(&fifo);
    let before = inode(&fifo);
    let run = gated.open().finish();
    run.assert_failure(
        1,
        &format!("{program}: mkfifo(./{name}): in use by a live process"),
    );
    assert_eq!(inode(&fifo), before, "the live FIFO was replaced\n{run}");
    assert_eq!(fifo_files(lab.dir()), std::slice::from_ref(&fifo), "{run}");
    drop(holder);
    std::fs::remove_file(fifo).unwrap();
}

#[test]
fn a_client_leaves_a_fifo_with_its_pid_alone_while_a_live_process_holds_it() {
    leaves_a_live_fifo_with_its_pid_alone("fifoc", ".fifo");
}

/// A shell holding `path` open for reading and writing, without a lock: what a C peer does.
fn held_without_a_lock(lab: &Lab, path: &Path) -> Running {
    let name = path.file_name().unwrap().to_str().unwrap();
    let holder = lab.start(
        "sh",
        &["-c", "exec 3<>\"$0\"; echo holding; exec sleep 60", name],
    );
    holder.wait_for_stdout("holding");
    // Messages name it by its program: wait for the exec that follows the line.
    wait_until("the holder to be sleep", || {
        std::fs::read_to_string(format!("/proc/{}/comm", holder.pid()))
            .is_ok_and(|name| name == "sleep\n")
    });
    holder
}

#[test]
fn a_client_leaves_a_fifo_with_its_pid_alone_while_a_c_client_holds_it_without_a_lock() {
    let lab = Lab::new();
    let gated = Gated::start(&lab, "fifoc", &[]);
    let name = format!(".fifo{}", gated.pid());
    let fifo = lab.dir().join(&name);
    make_fifo(&fifo);
    let holder = held_without_a_lock(&lab, &fifo);
    let run = gated.open().finish();
    run.assert_failure(
        1,
        &format!(
            "fifoc: mkfifo(./{name}): in use by pid {} (sleep); use another --dir",
            holder.pid()
        ),
    );
    assert!(fifo.exists(), "left alone\n{run}");
    drop(holder);
    std::fs::remove_file(fifo).unwrap();
}

#[test]
fn a_server_never_takes_over_a_fifo_that_a_c_server_reads() {
    let lab = Lab::new();
    let fifo = lab.dir().join(".fifo");
    make_fifo(&fifo); // a C fifos's: it takes no lock of ours
    let c_server = held_without_a_lock(&lab, &fifo);
    let run = lab.run("fifos", &[] as &[&str]);
    run.assert_failure(
        1,
        &format!(
            "fifos: mkfifo(./.fifo): read by pid {} (sleep), a server that is not fifos of this \
             suite; stop it first, or use another --dir",
            c_server.pid()
        ),
    );
    assert!(fifo.exists(), "left to its server\n{run}");
    drop(c_server);
    std::fs::remove_file(fifo).unwrap();
}

#[test]
fn a_client_replaces_a_leftover_fifo_with_its_pid_that_no_process_holds() {
    let lab = Lab::new();
    let server = start_server(&lab, &["--count", "1"]);
    let client = Gated::start(&lab, "fifoc", &["--timeout", "10"]);
    make_fifo(&lab.dir().join(format!(".fifo{}", client.pid()))); // left by a killed client
    let client = client.open().finish();
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(&server)], "{client}");
    server.finish().assert_success();
}

#[test]
fn a_server_replaces_a_leftover_fifo_new_that_no_process_holds() {
    let lab = Lab::new();
    let server = Gated::start(&lab, "fifos", &["--count", "1"]);
    make_fifo(&lab.dir().join(format!(".fifo-new{}", server.pid())));
    let server = server.open();
    wait_for_a_server(&lab);
    lab.run("fifoc", &["--timeout", "10"]).assert_success();
    server.finish().assert_success();
}

#[test]
fn a_server_leaves_a_fifo_new_alone_while_a_live_process_holds_it() {
    leaves_a_live_fifo_with_its_pid_alone("fifos", ".fifo-new");
}

// ---- stdout gone: the requests read are still answered --------------------------------------

#[test]
fn a_server_whose_stdout_is_full_answers_the_requests_it_has_read_then_fails() {
    let lab = Lab::new();
    let fifos = exe("fifos").unwrap();
    let server = lab.start("sh", &["-c", "exec \"$0\" >/dev/full", fifos]);
    wait_for_a_server(&lab);
    // Printing the first request fails; the other two are read already.
    answers_the_requests_queued_while_stopped(&lab, &server, b"");
    let server = server.finish();
    server.assert_failure(
        1,
        "fifos: writing to stdout: ENOSPC: No space left on device",
    );
    assert_eq!(server.stderr.lines().count(), 1, "{server}");
}

#[test]
fn a_server_whose_stdout_reader_has_gone_answers_the_request_then_stops_quietly() {
    let lab = Lab::new();
    let script = format!(
        "{:?} --timeout 20 | {{ exec <&-; echo reader gone >&2; }}; echo \"fifos exited with ${{PIPESTATUS[0]}}\" >&2",
        exe("fifos").unwrap()
    );
    let server = lab.start("bash", &["-c", &script]);
    server.wait_for_stderr("reader gone");
    wait_for_a_server(&lab);
    let client = lab.run("fifoc", &["--timeout", "10"]);
    client.assert_success();
    assert!(
        client
            .stdout()
            .starts_with("Sent a request.....Received reply: This is a reply from "),
        "{client}"
    );
    let server = server.finish();
    assert_eq!(
        server.stderr, "reader gone\nfifos exited with 0\n",
        "{server}"
    );
}

// ---- no server ------------------------------------------------------------------------------

#[test]
fn client_without_server_fails_at_once_and_leaves_nothing() {
    let lab = Lab::new();
    let run = lab.run("fifoc", &[] as &[&str]);
    run.assert_failure(1, "fifoc: open(./.fifo): no such FIFO; start fifos first");
    assert!(run.stdout.is_empty(), "{run}");
}

/// Asserts that every line of `stderr` has the suite's one form, `NAME: what failed (object):
/// reason`, an errno shown as `ENAME: text`, never as Rust's `(os error N)`.
fn assert_one_form(program: &str, stderr: &str) {
    assert!(!stderr.is_empty(), "no message");
    for line in stderr.lines() {
        let form = line
            .strip_prefix(&format!("{program}: "))
            .and_then(|rest| rest.split_once('('))
            .and_then(|(what, rest)| Some((what, rest.split_once("): ")?)));
        assert!(
            form.is_some_and(|(what, (object, reason))| !what.contains(':')
                && !object.is_empty()
                && !reason.is_empty()),
            "not the form: {line:?}"
        );
        assert!(!line.contains("os error"), "{line:?}");
        if let Some((_, errno)) = line.split_once(": E") {
            let name: String = errno.chars().take_while(char::is_ascii_uppercase).collect();
            assert!(
                errno[name.len()..].starts_with(": "),
                "errno not as ENAME: text: {line:?}"
            );
        }
    }
}

#[test]
fn every_refusal_of_the_pair_has_the_one_form() {
    let lab = Lab::new();
    let missing = lab.dir().join("missing");
    let missing = missing.to_str().unwrap();
    let stale = lab.dir().join(".fifo");
    for (program, args) in [("fifoc", vec![]), ("fifoc", vec!["--dir", missing])] {
        let run = lab.run(program, &args);
        assert_eq!(run.code(), Some(1), "{run}");
        assert_one_form(program, &run.stderr);
    }
    make_fifo(&stale); // left by a server killed with SIGKILL
    let run = lab.run("fifoc", &[] as &[&str]);
    assert_one_form("fifoc", &run.stderr);
    std::fs::remove_file(&stale).unwrap();
    std::fs::write(&stale, "not a FIFO").unwrap();
    for args in [vec![], vec!["--dir", missing]] {
        let run = lab.run("fifos", &args);
        assert_eq!(run.code(), Some(1), "{run}");
        assert_one_form("fifos", &run.stderr);
    }
    std::fs::remove_file(&stale).unwrap();
    let run = lab.run("fifos", &["--timeout", "0.1"]);
    assert_one_form("fifos", &run.stderr);
}

#[test]
fn client_with_a_stale_fifo_fails_at_once_and_leaves_nothing() {
    let lab = Lab::new();
    make_fifo(&lab.dir().join(".fifo")); // as left by a server killed with SIGKILL
    let run = lab.run("fifoc", &[] as &[&str]);
    run.assert_failure(1, "fifoc: open(./.fifo): no server reads it");
    assert_eq!(
        fifo_files(lab.dir()),
        [lab.dir().join(".fifo")],
        "only the stale .fifo"
    );
    std::fs::remove_file(lab.dir().join(".fifo")).unwrap();
}

#[test]
fn a_server_killed_with_sigkill_leaves_a_fifo_that_the_next_server_reuses() {
    let lab = Lab::new();
    let killed = start_server(&lab, &[]);
    killed.signal(Signal::SIGKILL);
    let killed = killed.finish();
    assert_eq!(killed.status.to_string(), "signal: 9 (SIGKILL)");
    lab.run("fifoc", &[] as &[&str])
        .assert_failure(1, "no server reads it");

    let server = lab.start("fifos", &["--count", "1"]);
    wait_until("the new server to read .fifo", || {
        open_nonblocking(&lab.dir().join(".fifo"), OFlag::O_WRONLY).is_ok()
    });
    lab.run("fifoc", &[] as &[&str]).assert_success();
    server.finish().assert_success();
}

// ---- waiting ends: timeouts, signals, a peer that dies --------------------------------------

#[test]
fn client_timeout_bounds_the_wait_for_the_reply() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab); // reads nothing, replies never
    let run = lab.run("fifoc", &["--timeout", "0.5"]);
    run.assert_failure(1, "timed out after 0.5 s (--timeout)");
    assert_eq!(run.stdout(), "Sent a request.....\n", "{run}");
    fake.stop(&lab);
}

#[test]
fn server_timeout_stops_it_when_no_request_comes() {
    let lab = Lab::new();
    let run = lab.run("fifos", &["--timeout", "0.3"]);
    run.assert_failure(
        1,
        "fifos: waiting for a request (./.fifo): timed out after 0.3 s",
    );
}

/// Stops a waiting server with `signal`: it removes `.fifo` (the Lab checks) and exits with
/// `code`, without a word.
fn server_stops_cleanly_on(signal: Signal, code: i32) {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    server.signal(signal);
    let server = server.finish();
    assert_eq!(server.code(), Some(code), "{server}");
    assert!(server.stderr.is_empty(), "{server}");
}

#[test]
fn server_stops_cleanly_on_sigint() {
    server_stops_cleanly_on(Signal::SIGINT, 0); // Ctrl-C is how a server stops, as in the C version
}

#[test]
fn server_stops_cleanly_on_sigterm() {
    server_stops_cleanly_on(Signal::SIGTERM, 0);
}

#[test]
fn server_removes_its_fifo_on_sighup() {
    server_stops_cleanly_on(Signal::SIGHUP, 128 + Signal::SIGHUP as i32); // terminal closed
}

#[test]
fn server_removes_its_fifo_on_sigquit() {
    server_stops_cleanly_on(Signal::SIGQUIT, 128 + Signal::SIGQUIT as i32); // Ctrl-\
}

fn waiting_client_cleans_up_on(signal: Signal) {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab);
    let client = lab.start("fifoc", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    client.signal(signal);
    let client = client.finish();
    assert_eq!(client.code(), Some(128 + signal as i32), "{client}");
    assert!(client.stderr.is_empty(), "{client}");
    fake.stop(&lab); // and the Lab checks that .fifo<PID> is gone
}

#[test]
fn waiting_client_removes_its_fifo_on_sigint() {
    waiting_client_cleans_up_on(Signal::SIGINT);
}

#[test]
fn waiting_client_removes_its_fifo_on_sigterm() {
    waiting_client_cleans_up_on(Signal::SIGTERM);
}

#[test]
fn waiting_client_removes_its_fifo_on_sighup() {
    waiting_client_cleans_up_on(Signal::SIGHUP);
}

#[test]
fn waiting_client_removes_its_fifo_on_sigquit() {
    waiting_client_cleans_up_on(Signal::SIGQUIT);
}

#[test]
fn server_and_client_clean_up_on_the_other_signals_that_would_kill_them() {
    for signal in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGALRM] {
        server_stops_cleanly_on(signal, 128 + signal as i32);
        waiting_client_cleans_up_on(signal);
    }
}

#[test]
fn waiting_client_fails_at_once_when_the_server_dies() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab);
    let client = lab.start("fifoc", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    fake.stop(&lab); // what SIGKILL does to a server: its ends of .fifo close
    let client = client.finish_at_once();
    client.assert_failure(1, "the server went away before replying");
}

// ---- the decoder on arbitrary bytes ---------------------------------------------------------

proptest! {
    #[test]
    fn any_160_bytes_decode_or_are_rejected_without_panic(bytes in prop::collection::vec(any::<u8>(), 160)) {
        check_decoder(&bytes)?;
    }

    #[test]
    fn any_bytes_of_any_length_decode_or_are_rejected_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        check_decoder(&bytes)?;
    }

    #[test]
    fn c_records_with_a_reply_fifo_name_are_requests(pid in 1u32..u32::MAX, text in "[ -~]{0,127}") {
        let name = format!(".fifo{pid}");
        let request = Request::decode(&c_record(name.as_bytes(), text.as_bytes())).unwrap();
        prop_assert_eq!(&request.reply_fifo, &name);
        prop_assert_eq!(request.shown(), text.replace('\\', r"\\")); // C notation
    }
}

proptest! {
    #[test]
    fn the_stream_decoder_never_panics_and_accounts_for_every_byte(bytes in prop::collection::vec(any::<u8>(), 0..1000)) {
        let (found, used) = split_requests(&bytes, true);
        prop_assert!(bytes.len() - used < RECORD_LEN, "what waits is less than a record");
        prop_assert_eq!(bytes_taken(&found), used);
    }

    #[test]
    fn requests_behind_stray_bytes_are_all_found_however_the_bytes_arrive(
        stray in prop::collection::vec(any::<u8>(), 0..500)
            .prop_filter("bytes that hold no record start", |bytes| !contains(bytes, b".fifo")),
        pids in prop::collection::vec(1u32..u32::MAX, 1..4),
        reads in prop::collection::vec(1usize..400, 0..8),
    ) {
        let mut stream = stray.clone();
        stream.extend(requests_from(&pids));
        let (requests, skipped) = decode_in_reads(&stream, &reads)?;
        prop_assert_eq!(requests, reply_fifos(&pids));
        prop_assert_eq!(skipped, stray.len());
    }

    #[test]
    fn a_record_cut_short_does_not_hide_the_requests_behind_it(
        cut_pid in 1u32..u32::MAX,
        cut in 1usize..RECORD_LEN,
        pids in prop::collection::vec(1u32..u32::MAX, 1..4),
        reads in prop::collection::vec(1usize..400, 0..8),
    ) {
        let mut stream = requests_from(&[cut_pid])[..cut].to_vec();
        stream.extend(requests_from(&pids));
        let (requests, skipped) = decode_in_reads(&stream, &reads)?;
        prop_assert_eq!(requests, reply_fifos(&pids));
        prop_assert_eq!(skipped, cut);
    }
}

#[test]
fn a_request_whose_text_ends_like_a_reply_fifo_name_is_still_a_request() {
    let tricky = c_record(b".fifo55", b"my reply goes to .fifo55");
    for followed_by in [vec![], requests_from(&[77])] {
        let mut stream = tricky.clone();
        stream.extend(&followed_by);
        let (found, used) = split_requests(&stream, true);
        assert_eq!(used, stream.len());
        let names: Vec<_> = found
            .iter()
            .map(|r| r.as_ref().map(|r| r.reply_fifo.clone()))
            .collect();
        let mut wanted = vec![Ok(".fifo55".to_string())];
        if !followed_by.is_empty() {
            wanted.push(Ok(".fifo77".to_string()));
        }
        assert_eq!(names, wanted);
    }
}

fn contains(bytes: &[u8], part: &[u8]) -> bool {
    bytes.windows(part.len()).any(|window| window == part)
}

/// The requests of the clients with these PIDs, as our client writes them, one after another.
fn requests_from(pids: &[u32]) -> Vec<u8> {
    pids.iter()
        .flat_map(|pid| {
            c_record(
                format!(".fifo{pid}").as_bytes(),
                format!("This is a request from {pid}.").as_bytes(),
            )
        })
        .collect()
}

fn reply_fifos(pids: &[u32]) -> Vec<String> {
    pids.iter().map(|pid| format!(".fifo{pid}")).collect()
}

/// How many bytes of `.fifo` the items found stand for.
fn bytes_taken(found: &[Result<Request, BadRecord>]) -> usize {
    found
        .iter()
        .map(|item| match item {
            Err(BadRecord::Stray(len)) => *len,
            _ => RECORD_LEN,
        })
        .sum()
}

/// Decodes `stream` as the server does, receiving it in reads of the sizes `reads` (then the
/// rest at once): the reply FIFOs of the requests found, and how many bytes were skipped.
fn decode_in_reads(stream: &[u8], reads: &[usize]) -> Result<(Vec<String>, usize), TestCaseError> {
    let (mut requests, mut skipped) = (Vec::new(), 0);
    let mut received = Vec::new();
    let mut rest = stream;
    for len in reads.iter().copied().chain([stream.len()]) {
        let (read, later) = rest.split_at(len.min(rest.len()));
        rest = later;
        received.extend_from_slice(read);
        let (found, used) = split_requests(&received, rest.is_empty());
        prop_assert_eq!(bytes_taken(&found), used);
        received.drain(..used);
        for item in found {
            match item {
                Ok(request) => requests.push(request.reply_fifo),
                Err(BadRecord::Stray(len)) => skipped += len,
                Err(_) => skipped += RECORD_LEN,
            }
        }
    }
    prop_assert!(received.is_empty(), "left undecoded: {:?}", received);
    Ok((requests, skipped))
}

fn check_decoder(bytes: &[u8]) -> Result<(), TestCaseError> {
    use ipclab::layout::record::{is_reply_fifo_name, Record};
    if let Ok(record) = Record::decode(bytes) {
        prop_assert_eq!(bytes.len(), 160);
        let again = Record::decode(&record.encode()).unwrap();
        prop_assert_eq!(&again, &record);
    }
    if let Ok(request) = Request::decode(bytes) {
        prop_assert!(is_reply_fifo_name(request.reply_fifo.as_bytes()));
        prop_assert!(!request.shown().chars().any(char::is_control));
    }
    Ok(())
}

#[test]
fn a_client_in_a_pid_namespace_of_its_own_leaves_a_c_clients_fifo_alone() {
    // Two containers sharing the directory: a C client, PID 1 in its PID namespace, holds
    // `.fifo1` open without a lock; our fifoc, PID 1 in another, must not take it over. The
    // holder is seen in /proc (the outer one), though `kill` cannot reach it from inside.
    let lab = Lab::new();
    let server = lab.start("fifos", &[] as &[&str]);
    wait_for_a_server(&lab);
    let hold = "mkfifo -m 600 .fifo1 && exec 3<>.fifo1 && echo holding && exec sleep 60";
    let tried = lab.run("unshare", &["--pid", "--fork", "true"]);
    if !tried.status.success() {
        let why = tried.stderr.trim();
        let _ = std::io::Write::write_fmt(
            &mut std::io::stderr(),
            format_args!("SKIPPED: no PID namespace here: {why}\n"),
        );
        return;
    }
    let holder = lab.start(
        "unshare",
        &["--pid", "--fork", "--kill-child", "sh", "-c", hold],
    );
    holder.wait_for_stdout("holding");
    let before = inode(&lab.dir().join(".fifo1"));
    let fifoc = exe("fifoc").unwrap();
    let run = lab.run("unshare", &["--pid", "--fork", fifoc, "--timeout", "10"]);
    run.assert_failure(1, "fifoc: mkfifo(./.fifo1): in use by pid ");
    assert!(run.stderr.contains(" (sleep); use another --dir"), "{run}");
    assert_eq!(inode(&lab.dir().join(".fifo1")), before, "replaced\n{run}");
    holder.signal(Signal::SIGKILL);
    let _ = holder.finish();
    std::fs::remove_file(lab.dir().join(".fifo1")).unwrap();
    server.signal(Signal::SIGINT);
    let _ = server.finish();
}

#[test]
fn a_server_stopped_at_the_prompt_before_its_reply_says_nothing_of_eintr() {
    let lab = Lab::new();
    let server = crate::harness::Stepped::start_with(&lab, "fifos", &["--step-at", "write"]);
    wait_for_a_server(&lab);
    let client = lab.start("fifoc", &["--timeout", "10"]);
    let (pid, call) = server.prompt(1);
    assert!(call.starts_with("write("), "{call}");
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    let (run, screen) = server.finish();
    assert_eq!(run.code(), Some(0), "Ctrl-C stops a server: {run}");
    assert!(!screen.contains("EINTR"), "{screen}");
    assert!(!screen.contains("no reply sent"), "{screen}");
    assert_eq!(client.finish().code(), Some(1));
}
