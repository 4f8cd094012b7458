//! System V message queues: `msgq1` and `msgq2`, with each other and against a raw C-shaped
//! peer played by the test through the library's public wrappers.

use std::path::PathBuf;
use std::time::Duration;

use ipclab::layout::message::{self, MsgBuf, REPLY, REQUEST};
use ipclab::sys::ipc::Key;
use ipclab::sys::msg::{self, MsqId};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use proptest::prelude::*;

use crate::harness::{exe, step_to, sysv_keys, wait_until, Lab, Running, Stepped};

const SIGNALS: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
];

// ---- the bench ------------------------------------------------------------------------------

fn key(lab: &Lab) -> Key {
    Key::queue(lab.id())
}

fn queue_exists(lab: &Lab) -> bool {
    sysv_keys("msg").contains(&i64::from(key(lab).raw()))
}

/// msgq1's liveness lock file for this lab's key (see `ipclab::peer::ServerLock`).
fn lock_file(lab: &Lab) -> PathBuf {
    ipclab::peer::lock_path(ipclab::queue::MSGQ1, key(lab))
}

/// Starts msgq1 and waits until it is ready: its queue exists and its lock file names it (so
/// that a client can tell when it has ended).
fn start_server(lab: &Lab, args: &[&str]) -> Running {
    let server = lab.start("msgq1", args);
    wait_until("msgq1's queue and lock", || server_ready(lab).is_some());
    server
}

/// The queue of a ready msgq1 (see `start_server`).
fn server_ready(lab: &Lab) -> Option<MsqId> {
    let queue = msg::msgget(key(lab), 0).ok()?;
    let recorded = std::fs::read_to_string(lock_file(lab)).ok()?;
    let words: Vec<&str> = recorded.split_whitespace().collect();
    (words.get(1..) == Some(&["msgq1", &queue.to_string()][..])).then_some(queue)
}

/// Starts msgq1 and has the test, as a C client, send it a request: returns once it has
/// replied (and now waits for the reply to be taken).
fn server_that_replied(lab: &Lab, args: &[&str]) -> (Running, MsqId) {
    let server = start_server(lab, args);
    let queue = open(lab);
    send_request(queue, me());
    server.wait_for_stdout("Replied.");
    (server, queue)
}

/// The queue as a C peer opens it.
fn open(lab: &Lab) -> MsqId {
    msg::msgget(key(lab), 0).unwrap()
}

/// Sends `bytes` as the text of a message of `mtype`, `size` bytes long, as a C peer would.
fn send_raw<const N: usize>(queue: MsqId, mtype: i64, bytes: &[u8], size: usize) {
    let message = MsgBuf::<N>::with_bytes(mtype, bytes).unwrap();
    msg::msgsnd(queue, &message, size, libc::IPC_NOWAIT).unwrap();
}

/// The C client's request: `This is a request from <pid>.` in 128 bytes.
fn send_request(queue: MsqId, pid: Pid) {
    send_raw::<128>(queue, REQUEST, message::request_text(pid).as_bytes(), 128);
}

/// Takes the first message of `mtype` (as a C peer with a buffer of N bytes), waiting for it.
fn receive_raw<const N: usize>(queue: MsqId, mtype: i64) -> (MsgBuf<N>, usize) {
    let mut message = MsgBuf::<N>::empty();
    let mut len = 0;
    wait_until("a message", || {
        match msg::msgrcv(queue, &mut message, N, mtype, libc::IPC_NOWAIT) {
            Ok(n) => {
                len = n;
                true
            }
            Err(Errno::ENOMSG) => false,
            Err(e) => panic!("msgrcv: {e}"),
        }
    });
    (message, len)
}

/// Starts another process (perl, as a C peer) that sends a message of `mtype` with `text` into
/// the lab's queue (128 bytes, NUL-padded), says `sent`, and then lives on for a minute if
/// `linger`, else ends: so that `msg_lspid` names a process the test can end.
fn sender(lab: &Lab, mtype: i64, text: &str, linger: bool) -> Running {
    let script = format!(
        "use IPC::SysV qw(IPC_NOWAIT); $| = 1; my $id = msgget({}, 0) // die \"msgget: $!\"; \
         msgsnd($id, pack('l! a128', {mtype}, $ARGV[0]), IPC_NOWAIT) or die \"msgsnd: $!\"; \
         print \"sent\\n\"; sleep 60 if {}",
        key(lab).raw(),
        u8::from(linger)
    );
    let sender = lab.start("perl", &["-e", &script, text]);
    sender.wait_for_stdout("sent");
    sender
}

fn stat(queue: MsqId) -> libc::msqid_ds {
    msg::ipc_stat(queue).unwrap()
}

/// The test plays a C msgq1: it makes the queue (0600) and removes it when dropped.
struct FakeServer {
    queue: MsqId,
}

