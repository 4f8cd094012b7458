//! The shared helpers under broken outputs and signals: what a careless or hostile user does to
//! any of the programs (closed and full outputs, every signal, absurd options).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, ExitStatus, Stdio};
use std::time::Instant;

use nix::errno::Errno;
use nix::fcntl::{open, OFlag};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::unistd::Pid;

use crate::harness::{children_of, wait_until, Lab, DEADLINE};

/// A process started here without the harness (its stdout or stderr is a file or a pipe of the
/// test's own): killed and reaped if the test ends first, say on a failed assertion.
struct Guarded(Child);

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `child` to end within the [`DEADLINE`]; kills it and fails the test otherwise.
fn wait_ended(child: &mut Child, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {} s", DEADLINE.as_secs());
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Runs `program args` with stdout and stderr sent to `/dev/full`; returns its exit status.
fn run_into_dev_full(lab: &Lab, program: &str, args: &[&str]) -> ExitStatus {
    let mut child = lab
        .command(program, args)
        .stdout(File::create("/dev/full").unwrap())
        .stderr(File::create("/dev/full").unwrap())
        .spawn()
        .map(Guarded)
        .unwrap();
    wait_ended(&mut child.0, program)
}

#[test]
fn an_unwritable_stderr_is_never_a_panic() {
    let lab = Lab::new();
    let missing = lab.dir().join("no-such-dir");
    let missing = missing.to_str().unwrap();
    // 101 is Rust's panic status; each must fail the suite's way instead.
    let fifoc = run_into_dev_full(&lab, "fifoc", &["--dir", missing]);
    assert_eq!(fifoc.code(), Some(1), "fifoc --dir missing 2>/dev/full");
    let mymore = run_into_dev_full(&lab, "mymore", &["--", "no-such-command-ipclab"]);
    assert_eq!(mymore.code(), Some(127), "mymore -- lss 2>/dev/full");
    let pipe = run_into_dev_full(&lab, "pipe", &[]);
    assert_eq!(pipe.code(), Some(1), "pipe >/dev/full 2>/dev/full");
}

#[test]
fn a_server_whose_stderr_is_full_goes_on_serving() {
    let lab = Lab::new();
    let mut server = lab
        .command("fifos", &[] as &[&str])
        .stdout(Stdio::null())
        .stderr(File::create("/dev/full").unwrap())
        .spawn()
        .map(Guarded)
        .unwrap();
    let fifo = lab.dir().join(".fifo");
    wait_until(".fifo to appear", || fifo.exists());
    // A 5-byte request: the server warns about it (on a full stderr) and must not die of it.
    let writer = open(&fifo, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()).unwrap();
    nix::unistd::write(&writer, b"hello").unwrap();
    drop(writer);
    lab.run("fifoc", &["--timeout", "10"]).assert_success();
    kill(Pid::from_raw(server.0.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(wait_ended(&mut server.0, "fifos").code(), Some(0));
}

#[test]
fn a_failed_stdout_is_reported_once_not_by_parent_and_child() {
    let lab = Lab::new();
    for program in ["pipe", "sync"] {
        let mut child = lab
            .command(program, &[] as &[&str])
            .stdout(File::create("/dev/full").unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .map(Guarded)
            .unwrap();
        let status = wait_ended(&mut child.0, program);
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.0.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(status.code(), Some(1), "{program}: {stderr}");
        assert_eq!(
            stderr,
            format!("{program}: writing to stdout: ENOSPC: No space left on device\n"),
            "{program} >/dev/full"
        );
    }
}

#[test]
fn an_absurd_timeout_is_not_a_panic() {
    let lab = Lab::new();
    lab.run("fifoc", &["--timeout", "1e19"])
        .assert_failure(1, "no such FIFO");
    lab.run("fifoc", &["--timeout", "1e400"])
        .assert_failure(2, "--timeout");
}

#[test]
fn sync_gives_up_waiting_for_a_stopped_child_at_its_timeout() {
    let lab = Lab::new();
    let sync = lab.start("sync", &["--loops", "1000000", "--timeout", "1"]);
    sync.wait_for_stdout("Child: Tell to parent");
    let child = children_of(sync.pid());
    assert_eq!(child.len(), 1, "sync should have one child");
    kill(child[0], Signal::SIGSTOP).unwrap();
    // The parent gives up at its timeout and ends the stuck child itself (nobody sends SIGCONT).
    let run = sync.finish();
    run.assert_failure(1, "sync: WAIT_CHILD: timed out after 1 s (--timeout)");
}

// ---- a write that blocks ends on a signal too ----------------------------------------------

/// A C-shaped request naming a reply FIFO that does not exist: the server prints
/// `Received request: …` for it, then warns that no reply was sent.
fn request_without_reply_fifo(serial: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; 160];
    let name = format!(".fifo{}", 900_000_000 + serial);
    bytes[..name.len()].copy_from_slice(name.as_bytes());
    let text = format!("request number {serial} that fills the server's stdout");
    bytes[32..32 + text.len()].copy_from_slice(text.as_bytes());
    bytes
}

fn is_writable(fd: &OwnedFd) -> bool {
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
    nix::poll::poll(&mut fds, PollTimeout::ZERO).unwrap() > 0
}

#[test]
fn a_server_blocked_on_a_full_stdout_still_stops_on_sigterm() {
    let lab = Lab::new();
    // The server's stdout: a pipe that the test holds but never reads.
    let (stdout_reader, stdout_writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    let watch = stdout_writer.try_clone().unwrap();
    let mut server = lab
        .command("fifos", &[] as &[&str])
        .stdout(Stdio::from(stdout_writer))
        .stderr(Stdio::null())
        .spawn()
        .map(Guarded)
        .unwrap();
    let fifo = lab.dir().join(".fifo");
    wait_until(".fifo to appear", || fifo.exists());
    let requests = open(
        &fifo,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    // Send requests until the server stops taking them: then its stdout is full and it is
    // blocked writing there (it reads .fifo whenever it is not).
    let mut serial = 0;
    wait_until("the server to block on its full stdout", || {
        match nix::unistd::write(&requests, &request_without_reply_fifo(serial)) {
            Ok(_) => serial += 1,
            Err(Errno::EAGAIN) => return !is_writable(&watch),
            Err(e) => panic!("write(.fifo): {e}"),
        }
        false
    });
    kill(Pid::from_raw(server.0.id() as i32), Signal::SIGTERM).unwrap();
    let status = wait_ended(&mut server.0, "fifos blocked on stdout");
    assert_eq!(
        status.code(),
        Some(0),
        "fifos stops on SIGTERM with status 0"
    );
    assert!(!fifo.exists(), "the blocked server left .fifo behind");
    drop(stdout_reader);
}

// ---- a signal decides the exit status, whatever it interrupted -----------------------------

#[test]
fn a_signal_in_a_slow_motion_pause_ends_the_program_quietly_with_128_plus_signal() {
    let lab = Lab::new();
    let mipc = lab.start("mipc", &["--slow", "0.5"]);
    // The pause before the second call (mmap) has begun once the first call is traced.
    mipc.wait_for_stderr("open(\"/dev/zero\"");
    mipc.signal(Signal::SIGTERM);
    let run = mipc.finish();
    assert_eq!(run.code(), Some(143), "{run}");
    assert!(
        !run.stderr.contains("mipc:"),
        "no error line after a signal\n{run}"
    );
}

#[test]
fn a_child_stopped_by_a_signal_is_reported_by_its_parent_in_one_line() {
    let lab = Lab::new();
    let mipc = lab.start("mipc", &["--loops", "100000000"]);
    mipc.wait_for_stdout("Child : counter=1");
    let child = children_of(mipc.pid());
    assert_eq!(child.len(), 1, "mipc should have one child");
    kill(child[0], Signal::SIGTERM).unwrap();
    let run = mipc.finish();
    run.assert_failure(1, "was stopped by SIGTERM");
    assert_eq!(run.stderr.lines().count(), 1, "one error line\n{run}");
}

#[test]
fn a_one_page_pipe_with_room_left_takes_the_whole_output() {
    let lab = Lab::new();
    let server = lab.start("fifos", &["--count", "1"]);
    wait_until(".fifo to appear", || lab.dir().join(".fifo").exists());
    // fifoc's stdout: a pipe of one page (4096 bytes) that is read only once fifoc has ended.
    // Its two writes fit; after the first, poll no longer calls the pipe writable.
    let (reader, writer) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
    nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    let mut client = lab
        .command("fifoc", &[] as &[&str])
        .stdout(Stdio::from(writer))
        .stderr(Stdio::null())
        .spawn()
        .map(Guarded)
        .unwrap();
    assert_eq!(
        wait_ended(&mut client.0, "fifoc into a one-page pipe").code(),
        Some(0)
    );
    let mut output = String::new();
    std::io::Read::read_to_string(&mut File::from(reader), &mut output).unwrap();
    assert!(
        output.starts_with("Sent a request.....Received reply: "),
        "{output}"
    );
    server.finish().assert_success();
}