impl FakeServer {
    fn new(lab: &Lab) -> FakeServer {
        let flags = libc::IPC_CREAT | libc::IPC_EXCL | 0o600;
        FakeServer {
            queue: msg::msgget(key(lab), flags).unwrap(),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = msg::ipc_rmid(self.queue);
    }
}

fn me() -> Pid {
    nix::unistd::getpid()
}

fn request_line(client: Pid) -> String {
    format!("Received request: This is a request from {client}......Replied.")
}

fn reply_line(server: Pid) -> String {
    format!("Sent a request.....Received reply: This is a reply from {server}.")
}

/// Runs msgq2 against `server`: it must get the server's reply. Returns the client's PID.
fn run_client(lab: &Lab, server: &Running) -> Pid {
    let client = lab.start("msgq2", &[] as &[&str]);
    let client_pid = client.pid();
    let client = client.finish();
    client.assert_success();
    assert_eq!(client.stdout(), format!("{}\n", reply_line(server.pid())));
    client_pid
}

/// The end of a server that answered the request and removed its queue and lock.
fn assert_served(lab: &Lab, server: Running, client: Pid) -> crate::harness::Finished {
    let server = server.finish();
    assert_eq!(server.code(), Some(0), "{server}");
    assert_eq!(server.lines(), [request_line(client)], "{server}");
    assert!(!queue_exists(lab), "{server}");
    assert!(!lock_file(lab).exists(), "lock file left\n{server}");
    server
}

// ---- the happy path -------------------------------------------------------------------------

#[test]
fn server_and_client_exchange_the_c_versions_texts_and_leave_nothing() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    assert!(
        lock_file(&lab).exists(),
        "a live server holds its lock file"
    );
    let client_pid = run_client(&lab, &server);
    let server = assert_served(&lab, server, client_pid);
    server.assert_success(); // nothing on stderr
}

#[test]
fn pair_after_pair_the_server_never_mistakes_a_fast_client_for_a_gone_one() {
    // A client that takes the reply and ends at once must count as having taken it, however
    // the server's checks interleave with it: run the pair again and again.
    let lab = Lab::new();
    for _ in 0..40 {
        let server = start_server(&lab, &[]);
        let client_pid = run_client(&lab, &server);
        assert_served(&lab, server, client_pid).assert_success();
    }
}

#[test]
fn the_lab_id_can_be_given_as_an_option_in_hex() {
    let lab = Lab::new();
    let id = format!("{:#x}", lab.id());
    let mut server = lab.command("msgq1", &["--id", &id]);
    server.env_remove("IPCLAB_ID");
    let server = Running::spawn(server);
    wait_until("msgq1's queue", || queue_exists(&lab));
    let mut client = lab.command("msgq2", &["--id", &id]);
    client.env_remove("IPCLAB_ID");
    Running::spawn(client).finish().assert_success();
    server.finish().assert_success();
}

#[test]
fn a_bad_lab_id_in_the_environment_is_blamed_on_the_variable() {
    let lab = Lab::new();
    let mut client = lab.command("msgq2", &[] as &[&str]);
    client.env("IPCLAB_ID", "abc");
    let run = Running::spawn(client).finish();
    run.assert_failure(
        2,
        "error: IPCLAB_ID=\"abc\" in the environment is not valid: expected a number",
    );
    assert!(!run.stderr.contains("--id <ID>"), "{run}");
    // Typed on the command line, the option is named, whatever the environment says.
    let mut client = lab.command("msgq2", &["--id", "abc"]);
    client.env("IPCLAB_ID", "7");
    let run = Running::spawn(client).finish();
    run.assert_failure(2, "error: invalid value 'abc' for '--id <ID>'");
}

// ---- the C wire format ----------------------------------------------------------------------

#[test]
fn a_c_shaped_136_byte_request_gets_a_type_2_reply_of_128_bytes() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let queue = open(&lab);
    // As the C client sends it: sizeof(msg) = 136 bytes of "text", the last 8 from its stack
    // (there, by luck, the queue ID).
    let mut c_bytes = [0u8; 136];
    let text = message::request_text(me());
    c_bytes[..text.len()].copy_from_slice(text.as_bytes());
    c_bytes[128..132].copy_from_slice(&queue.0.to_ne_bytes());
    send_raw::<136>(queue, REQUEST, &c_bytes, 136);
    server.wait_for_stdout("Replied.");

    let (reply, len) = receive_raw::<136>(queue, REPLY); // the C client's msgrcv(…, 136, 2, 0)
    assert_eq!(len, 128, "the reply is sent as 128 bytes, not the C's 136");
    assert_eq!(reply.mtype, 2);
    let expected = MsgBuf::<136>::with_bytes(REPLY, message::reply_text(server.pid()).as_bytes());
    assert_eq!(Some(reply), expected, "NUL-terminated, NUL-padded");
    assert_served(&lab, server, me()).assert_success();
}

#[test]
fn the_client_sends_128_bytes_and_reads_a_c_shaped_136_byte_reply() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab);
    let client = lab.start("msgq2", &[] as &[&str]);
    let (request, len) = receive_raw::<136>(fake.queue, REQUEST); // the C server's msgrcv
    assert_eq!(len, 128);
    let expected =
        MsgBuf::<136>::with_bytes(REQUEST, message::request_text(client.pid()).as_bytes());
    assert_eq!(Some(request), expected);

    let mut c_reply = [0xaau8; 136]; // garbage after the NUL, as C's stack leaves it
    c_reply[..27].copy_from_slice(b"This is a reply from 4242.\0");
    send_raw::<136>(fake.queue, REPLY, &c_reply, 136);
    let client = client.finish();
    client.assert_success();
    assert_eq!(
        client.stdout(),
        "Sent a request.....Received reply: This is a reply from 4242.\n"
    );
}

// ---- what the server takes, and when it removes the queue -----------------------------------

#[test]
fn the_server_takes_type_1_only_and_a_stray_reply_stays() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let queue = open(&lab);
    send_raw::<128>(queue, REPLY, b"a stray reply\0", 14);
    send_request(queue, me());
    server.wait_for_stdout("Replied.");
    let after = stat(queue);
    assert_eq!(after.msg_qnum, 2, "the stray reply and msgq1's reply");
    assert_eq!(after.__msg_cbytes, 14 + 128);

    let (first, _) = receive_raw::<128>(queue, REPLY);
    assert_eq!(
        ipclab::layout::text::decode_text(first.received(14)),
        Ok("a stray reply".to_string())
    );
    // The stray message was taken in place of the reply, which msgq1 cannot tell apart: it
    // removes the queue, and says what was left unread.
    let server = assert_served(&lab, server, me());
    assert!(
        server
            .stderr
            .contains("msgq1: removing the queue with 1 unread message(s)"),
        "{server}"
    );
}

#[test]
fn the_queue_is_removed_as_soon_as_the_reply_is_taken() {
    let lab = Lab::new();
    let (server, queue) = server_that_replied(&lab, &[]);
    receive_raw::<128>(queue, REPLY);
    // No timer of its own would remove it: only seeing the reply taken ends the server.
    wait_until("the queue to go", || !queue_exists(&lab));
    assert_served(&lab, server, me()).assert_success();
}

/// A class pauses a client at a `--step` prompt for as long as it takes to show `ipcs -q`: the
/// server waits, says what it waits for, and the reply is there when the client goes on. (This
/// test pauses longer than the 3 s after which an earlier msgq1 threw the reply away.)
#[test]
fn a_reply_waits_for_its_client_however_long_a_classroom_pause_lasts() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let client = Stepped::start(&lab, "msgq2");
    let client_pid = step_to(
        &client,
        &["msgget(", "msgctl(", "msgctl(", "msgsnd(", "msgrcv("],
    );
    server.wait_for_stdout("Replied.");
    server.wait_for_stderr(&format!(
        "msgq1: waiting for pid {client_pid} (msgq2) to take the reply from queue {}",
        key(&lab)
    ));
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(stat(open(&lab)).msg_qnum, 1, "the reply waits in the queue");
    client.run_on();
    let (run, screen) = client.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    let reply = format!("Received reply: This is a reply from {}.", server.pid());
    assert!(screen.contains(&reply), "{screen}");
    let server = assert_served(&lab, server, client_pid);
    assert_eq!(
        server.stderr.lines().count(),
        1,
        "only the note of the wait\n{server}"
    );
}

#[test]
fn a_requester_that_ends_without_taking_the_reply_fails_the_server_which_removes_the_queue() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let requester = sender(&lab, REQUEST, "This is a request from a process.", true);
    server.wait_for_stdout("Replied.");
    let requester_pid = requester.pid();
    requester.signal(Signal::SIGKILL);
    let _ = requester.finish();
    let server = server.finish();
    server.assert_failure(
        1,
        &format!(
            "msgq1: waiting for the reply to be taken (queue {}): pid {requester_pid} (perl) \
             ended without taking it; removing the queue with 1 unread message(s)",
            key(&lab)
        ),
    );
    assert!(!queue_exists(&lab));
}

// ---- requests that are not answered ---------------------------------------------------------

#[test]
fn a_request_whose_sender_no_longer_exists_is_reported_and_not_answered() {
    let lab = Lab::new();
    let server = Stepped::start(&lab, "msgq1");
    step_to(&server, &["msgget(", "msgrcv("]); // the queue is made and recorded
    let gone = sender(&lab, REQUEST, "This is a request from the past.", false);
    let gone_pid = gone.pid();
    gone.finish().assert_success(); // reaped: its PID names no process now
    server.run_on();
    wait_until("the warning", || {
        server.screen().contains("no longer exists")
    });
    let client = lab.run("msgq2", &[] as &[&str]);
    client.assert_success();
    let (run, screen) = server.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        screen.contains(&format!(
            "msgq1: request \"This is a request from the past.\" skipped: its sender, pid \
             {gone_pid}, no longer exists"
        )),
        "{screen}"
    );
    assert_eq!(screen.matches("Replied.").count(), 1, "{screen}");
}

#[test]
fn a_request_with_a_message_behind_it_is_answered_though_the_last_sender_has_ended() {
    // msg_lspid names the last sender of any message, not the request's: with another message
    // sent after the request (by a process that has ended since), the request's sender is
    // unknown, and the request is answered, not skipped as a dead client's.
    let lab = Lab::new();
    let server = Stepped::start(&lab, "msgq1");
    step_to(&server, &["msgget(", "msgrcv("]);
    let client = lab.start("msgq2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let later = sender(&lab, 5, "a message sent after the request", false);
    later.finish().assert_success(); // reaped: the last sender no longer exists
    server.run_on();
    let client_pid = client.pid();
    let client = client.finish();
    client.assert_success();
    let (run, screen) = server.finish();
    assert_eq!(run.code(), Some(0), "{run}");
    assert!(
        screen.contains(&format!(
            "Received request: This is a request from {client_pid}."
        )),
        "{screen}"
    );
    assert!(!screen.contains("skipped"), "{screen}");
}

/// Runs msgq1, sends it `bytes` as a C peer's request of `size` bytes, takes the reply.
fn served_raw(bytes: &[u8], size: usize) -> crate::harness::Finished {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let queue = open(&lab);
    send_raw::<200>(queue, REQUEST, bytes, size);
    let (reply, len) = receive_raw::<128>(queue, REPLY);
    let reply = ipclab::layout::text::decode_text(reply.received(len)).unwrap();
    assert_eq!(reply, format!("This is a reply from {}.", server.pid()));
    let pid = server.pid();
    let server = server.finish();
    assert_eq!(server.code(), Some(0), "{server} ({pid})");
    server
}

#[test]
fn any_request_is_answered_and_its_text_shown_escaped() {
    let cases: [(&[u8], usize, &str, &str); 5] = [
        (b"\x1b[2J clear\xff\0", 13, r"\33[2J clear\377", ""),
        (
            "bidi \u{202e}olleh\0".as_bytes(),
            14,
            r"bidi \342\200\256olleh",
            "",
        ),
        (
            b"",
            0,
            "",
            "msgq1: request: text without NUL in its 0 bytes; answered anyway\n",
        ),
        (
            &[b'A'; 128],
            128,
            &"A".repeat(128),
            "msgq1: request: text without NUL in its 128 bytes; answered anyway\n",
        ),
        (
            &[b'B'; 200], // 8 bytes more than the text field: MSG_NOERROR cuts them
            136,
            &"B".repeat(128),
            "msgq1: request: text without NUL in its 128 bytes; answered anyway\n",
        ),
    ];
    for (bytes, size, shown, warning) in cases {
        let server = served_raw(bytes, size);
        assert_eq!(
            server.stdout(),
            format!("Received request: {shown}.....Replied.\n"),
            "{server}"
        );
        assert_eq!(server.stderr, warning, "{server}");
    }
}

// ---- no server, a server gone, a leftover queue, two servers --------------------------------

#[test]
fn client_without_server_fails_at_once_and_creates_no_queue() {
    let lab = Lab::new();
    let run = lab.run("msgq2", &[] as &[&str]);
    assert_eq!(run.code(), Some(1), "{run}");
    assert_eq!(
        run.stderr,
        format!(
            "msgq2: msgget(key {}): no such queue; start msgq1 first\n",
            key(&lab)
        )
    );
    assert!(run.stdout.is_empty(), "{run}");
    assert!(!queue_exists(&lab));
}

#[test]
fn a_queue_removed_while_the_client_waits_is_a_clear_error() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab);
    let client = lab.start("msgq2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    drop(fake); // msgctl(IPC_RMID)
    let client = client.finish();
    client.assert_failure(
        1,
        &format!(
            "msgq2: msgrcv(queue {}, type 2): the queue was removed while waiting",
            key(&lab)
        ),
    );
    assert_eq!(client.stdout(), "Sent a request.....\n", "{client}");
}

#[test]
fn a_client_fails_at_once_when_the_server_is_killed_while_it_waits() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    server.signal(Signal::SIGSTOP); // alive, holding its lock, but answering nothing
    let client = lab.start("msgq2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let server_pid = server.pid();
    server.signal(Signal::SIGKILL);
    server.finish();
    let client = client.finish();
    client.assert_failure(
        1,
        &format!(
            "msgq2: msgrcv(queue {}, type 2): msgq1 (pid {server_pid}) ended without replying \
             (killed?) and left its queue behind: make ipcclean",
            key(&lab)
        ),
    );
    msg::ipc_rmid(open(&lab)).unwrap(); // what make ipcclean does
    std::fs::remove_file(lock_file(&lab)).unwrap(); // SIGKILL left it too
}

#[test]
fn a_leftover_queue_of_a_killed_server_is_refused_by_clients_and_replaced_by_the_next_server() {
    let lab = Lab::new();
    let killed = start_server(&lab, &[]);
    let killed_pid = killed.pid();
    killed.signal(Signal::SIGKILL);
    killed.finish();
    assert!(
        queue_exists(&lab),
        "SIGKILL cannot be caught: the queue is left"
    );
    let leftover = open(&lab);
    sender(&lab, REQUEST, "a request sent before the crash", false).finish();

    let run = lab.run("msgq2", &[] as &[&str]);
    run.assert_failure(
        1,
        &format!(
            "msgq2: msgget(key {}): no server: the queue was left by msgq1 (pid {killed_pid}), \
             which was killed; start msgq1 first (it replaces the queue)",
            key(&lab)
        ),
    );
    assert_eq!(
        stat(leftover).msg_qnum,
        1,
        "the client sent nothing into it"
    );

    let server = lab.start("msgq1", &[] as &[&str]);
    server.wait_for_stderr("removing it");
    wait_until("the new server", || {
        server_ready(&lab).is_some_and(|id| id != leftover)
    });
    let client_pid = run_client(&lab, &server);
    let server = assert_served(&lab, server, client_pid);
    assert!(
        server.stderr.starts_with(&format!(
            "msgq1: found a leftover queue (key {}, msqid {leftover}) with 1 message(s), last \
             sent to by pid ",
            key(&lab)
        )),
        "{server}"
    );
    assert!(server
        .stderr
        .ends_with(", which no longer exist(s); removing it\n"));
}

#[test]
fn a_queue_never_used_of_a_killed_msgq1_is_its_leftover_and_replaced() {
    let lab = Lab::new();
    let killed = start_server(&lab, &[]);
    killed.signal(Signal::SIGKILL);
    killed.finish();
    let leftover = open(&lab);
    let server = start_server_replacing(&lab, leftover);
    let client_pid = run_client(&lab, &server);
    let server = assert_served(&lab, server, client_pid);
    assert!(server.stderr.contains("made by a msgq1"), "{server}");
}

/// Starts msgq1 where `leftover` is, and waits until it has replaced it with its own queue.
fn start_server_replacing(lab: &Lab, leftover: MsqId) -> Running {
    let server = lab.start("msgq1", &[] as &[&str]);
    server.wait_for_stderr("removing it");
    wait_until("the new server", || {
        server_ready(lab).is_some_and(|id| id != leftover)
    });
    server
}

#[test]
fn a_queue_in_use_by_a_live_process_is_never_removed_and_the_user_is_named() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab); // a C server's, say: no lock of ours
    let user = sender(&lab, 3, "a message of a live program", true);
    let run = lab.run("msgq1", &[] as &[&str]);
    run.assert_failure(
        1,
        &format!(
            "msgq1: msgget(key {}): a queue with this key exists already (msqid {}, used by pid \
             {} (perl)); stop it first, or use another --id (or IPCLAB_ID)",
            key(&lab),
            fake.queue,
            user.pid()
        ),
    );
    assert_eq!(stat(fake.queue).msg_qnum, 1, "left as it was");
}

#[test]
fn a_queue_never_used_whose_maker_is_unknown_is_refused_not_removed() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab); // a C msgq1 stopped with Ctrl-C leaves one like it
    let run = lab.run("msgq1", &[] as &[&str]);
    run.assert_failure(1, "a queue with this key exists already (msqid ");
    run.assert_failure(
        1,
        "never used, made by a program that is not msgq1 of this suite",
    );
    assert!(msg::ipc_stat(fake.queue).is_ok(), "left alone");
}

#[test]
fn a_client_waiting_for_room_fails_at_once_when_its_server_is_killed() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let queue = open(&lab);
    server.signal(Signal::SIGSTOP); // alive, holding its lock, taking nothing
    fill(queue);
    let client = lab.start("msgq2", &[] as &[&str]);
    // The note a wait gives after two seconds: the client is in its wait to send (its open,
    // which refuses a server known to be gone, is over).
    client.wait_for_stderr("msgq2: waiting for room in queue ");
    let server_pid = server.pid();
    server.signal(Signal::SIGKILL);
    server.finish();
    let client = client.finish();
    client.assert_failure(
        1,
        &format!("msgq1 (pid {server_pid}) ended without replying (killed?)"),
    );
    assert!(client.stdout.is_empty(), "{client}");
    msg::ipc_rmid(queue).unwrap(); // what make ipcclean does
    std::fs::remove_file(lock_file(&lab)).unwrap(); // SIGKILL left it too
}

#[test]
fn a_reply_left_before_the_request_is_taken_as_the_c_does_but_said() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab);
    send_raw::<128>(fake.queue, REPLY, b"This is a reply from long ago.\0", 128);
    let client = lab.run("msgq2", &[] as &[&str]);
    assert_eq!(client.code(), Some(0), "{client}");
    assert_eq!(
        client.stdout(),
        "Sent a request.....Received reply: This is a reply from long ago.\n"
    );
    assert_eq!(
        client.stderr,
        format!(
            "msgq2: 1 reply(ies) already waited in queue {} before this request was sent: the \
             reply above may be an earlier exchange's, not the answer to this request\n",
            key(&lab)
        )
    );
}

#[test]
fn a_server_whose_stdout_fails_still_answers_and_leaves_nothing() {
    let lab = Lab::new();
    let server = lab.start(
        "sh",
        &["-c", r#"exec "$0" >/dev/full"#, exe("msgq1").unwrap()],
    );
    wait_until("msgq1's queue and lock", || server_ready(&lab).is_some());
    let client = lab.run("msgq2", &[] as &[&str]);
    client.assert_success();
    assert_eq!(client.stdout(), format!("{}\n", reply_line(server.pid()))); // exec: same PID
    let server = server.finish();
    server.assert_failure(
        1,
        "msgq1: writing to stdout: ENOSPC: No space left on device",
    );
}

#[test]
fn a_stale_lock_file_naming_another_queue_does_not_stop_a_client_of_a_c_server() {
    let lab = Lab::new();
    // Left by a msgq1 killed long ago; the queue now is a C server's, which takes no lock.
    std::fs::write(lock_file(&lab), "4242 msgq1 99999\n").unwrap();
    let fake = FakeServer::new(&lab);
    let client = lab.start("msgq2", &[] as &[&str]);
    receive_raw::<128>(fake.queue, REQUEST);
    send_raw::<128>(fake.queue, REPLY, b"This is a reply from 4242.\0", 128);
    client.finish().assert_success();
    std::fs::remove_file(lock_file(&lab)).unwrap();
}

#[test]
fn a_second_server_on_the_same_key_is_refused_and_the_first_serves_on() {
    let lab = Lab::new();
    let first = start_server(&lab, &[]);
    let second = lab.run("msgq1", &[] as &[&str]);
    second.assert_failure(
        1,
        &format!(
            "msgq1: msgget(key {}): another msgq1 (pid {}) is already serving this queue; stop \
             it first, or use another --id (or IPCLAB_ID)",
            key(&lab),
            first.pid()
        ),
    );
    let client_pid = run_client(&lab, &first);
    assert_served(&lab, first, client_pid).assert_success();
}

// ---- other users' queues (key squatting) ----------------------------------------------------

#[test]
fn a_queue_of_ours_with_a_wider_mode_than_0600_is_refused_by_both() {
    let lab = Lab::new();
    let open_queue = msg::msgget(key(&lab), libc::IPC_CREAT | 0o666).unwrap();
    let expected =
        "its mode 666 lets other users in (expected 600); use another --id (or IPCLAB_ID)";
    lab.run("msgq2", &[] as &[&str]).assert_failure(1, expected);
    lab.run("msgq1", &[] as &[&str]).assert_failure(1, expected);
    assert_eq!(stat(open_queue).msg_qnum, 0, "nothing was sent into it");
    msg::ipc_rmid(open_queue).unwrap();
}

/// Runs `program` as user `nobody` (65534) to its end: needs root, as tests in CI run.
fn as_nobody(lab: &Lab, program: &str, args: &[&str]) -> Option<crate::harness::Finished> {
    crate::harness::as_nobody(lab, program, args).map(|command| Running::spawn(command).finish())
}

#[test]
fn another_users_queue_is_refused_even_when_it_lets_us_in() {
    let lab = Lab::new();
    let squat = format!(
        "use IPC::SysV qw(IPC_CREAT); defined(msgget({}, IPC_CREAT|0666)) or die $!",
        key(&lab).raw()
    );
    let Some(made) = as_nobody(&lab, "perl", &["-e", &squat]) else {
        return;
    };
    made.assert_success();
    let squatted = open(&lab);
    let expected = "it belongs to another user (uid 65534, creator 65534); use another --id";
    lab.run("msgq2", &[] as &[&str]).assert_failure(1, expected);
    lab.run("msgq1", &[] as &[&str]).assert_failure(1, expected);
    assert_eq!(stat(squatted).msg_qnum, 0, "nothing was sent into it");
    msg::ipc_rmid(squatted).unwrap();
}

#[test]
fn a_key_we_may_not_use_names_the_id_option() {
    let lab = Lab::new();
    let fake = FakeServer::new(&lab); // root's, mode 0600
    let Some(client) = as_nobody(&lab, "msgq2", &[]) else {
        return;
    };
    client.assert_failure(
        1,
        &format!(
            "msgq2: msgctl(key {}, IPC_STAT): EACCES: Permission denied (another user's \
             queue?); use another --id (or IPCLAB_ID)",
            key(&lab)
        ),
    );
    as_nobody(&lab, "msgq1", &[]).unwrap().assert_failure(
        1,
        "EACCES: Permission denied (another user's queue?); use another --id",
    );
    assert_eq!(stat(fake.queue).msg_qnum, 0);
}

// ---- every wait ends on a signal and at --timeout -------------------------------------------

fn assert_stopped_by(run: &crate::harness::Finished, signal: Signal) {
    assert_eq!(run.code(), Some(128 + signal as i32), "{signal}\n{run}");
    assert!(run.stderr.is_empty(), "{signal}\n{run}");
}

#[test]
fn a_server_waiting_for_a_request_cleans_up_on_each_signal() {
    for signal in SIGNALS {
        let lab = Lab::new();
        let server = start_server(&lab, &[]);
        server.signal(signal);
        assert_stopped_by(&server.finish(), signal);
        assert!(!lock_file(&lab).exists());
    } // each Lab checks that the queue is gone
}

#[test]
fn a_server_waiting_for_its_reply_to_be_taken_cleans_up_on_each_signal() {
    for signal in SIGNALS {
        let lab = Lab::new();
        let (server, _) = server_that_replied(&lab, &[]);
        server.signal(signal);
        assert_stopped_by(&server.finish(), signal);
        assert!(!lock_file(&lab).exists());
    }
}

#[test]
fn a_client_waiting_for_the_reply_ends_on_each_signal() {
    for signal in SIGNALS {
        let lab = Lab::new();
        let fake = FakeServer::new(&lab);
        let client = lab.start("msgq2", &[] as &[&str]);
        client.wait_for_stdout("Sent a request.....");
        client.signal(signal);
        assert_stopped_by(&client.finish(), signal);
        assert_eq!(stat(fake.queue).msg_qnum, 1, "its request is all it left");
    }
}

/// Fills the queue until a message no longer fits (`msg_qbytes`, 16 KiB by default).
fn fill(queue: MsqId) {
    let message = MsgBuf::<128>::with_bytes(3, b"filler\0").unwrap();
    while msg::msgsnd(queue, &message, 128, libc::IPC_NOWAIT).is_ok() {}
}

#[test]
fn a_client_waiting_for_room_in_a_full_queue_ends_on_each_signal() {
    for signal in SIGNALS {
        let lab = Lab::new();
        let fake = FakeServer::new(&lab);
        fill(fake.queue);
        let client = lab.start("msgq2", &["--trace"]);
        client.wait_for_stderr("IPC_STAT"); // the last call before the wait to send
        client.signal(signal);
        let client = client.finish();
        assert_eq!(client.code(), Some(128 + signal as i32), "{client}");
        assert!(client.stdout.is_empty(), "it never sent\n{client}");
    }
}

#[test]
fn every_wait_ends_at_the_timeout() {
    let lab = Lab::new();
    let run = lab.run("msgq1", &["--timeout", "0.3"]);
    run.assert_failure(
        1,
        &format!(
            "msgq1: msgrcv(queue {}, type 1): timed out after 0.3 s (--timeout)",
            key(&lab)
        ),
    );
    assert!(!lock_file(&lab).exists());

    let server = start_server(&lab, &["--timeout", "1"]);
    send_request(open(&lab), me()); // and never take the reply
    let server = server.finish();
    server.assert_failure(1, "waiting for the reply to be taken (queue");
    server.assert_failure(1, "timed out after 1 s (--timeout)");
    assert_eq!(server.lines(), [request_line(me())]);

    let fake = FakeServer::new(&lab);
    let client = lab.run("msgq2", &["--timeout", "0.3"]);
    client.assert_failure(1, "msgq2: msgrcv(queue");
    client.assert_failure(1, "type 2): timed out after 0.3 s (--timeout)");
    assert_eq!(client.stdout(), "Sent a request.....\n");
    fill(fake.queue);
    let client = lab.run("msgq2", &["--timeout", "0.3"]);
    client.assert_failure(1, "type 1): timed out after 0.3 s (--timeout)");
    assert!(client.stdout.is_empty());
}

// ---- many clients at once -------------------------------------------------------------------

#[test]
fn of_many_clients_at_once_one_gets_the_reply_and_each_other_a_clear_error() {
    let lab = Lab::new();
    let server = start_server(&lab, &[]);
    let clients: Vec<Running> = (0..20)
        .map(|_| lab.start("msgq2", &[] as &[&str]))
        .collect();
    let mut replies = 0;
    for client in clients {
        let client = client.finish();
        if client.status.success() {
            assert_eq!(client.stdout(), format!("{}\n", reply_line(server.pid())));
            replies += 1;
        } else {
            assert_eq!(client.code(), Some(1), "{client}");
            // The queue goes once the reply is taken: at any step of a client (its open, its
            // look for earlier replies, its wait), which says so.
            assert!(
                client.stderr.contains("the queue was removed")
                    || client.stderr.contains("no such queue; start msgq1 first"),
                "{client}"
            );
        }
    }
    assert_eq!(replies, 1, "msgq1 answers one request, as the C does");
    let server = server.finish();
    assert_eq!(server.code(), Some(0), "{server}");
    assert!(!lock_file(&lab).exists());
}

// ---- classroom mode -------------------------------------------------------------------------

#[test]
fn stat_prints_the_msqid_ds_fields_after_each_step() {
    let lab = Lab::new();
    let server = start_server(&lab, &["--stat"]);
    server.wait_for_stdout("msg_ctime"); // its first block, before any client
    let client = lab.start("msgq2", &["--stat"]);
    let client_pid = client.pid();
    let client = client.finish();
    client.assert_success();
    let server_pid = server.pid();
    let server = server.finish();
    server.assert_success();

    let key = key(&lab);
    let blocks = |out: &str| -> Vec<(String, String)> {
        out.split("  [msqid_ds after ")
            .skip(1)
            .map(|block| {
                let (step, rest) = block.split_once(']').unwrap();
                (step.to_owned(), rest.to_owned())
            })
            .collect()
    };
    let server_blocks = blocks(&server.stdout());
    let steps: Vec<&str> = server_blocks.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        steps,
        ["msgget", "msgrcv", "msgsnd", "the reply was taken"],
        "{server}"
    );
    for (_, block) in &server_blocks {
        for field in ["msg_qbytes", "msg_stime", "msg_rtime", "msg_ctime"] {
            assert!(block.contains(field), "{field}\n{server}");
        }
        assert!(
            block.contains(&format!("msg_perm   key {key}, uid ")),
            "{server}"
        );
        assert!(block.contains(", mode 0600"), "{server}");
    }
    let client_blocks = blocks(&client.stdout());
    let steps: Vec<&str> = client_blocks.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(steps, ["msgget", "msgsnd", "msgrcv"], "{client}");

    let server_saw = [
        (0, "msg_qnum 0, msg_cbytes 0,".to_string()),
        (0, "msg_stime -, msg_rtime -,".to_string()),
        (1, format!("msg_lrpid {server_pid}")),
        (2, format!("msg_lspid {server_pid}")),
        (3, format!("msg_lrpid {client_pid}")),
    ];
    for (step, field) in server_saw {
        assert!(server_blocks[step].1.contains(&field), "{field}\n{server}");
    }
    // After the client's msgsnd the last sender is the client — or already the server, whose
    // reply may come before the client looks.
    let (_, after_msgsnd) = &client_blocks[1];
    assert!(
        after_msgsnd.contains(&format!("msg_lspid {client_pid}"))
            || after_msgsnd.contains(&format!("msg_lspid {server_pid}")),
        "{client}"
    );
    assert!(!after_msgsnd.contains("msg_stime -"), "{client}");
    // msgq1 removes the queue as soon as the reply is taken: the client may find it gone.
    let taken = format!("msg_lrpid {client_pid}");
    let (_, after_msgrcv) = &client_blocks[2];
    assert!(
        after_msgrcv.contains(&taken)
            || after_msgrcv.starts_with(" msqid ") && after_msgrcv.contains(": the queue is gone"),
        "{client}"
    );
    // The protocol's own lines stay whole.
    assert!(
        client.stdout().contains(&reply_line(server_pid)),
        "{client}"
    );
    assert!(
        server.stdout().contains(&request_line(client_pid)),
        "{server}"
    );
}

/// The traced calls of a run: `(name, first argument)` per `[PROGRAM PID] name(args) = …` line.
fn traced_calls(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|line| line.split_once("] ").map(|(_, call)| call))
        .map(|call| {
            let (head, _) = call.split_once(" = ").unwrap();
            call_shape(head)
        })
        .collect()
}

/// `msgctl(7, IPC_STAT` for msgctl (the command matters), else the name and first argument.
fn call_shape(call: &str) -> String {
    let (name, args) = call.split_once('(').unwrap();
    let mut args = args.split(", ");
    let first = args.next().unwrap_or_default();
    match name {
        "msgctl" => format!("msgctl({first}, {}", args.next().unwrap_or_default()),
        _ => format!("{name}({first}"),
    }
}

#[test]
fn trace_names_each_call_with_real_values_in_the_order_strace_sees_them() {
    let lab = Lab::new();
    let strace_log = lab.dir().join("strace.log");
    let strace_args = [
        "-f",
        "-qq",
        "-e",
        "trace=msgget,msgsnd,msgrcv,msgctl",
        "-o",
        strace_log.to_str().unwrap(),
        exe("msgq1").unwrap(),
        "--trace",
    ];
    let server = lab.start("strace", &strace_args);
    wait_until("msgq1's queue", || queue_exists(&lab));
    let client = lab.start("msgq2", &["--trace"]);
    let client_pid = client.pid();
    let client = client.finish();
    assert_eq!(client.code(), Some(0), "{client}");
    let server = server.finish();
    assert_eq!(server.code(), Some(0), "{server}");

    let queue = traced_calls(&client.stderr)[0].clone();
    let id = server
        .stderr
        .lines()
        .next()
        .and_then(|line| line.rsplit(" = ").next())
        .unwrap()
        .to_owned();
    assert_eq!(queue, format!("msgget({}", key(&lab)));
    assert!(
        client.stderr.contains(&format!(
            "] msgsnd({id}, {{type 1, \"This is a request from {client_pid}.\"}}, 128, IPC_NOWAIT) = 0"
        )),
        "{client}"
    );
    assert!(
        client.stderr.contains(&format!(
            "] msgrcv({id}, &msg, 128, 2, IPC_NOWAIT|MSG_NOERROR) = 128 {{type 2, \"This is a reply from "
        )),
        "{client}"
    );
    // msgq1 runs under strace: its PID is the one its trace names.
    let (whose, _) = server.stderr.split_once("] ").unwrap();
    assert!(whose.starts_with("[msgq1 "), "{server}");
    assert!(
        server.stderr.lines().all(|l| l.starts_with(whose)),
        "{server}"
    );
    assert!(
        server.stderr.starts_with(&format!(
            "{whose}] msgget({}, IPC_CREAT|IPC_EXCL|0600) = {id}\n",
            key(&lab)
        )),
        "{server}"
    );

    // strace sees each wait as many calls with IPC_NOWAIT; the trace as one: compare the runs.
    let traced = traced_calls(&server.stderr);
    let log = std::fs::read_to_string(&strace_log).unwrap();
    let mut straced: Vec<String> = log
        .lines()
        // `PID  call(…)`: strace pads the PID to five columns
        .filter_map(|line| line.split_once(' ').map(|(_, call)| call.trim_start()))
        .filter(|call| call.starts_with("msg"))
        .map(call_shape)
        .collect();
    straced.dedup();
    let mut traced_runs = traced.clone();
    traced_runs.dedup();
    assert_eq!(
        traced_runs, straced,
        "trace:\n{}\nstrace:\n{log}",
        server.stderr
    );
    assert_eq!(
        traced,
        [
            format!("msgget({}", key(&lab)),
            format!("msgrcv({id}"),
            format!("msgctl({id}, IPC_STAT"), // who sent the request: msg_lspid
            format!("msgsnd({id}"),
            format!("msgctl({id}, IPC_STAT"),
            format!("msgctl({id}, IPC_RMID"),
        ]
    );
}

// ---- the decoder on arbitrary bytes ---------------------------------------------------------

proptest! {
    #[test]
    fn any_bytes_received_decode_without_reading_past_the_buffer(bytes in prop::collection::vec(any::<u8>(), 0..300), len in 0usize..400) {
        // A buffer and any length a msgrcv might claim: never read past either.
        if let Some(buffer) = MsgBuf::<128>::with_bytes(REQUEST, &bytes) {
            let received = buffer.received(len);
            prop_assert_eq!(received.len(), len.min(128));
            match ipclab::layout::text::decode_text(received) {
                Ok(text) => prop_assert!(!text.chars().any(char::is_control)),
                Err(bad) => prop_assert_eq!(bad.len, received.len()),
            }
        }
    }

    #[test]
    fn every_request_text_round_trips(pid in 1i32..i32::MAX) {
        let text = message::request_text(Pid::from_raw(pid));
        let message = message::Message::new(REQUEST, &text).unwrap();
        prop_assert_eq!(ipclab::layout::text::decode_text(message.received(128)), Ok(text));
    }
}

#[test]
fn a_client_of_a_lockless_server_that_took_its_request_and_ended_fails_instead_of_waiting() {
    // A C server (no lock of ours) takes the request and is killed before it replies: the
    // queue says so — empty, and its last receiver no longer exists.
    let lab = Lab::new();
    let fake = FakeServer::new(&lab);
    let client = lab.start("msgq2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let script = format!(
        "my $id = msgget({}, 0) // die \"msgget: $!\"; msgrcv($id, my $m, 128, 1, 0) or die \
         \"msgrcv: $!\"",
        key(&lab).raw()
    );
    let taker = lab.start("perl", &["-e", &script]);
    let taker_pid = taker.pid();
    taker.finish().assert_success();
    client.finish().assert_failure(
        1,
        &format!(
            "msgq2: msgrcv(queue {}, type 2): pid {taker_pid}, which took the request, ended \
             without replying (killed?) and left its queue behind: make ipcclean ID={}",
            key(&lab),
            lab.id()
        ),
    );
    assert_eq!(stat(fake.queue).msg_qnum, 0);
}

#[test]
fn a_c_server_that_took_over_a_killed_servers_queue_is_served_by_the_client() {
    // msgq1 is killed (its queue and lock file stay, the file naming that queue); the course's
    // C server, whose msgget has no IPC_EXCL, takes the queue over and waits in msgrcv. The
    // dead lock file must not outvote the kernel: msgq2 is served.
    let lab = Lab::new();
    let killed = start_server(&lab, &[]);
    killed.signal(Signal::SIGKILL);
    let _ = killed.finish();
    let script = format!(
        "use IPC::SysV qw(IPC_CREAT); $| = 1; \
         my $q = msgget({}, IPC_CREAT|0600) // die $!; print \"serving\\n\"; \
         msgrcv($q, my $m, 128, 1, 0) or die $!; \
         msgsnd($q, pack('l! a128', 2, \"This is a reply from $$.\"), 0) or die $!;",
        key(&lab).raw()
    );
    let c_server = lab.start("perl", &["-e", &script]);
    c_server.wait_for_stdout("serving");
    wait_until("the C server in msgrcv", || {
        std::fs::read_to_string(format!("/proc/{}/syscall", c_server.pid()))
            .is_ok_and(|s| s.starts_with(&format!("{} ", libc::SYS_msgrcv)))
    });
    let client = lab.run("msgq2", &[] as &[&str]);
    client.assert_success();
    assert_eq!(client.stdout(), format!("{}\n", reply_line(c_server.pid())));
    c_server.finish().assert_success();
    msg::ipc_rmid(open(&lab)).unwrap(); // what the C server does once its reply is taken
    std::fs::remove_file(lock_file(&lab)).unwrap(); // left by the killed msgq1
}
