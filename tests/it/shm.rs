//! System V shared memory: `shm` (where things live in memory) and the `sipc1`/`sipc2` pair,
//! also against a raw C-shaped peer that the test plays through the library's public wrappers.

use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::time::{Duration, Instant};

use ipclab::rt::wait::Deadline;
use ipclab::segment::{Attached, Awaited, Segment};
use ipclab::sipc::{Sipc, EMPTY, REQUEST, SIPC_SIZE};
use ipclab::sys::ipc::Key;
use ipclab::sys::shm::{self, shmctl, shmget, ShmId};
use nix::fcntl::OFlag;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use proptest::prelude::*;

use crate::harness::{exe, is_running, step_to, wait_until, Finished, Lab, Running, Stepped};

// ---- /proc/sysvipc/shm and /proc/PID/maps ---------------------------------------------------

/// One line of `/proc/sysvipc/shm`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    key: i64,
    shmid: i32,
    perms: u32,
    size: usize,
    cpid: i32,
    nattch: u64,
}

fn rows() -> Vec<Row> {
    let text = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    text.lines()
        .skip(1)
        .map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Row {
                key: f[0].parse().unwrap(),
                shmid: f[1].parse().unwrap(),
                perms: u32::from_str_radix(f[2], 8).unwrap(),
                size: f[3].parse().unwrap(),
                cpid: f[4].parse().unwrap(),
                nattch: f[6].parse().unwrap(),
            }
        })
        .collect()
}

/// The lab's segment (key 0x9000+ID), if it exists.
fn segment_of(lab: &Lab) -> Option<Row> {
    let key = i64::from(Key::segment(lab.id()).raw());
    rows().into_iter().find(|row| row.key == key)
}

/// The segments that process `pid` made and that still exist.
fn segments_made_by(pid: Pid) -> Vec<Row> {
    rows()
        .into_iter()
        .filter(|row| row.cpid == pid.as_raw())
        .collect()
}

/// Waits until the lab's segment exists with `nattch` processes attached.
fn wait_for_attached(lab: &Lab, nattch: u64) {
    wait_until(&format!("segment with {nattch} attached"), || {
        segment_of(lab).is_some_and(|row| row.nattch == nattch)
    });
}

/// One mapping of `/proc/PID/maps`.
#[derive(Debug)]
struct Mapping {
    start: usize,
    end: usize,
    perms: String,
    path: String,
}

fn parse_maps_line(line: &str) -> Mapping {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (start, end) = fields[0].split_once('-').unwrap();
    Mapping {
        start: usize::from_str_radix(start, 16).unwrap(),
        end: usize::from_str_radix(end, 16).unwrap(),
        perms: fields[1].to_owned(),
        path: fields.get(5..).map(|p| p.join(" ")).unwrap_or_default(),
    }
}

// ---- shm -------------------------------------------------------------------------------------

/// The four lines of the C version: prefix and the size between its two addresses.
const SHM_LINES: [(&str, usize); 4] = [
    ("Array[] from ", 40000),
    ("Stack around ", 0),
    ("Malloced from ", 100000),
    ("Shared memory attached from ", 100000),
];

/// What each of shm's lines says: the range of addresses [start, start+size) it names.
fn shm_ranges(lines: &[&str]) -> Vec<(usize, usize)> {
    assert_eq!(lines.len(), 4, "{lines:?}");
    let hex = |text: &str| {
        let digits = text
            .strip_prefix("0x")
            .unwrap_or_else(|| panic!("{text:?}"));
        usize::from_str_radix(digits, 16).unwrap()
    };
    lines
        .iter()
        .zip(SHM_LINES)
        .map(|(line, (prefix, size))| {
            let rest = line
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("{line:?}"));
            let mut words = rest.split(' ');
            let start = hex(words.next().unwrap());
            if size == 0 {
                assert_eq!(words.next(), None, "{line:?}");
                return (start, start + 1);
            }
            assert_eq!(words.next(), Some("to"), "{line:?}");
            let end = hex(words.next().unwrap());
            assert_eq!(end - start, size, "B = A + size in {line:?}");
            (start, end)
        })
        .collect()
}

#[test]
fn shm_prints_the_four_lines_of_the_c_version_and_removes_its_segment() {
    let lab = Lab::new();
    let run = lab.start("shm", &[] as &[&str]);
    let pid = run.pid();
    let run = run.finish();
    run.assert_success();
    let stdout = run.stdout();
    shm_ranges(&stdout.lines().collect::<Vec<_>>());
    assert!(stdout.ends_with('\n'));
    assert_eq!(segments_made_by(pid), [], "the IPC_PRIVATE segment is left");
}

/// Whether `mapping` is the kind of region `what` (a line of shm) must lie in; `exe` is the
/// binary's path. The array may lie in the binary's data or in the bss after it, which the
/// kernel maps as anonymous memory right after the file's last page.
fn region_fits(what: usize, mapping: &Mapping, exe: &str) -> bool {
    match what {
        0 => mapping.perms == "rw-p" && (mapping.path == exe || mapping.path.is_empty()),
        1 => mapping.path == "[stack]",
        2 => mapping.path == "[heap]",
        _ => mapping.perms == "rw-s" && mapping.path.starts_with("/SYSV00000000"),
    }
}

#[test]
fn shm_maps_shows_the_mapping_that_holds_each_address() {
    let lab = Lab::new();
    let run = lab.run("shm", &["--maps"]);
    run.assert_success();
    let stdout = run.stdout();
    let mut lines: Vec<&str> = Vec::new();
    let mut maps: Vec<Vec<Mapping>> = Vec::new();
    for line in stdout.lines() {
        match line.strip_prefix("    ") {
            Some(mapping) => maps.last_mut().unwrap().push(parse_maps_line(mapping)),
            None => {
                lines.push(line);
                maps.push(Vec::new());
            }
        }
    }
    let exe = exe("shm").unwrap();
    for (what, (start, end)) in shm_ranges(&lines).into_iter().enumerate() {
        let held = &maps[what];
        assert!(
            !held.is_empty(),
            "no mapping under {:?}\n{run}",
            lines[what]
        );
        // The mappings are contiguous and cover the whole range, each of the right kind.
        assert!(
            held[0].start <= start && end <= held[held.len() - 1].end,
            "{run}"
        );
        for pair in held.windows(2) {
            assert_eq!(pair[0].end, pair[1].start, "{run}");
        }
        for mapping in held {
            assert!(
                region_fits(what, mapping, exe),
                "{mapping:?} for {:?}",
                lines[what]
            );
        }
    }
    // The array: at least partly in the binary's own data (the bss follows it).
    assert!(maps[0].iter().any(|m| m.path == exe), "{run}");
}

#[test]
fn shm_addresses_lie_in_the_regions_of_the_real_proc_maps() {
    let lab = Lab::new();
    let stepped = Stepped::start(&lab, "shm");
    // Paused before shmdt: everything is in place. Read its maps from outside.
    let pid = step_to(&stepped, &["shmget(IPC_PRIVATE", "shmat(", "shmdt("]);
    let maps: Vec<Mapping> = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .map(parse_maps_line)
        .collect();
    let out = stepped.screen();
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| SHM_LINES.iter().any(|(prefix, _)| l.starts_with(prefix)))
        .collect();
    let ranges = shm_ranges(&lines);

    let exe = exe("shm").unwrap();
    let holding = |start: usize, end: usize| {
        maps.iter()
            .find(|m| m.start <= start && end <= m.end)
            .unwrap_or_else(|| panic!("no one mapping holds {start:#x}..{end:#x}: {maps:#?}"))
    };
    // The array: in the binary's writable data or the anonymous bss right after it.
    let last_of_exe = maps.iter().rposition(|m| m.path == exe).unwrap();
    let data_start = maps
        .iter()
        .find(|m| m.path == exe && m.perms == "rw-p")
        .unwrap()
        .start;
    let next = maps.get(last_of_exe + 1);
    let bss_end = match next {
        Some(m) if m.start == maps[last_of_exe].end && m.path.is_empty() && m.perms == "rw-p" => {
            m.end
        }
        _ => maps[last_of_exe].end,
    };
    let (array_start, array_end) = ranges[0];
    assert!(
        data_start <= array_start && array_end <= bss_end,
        "array {array_start:#x}..{array_end:#x} not in data+bss {data_start:#x}..{bss_end:#x}"
    );
    assert_eq!(holding(ranges[1].0, ranges[1].1).path, "[stack]");
    assert_eq!(holding(ranges[2].0, ranges[2].1).path, "[heap]");
    let segment = holding(ranges[3].0, ranges[3].1);
    assert!(segment.path.starts_with("/SYSV00000000"), "{segment:?}");
    assert_eq!(segment.perms, "rw-s");

    // Ctrl-C at the last pause: the segment is still removed (and nothing hangs).
    nix::sys::signal::kill(pid, Signal::SIGINT).unwrap();
    let run = stepped.script.finish();
    assert!(matches!(run.code(), Some(0 | 130)), "{run}");
    assert!(!run.stdout().contains("panicked"), "{run}");
    assert_eq!(segments_made_by(pid), [], "{run}");
}

#[test]
fn shm_removes_its_segment_when_a_signal_ends_a_step() {
    for signal in [
        Signal::SIGHUP,
        Signal::SIGINT,
        Signal::SIGQUIT,
        Signal::SIGTERM,
    ] {
        let lab = Lab::new();
        let stepped = Stepped::start(&lab, "shm");
        let pid = step_to(&stepped, &["shmget(", "shmat("]); // the segment exists now
        assert_eq!(segments_made_by(pid).len(), 1);
        nix::sys::signal::kill(pid, signal).unwrap();
        let run = stepped.script.finish();
        assert_eq!(run.code(), Some(128 + signal as i32), "{signal}\n{run}");
        assert_eq!(segments_made_by(pid), [], "{signal}\n{run}");
    }
}

/// Runs `shm ARGS` through `sh -c` (for redirections) and returns the run and shm's PID, taken
/// from its `--trace` lines.
fn shm_through_shell(lab: &Lab, shell: &str) -> (Finished, Option<Pid>) {
    let run = lab.run("sh", &["-c", shell, exe("shm").unwrap()]);
    let pid = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("[shm ")?.split(']').next()?.parse().ok())
        .map(Pid::from_raw);
    (run, pid)
}

#[test]
fn shm_with_a_closed_or_full_stdout_fails_cleanly_and_leaves_nothing() {
    let lab = Lab::new();
    // The reader goes after 3 lines, while shm pauses before shmget and shmat (--slow): the
    // 4th line, after the segment is made, finds no reader. A quiet end, as `| head` wants.
    let (run, pid) = shm_through_shell(&lab, r#""$0" --slow 0.5 | head -n 3"#);
    assert!(run.status.success(), "{run}");
    assert_eq!(run.lines().len(), 3, "{run}");
    assert!(run.stderr.lines().all(|l| l.starts_with("[shm ")), "{run}");
    assert!(run.stderr.contains("shmat("), "{run}");
    assert_eq!(segments_made_by(pid.unwrap()), [], "{run}");

    let (run, _) = shm_through_shell(&lab, r#"exec "$0" --trace >/dev/full"#);
    run.assert_failure(1, "shm: writing to stdout: ENOSPC: No space left on device");
}

// ---- sipc1 / sipc2: the pair -------------------------------------------------------------------

fn request_line(client: Pid) -> String {
    format!("Received request: This is a request from {client}......Replied.")
}

fn reply_line(server: Pid) -> String {
    format!("Sent a request.....Received reply: This is a reply from {server}.")
}

#[test]
fn server_first_then_client_exchange_the_c_texts_and_leave_nothing() {
    let lab = Lab::new();
    let server = lab.start("sipc1", &[] as &[&str]);
    wait_for_attached(&lab, 1);
    let client = lab.start("sipc2", &[] as &[&str]);
    let client_pid = client.pid();
    let client = client.finish();
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(server.pid())], "{client}");
    let server = server.finish();
    server.assert_success();
    assert_eq!(server.lines(), [request_line(client_pid)], "{server}");
}

#[test]
fn client_first_then_server_exchange_the_c_texts_and_leave_nothing() {
    let lab = Lab::new();
    let client = lab.start("sipc2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let client_pid = client.pid();
    let server = lab.start("sipc1", &[] as &[&str]);
    let server_pid = server.pid();
    let server = server.finish();
    server.assert_success();
    assert_eq!(server.lines(), [request_line(client_pid)], "{server}");
    let client = client.finish();
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(server_pid)], "{client}");
}

// ---- the C layout: the test plays the C peer -------------------------------------------------

/// The test as a C program: a segment made or opened with a raw `shmget`, attached, and read and
/// written at the C's offsets (flag at 0, text at 4).
struct CPeer {
    id: ShmId,
    attached: Attached<'static>,
}

impl CPeer {
    /// `shmget(key, size, IPC_CREAT|mode)` and `shmat`, as the C programs do.
    fn create(lab: &Lab, size: usize, mode: i32) -> CPeer {
        let id = shmget(Key::segment(lab.id()), size, libc::IPC_CREAT | mode).unwrap();
        CPeer {
            id,
            attached: Attached::attach(id).unwrap(),
        }
    }

    /// The C's `int *flag = ptr; char *text = ptr + sizeof(int);`.
    fn area(&self) -> &Sipc {
        let area = self.attached.sipc().unwrap();
        let base = self.attached.addr() as usize;
        assert_eq!(&area.flag as *const _ as usize, base, "flag at offset 0");
        assert_eq!(area.text.as_ptr() as usize, base + 4, "text at offset 4");
        area
    }

    /// `strcpy(text, bytes)` without the NUL: the caller adds it if it wants one.
    fn write_text(&self, bytes: &[u8]) {
        self.area().write_bytes(bytes);
    }

    fn text(&self) -> Vec<u8> {
        self.area().text_bytes().to_vec()
    }

    fn wait_for_flag(&self, value: i32) {
        wait_until(&format!("flag {value}"), || {
            self.area().flag.load(Acquire) == value
        });
    }

    /// `shmctl(shmid, IPC_RMID, NULL)` and detach.
    fn remove(self) {
        shmctl(self.id, libc::IPC_RMID, None).unwrap();
    }
}

/// `text` as the C leaves it in the field: the bytes, then a NUL.
fn c_string(text: &str) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    bytes
}

#[test]
fn a_raw_c_request_gets_a_reply_and_the_segment_is_removed_at_once() {
    let lab = Lab::new();
    let server = lab.start("sipc1", &[] as &[&str]);
    wait_for_attached(&lab, 1);
    let client = CPeer::create(&lab, SIPC_SIZE, 0o600);
    client.write_text(&c_string("This is a request from 4242."));
    client.area().flag.store(REQUEST, Release);
    client.wait_for_flag(EMPTY);
    let reply = c_string(&format!("This is a reply from {}.", server.pid()));
    assert_eq!(client.text()[..reply.len()], reply);
    // Marked for removal before the reply: the key is free, the memory still ours to read.
    assert_eq!(segment_of(&lab), None);
    let row = rows().into_iter().find(|r| r.shmid == client.id.0).unwrap();
    assert_ne!(row.perms & shm::SHM_DEST, 0, "{row:?}");

    let server = server.finish();
    server.assert_success();
    assert_eq!(
        server.lines(),
        ["Received request: This is a request from 4242......Replied."]
    );
    let id = client.id;
    drop(client); // the last detach frees it
    assert!(rows().iter().all(|r| r.shmid != id.0));
}

#[test]
fn the_client_speaks_the_c_layout_to_a_raw_server_that_starts_second() {
    let lab = Lab::new();
    let client = lab.start("sipc2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let server = CPeer::create(&lab, SIPC_SIZE, 0o600); // finds the client's segment
    server.wait_for_flag(REQUEST);
    let request = c_string(&format!("This is a request from {}.", client.pid()));
    assert_eq!(server.text()[..request.len()], request);
    server.write_text(&c_string("This is a reply from 4242."));
    server.area().flag.store(EMPTY, Release);
    let client = client.finish();
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(Pid::from_raw(4242))]);
    // Removing it is the server's job (the C server does after its sleep(1)).
    assert_eq!(segment_of(&lab).map(|r| r.nattch), Some(1));
    server.remove();
}

// ---- nothing left, whatever ends the wait ----------------------------------------------------

#[test]
fn either_side_alone_times_out_and_removes_the_segment() {
    for (program, waiting, stdout) in [
        ("sipc1", "waiting for a request", ""),
        ("sipc2", "waiting for the reply", "Sent a request.....\n"),
    ] {
        let lab = Lab::new();
        let run = lab.run(program, &["--timeout", "0.3"]);
        let key = Key::segment(lab.id());
        let message = format!("{program}: {waiting} (segment {key}): timed out after 0.3 s");
        run.assert_failure(1, &(message + " (--timeout)"));
        assert_eq!(run.stdout(), stdout, "{run}");
    }
}

const SIGNALS: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
];

fn stopped_quietly(run: &Finished, signal: Signal) {
    assert_eq!(run.code(), Some(128 + signal as i32), "{signal}\n{run}");
    assert!(run.stderr.is_empty(), "{signal}\n{run}");
}

#[test]
fn a_waiting_server_stopped_by_any_signal_removes_the_segment() {
    for signal in SIGNALS {
        let lab = Lab::new();
        let server = lab.start("sipc1", &[] as &[&str]);
        wait_for_attached(&lab, 1);
        server.signal(signal);
        stopped_quietly(&server.finish(), signal);
    } // each Lab checks that the segment is gone
}

#[test]
fn a_waiting_client_stopped_by_any_signal_removes_the_segment() {
    for signal in SIGNALS {
        let lab = Lab::new();
        let client = lab.start("sipc2", &[] as &[&str]);
        client.wait_for_stdout("Sent a request.....");
        client.signal(signal);
        let client = client.finish();
        stopped_quietly(&client, signal);
        assert_eq!(client.stdout().trim_end(), "Sent a request.....");
    }
}

/// A sipc1 whose liveness lock lies in a directory of its own (`IPCLAB_LOCK_DIR`), named `n`:
/// like a C server, it is not kept off the key by the sipc1s of the test.
fn server_with_own_lock(lab: &Lab, n: usize, args: &[&str]) -> Running {
    let locks = lab.dir().join(format!("locks{n}"));
    std::fs::create_dir_all(&locks).unwrap();
    let mut command = lab.command("sipc1", args);
    command.env("IPCLAB_LOCK_DIR", locks);
    Running::spawn(command)
}

#[test]
fn a_second_server_with_another_lock_is_refused_naming_the_first() {
    // A C sipc1 (or a sipc1 with another IPCLAB_LOCK_DIR) takes no lock of ours: the
    // segment itself shows it waiting there, and two servers would both answer a request.
    let lab = Lab::new();
    let first = lab.start("sipc1", &[] as &[&str]);
    wait_for_attached(&lab, 1);
    let second = server_with_own_lock(&lab, 2, &[]).finish();
    second.assert_failure(
        1,
        &format!(
            "sipc1: shmget(key {}): the segment is in use by pid {} (sipc1), attached with no \
             request waiting (another server?); stop it first, or use another --id (or \
             IPCLAB_ID)",
            Key::segment(lab.id()),
            first.pid()
        ),
    );
    assert_eq!(
        segment_of(&lab).map(|r| r.nattch),
        Some(1),
        "left to the first"
    );
    let client = lab.run("sipc2", &[] as &[&str]);
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(first.pid())]);
    first.finish().assert_success();
}

#[test]
fn a_server_stopped_while_a_c_client_is_attached_leaves_the_segment_to_it() {
    let lab = Lab::new();
    let server = lab.start("sipc1", &[] as &[&str]);
    wait_for_attached(&lab, 1);
    let client = CPeer::create(&lab, SIPC_SIZE, 0o600);
    wait_for_attached(&lab, 2);
    server.signal(Signal::SIGTERM);
    stopped_quietly(&server.finish(), Signal::SIGTERM);
    assert_eq!(segment_of(&lab).map(|r| r.nattch), Some(1));
    client.remove();
}

#[test]
fn either_side_stopped_at_a_step_leaves_nothing() {
    for program in ["sipc1", "sipc2"] {
        for calls in [&["shmget("][..], &["shmget(", "shmat("]] {
            let lab = Lab::new();
            let stepped = Stepped::start(&lab, program);
            let pid = step_to(&stepped, calls);
            nix::sys::signal::kill(pid, Signal::SIGTERM).unwrap();
            let run = stepped.script.finish();
            assert_eq!(run.code(), Some(143), "{program} before {calls:?}\n{run}");
        } // the Lab checks that nothing is left
    }
}

const ORPHANED: &str =
    "the segment was removed (IPC_RMID) and nobody else is attached: no peer can reach it any more";
const NO_CLIENT: &str = "the segment was removed (IPC_RMID) and holds no request: no client can \
                         reach it any more (another server answered, or it was removed with ipcrm)";

/// A sipc1 stepped (`--step`) up to the `IPC_RMID` it makes once it has found a live request
/// of a sipc2: returns both and the server's PID.
fn server_stopped_before_ipc_rmid(lab: &Lab) -> (Stepped, Running, Pid) {
    let stepped = Stepped::start(lab, "sipc1");
    step_to(&stepped, &["shmget(", "shmat("]);
    stepped.press_enter(); // shmat: then it waits for a request
    let client = lab.start("sipc2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let (_, call) = stepped.prompt(3);
    assert!(call.contains(", IPC_STAT, &buf)"), "{call}"); // is the client still there?
    stepped.press_enter();
    let (server_pid, call) = stepped.prompt(4);
    assert!(call.contains(", IPC_RMID, NULL)"), "{call}"); // yes: the request is live
    (stepped, client, server_pid)
}

#[test]
fn a_client_whose_server_went_away_after_ipc_rmid_fails_instead_of_waiting_for_ever() {
    let lab = Lab::new();
    let (stepped, client, server_pid) = server_stopped_before_ipc_rmid(&lab);
    nix::sys::signal::kill(server_pid, Signal::SIGTERM).unwrap(); // it marks it as it goes
    assert_eq!(stepped.script.finish().code(), Some(143));
    let key = Key::segment(lab.id());
    let message = format!("sipc2: waiting for the reply (segment {key}): {ORPHANED}");
    client.finish().assert_failure(1, &message);
}

/// The client's wait checks the flag, then (every 50 ms) whether it is alone on a removed
/// segment, reading `/proc/sysvipc/shm`, which takes long with many segments. A server that
/// replies, marks the segment for removal and detaches right between the two must not make the
/// completed exchange a failure: the flag is checked once more before the wait gives up.
#[test]
fn a_reply_that_comes_while_the_client_looks_for_its_server_is_not_lost() {
    let segment = Segment::create_private(SIPC_SIZE).unwrap();
    let client = segment.attach().unwrap();
    let area = client.sipc().unwrap();
    area.flag.store(REQUEST, Release);
    let mut server = Some(Attached::attach(segment.id()).unwrap());
    segment.remove().unwrap(); // as sipc1 does before it replies
                               // The first look comes 50 ms into the wait, right after the first check of the flag made
                               // that late: that check finds no reply yet, and the server answers and leaves just after.
    let started = Instant::now();
    let answer_and_leave = |server: Attached<'_>| {
        server.sipc().unwrap().flag.store(EMPTY, Release);
    }; // dropped: shmdt
    let waited = segment.wait_until(
        Deadline::within(Some(Duration::from_secs(10))),
        Awaited::AttachedPeer,
        || {
            let replied = area.flag.load(Acquire) == EMPTY;
            if !replied && started.elapsed() >= Duration::from_millis(50) {
                server.take().map(answer_and_leave);
            }
            replied
        },
    );
    assert!(waited.is_ok(), "{:#}", waited.unwrap_err());
    assert_eq!(segment.stat().unwrap().shm_nattch, 1);
}

#[test]
fn a_waiting_server_whose_segment_is_removed_fails_instead_of_waiting_for_ever() {
    let lab = Lab::new();
    let server = lab.start("sipc1", &[] as &[&str]);
    wait_for_attached(&lab, 1);
    let shmid = segment_of(&lab).unwrap().shmid;
    lab.run("ipcrm", &["-m", &shmid.to_string()])
        .assert_success();
    let key = Key::segment(lab.id());
    let message = format!("sipc1: waiting for a request (segment {key}): {NO_CLIENT}");
    server.finish().assert_failure(1, &message);
}

/// Whether `stderr` is the one line of a server that lost the request to another one.
fn lost_the_claim(stderr: &str, key: Key) -> bool {
    let line = stderr.trim_end();
    line.starts_with(&format!(
        "sipc1: answering the request (segment {key}): another server (pid "
    )) && line.ends_with(") took it first")
        && line.lines().count() == 1
}

/// What the servers of one request did: each either answered it (the number returned) or
/// ended with one of the clear errors of a server that did not — none waits on.
fn answered_once(lab: &Lab, servers: Vec<Running>) -> usize {
    let key = Key::segment(lab.id());
    let mut answered = 0;
    for server in servers {
        let server = server.finish();
        if server.code() == Some(0) {
            assert_eq!(server.lines().len(), 1, "{server}");
            answered += 1;
            continue;
        }
        let removed = format!("sipc1: waiting for a request (segment {key}): {NO_CLIENT}");
        let refused = format!("sipc1: shmget(key {key}): the segment is in use by pid ");
        assert_eq!(server.code(), Some(1), "{server}");
        assert!(
            lost_the_claim(&server.stderr, key)
                || server.stderr.trim_end() == removed
                || server.stderr.starts_with(&refused),
            "{server}"
        );
        assert!(server.stdout.is_empty(), "{server}");
    }
    answered
}

#[test]
fn several_servers_started_at_once_answer_a_request_once_and_all_end() {
    // Each round: three servers (like C servers: no common lock file)
    // start at once. Those that find another one waiting refuse; those that start side by side
    // all wait, and the claim lets one of them answer. None waits on.
    for round in 0..3 {
        let lab = Lab::new();
        let servers: Vec<Running> = (0..3).map(|n| server_with_own_lock(&lab, n, &[])).collect();
        wait_until("each server to wait or to have refused", || {
            let waiting = servers.iter().filter(|s| is_running(s.pid())).count() as u64;
            waiting > 0 && segment_of(&lab).is_some_and(|row| row.nattch == waiting)
        });
        let client = lab.run("sipc2", &[] as &[&str]);
        client.assert_success();
        assert_eq!(answered_once(&lab, servers), 1, "round {round}");
    }
}

#[test]
fn a_request_taken_by_another_server_meanwhile_is_not_answered_twice() {
    // The first server has found the request live and is stopped (--step) before it takes it;
    // the second answers it meanwhile. The first must not answer it again.
    let lab = Lab::new();
    let (stepped, client, first_pid) = server_stopped_before_ipc_rmid(&lab);
    let second = server_with_own_lock(&lab, 2, &[]);
    let second_pid = second.pid();
    second.finish().assert_success();
    let client = client.finish();
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(second_pid)]);
    nix::unistd::write(&stepped.keys, b"c\n").unwrap(); // IPC_RMID, then it would answer
    let run = stepped.script.finish();
    assert_eq!(run.code(), Some(1), "{run}");
    let screen = run.stdout().replace('\r', ""); // the terminal: stdout and stderr
    let key = Key::segment(lab.id());
    let lost = format!(
        "sipc1: answering the request (segment {key}): another server (pid {second_pid}) took it \
         first"
    );
    assert!(screen.contains(&lost), "{screen}");
    assert!(!screen.contains("Received request"), "{screen}");
    assert!(segments_made_by(first_pid).is_empty());
}

#[test]
fn a_second_sipc1_on_the_key_is_refused() {
    let lab = Lab::new();
    let first = lab.start("sipc1", &[] as &[&str]);
    wait_for_attached(&lab, 1);
    let second = lab.run("sipc1", &["--timeout", "5"]);
    second.assert_failure(
        1,
        &format!(
            "sipc1: shmget(key {}): another sipc1 (pid {}) is already serving this segment; stop \
             it first, or use another --id (or IPCLAB_ID)",
            Key::segment(lab.id()),
            first.pid()
        ),
    );
    assert!(second.stdout.is_empty());
    let client = lab.run("sipc2", &[] as &[&str]);
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(first.pid())]);
    first.finish().assert_success();
}

// ---- a client that has gone, two clients, a segment that is not ours -------------------------

/// Leaves a stale request in the lab's segment: a sipc2 killed (SIGKILL) once it has sent
/// its request. Returns its PID.
pub(crate) fn leave_a_stale_request(lab: &Lab) -> Pid {
    let killed = lab.start("sipc2", &[] as &[&str]);
    killed.wait_for_stdout("Sent a request.....");
    killed.signal(Signal::SIGKILL);
    let pid = killed.pid();
    killed.finish();
    pid
}

#[test]
fn a_stale_request_of_a_killed_client_is_reported_and_not_answered() {
    let lab = Lab::new();
    let killed_pid = leave_a_stale_request(&lab);
    assert_eq!(
        segment_of(&lab).map(|r| r.nattch),
        Some(0),
        "left with its request"
    );

    let server = lab.start("sipc1", &[] as &[&str]);
    server.wait_for_stderr(&format!(
        "sipc1: stale request \"This is a request from {killed_pid}.\" in segment {}: its \
         client has gone (nobody else is attached); not answered",
        Key::segment(lab.id())
    ));
    let client = lab.start("sipc2", &[] as &[&str]);
    let client_pid = client.pid();
    client.finish().assert_success();
    let server = server.finish();
    assert_eq!(server.lines(), [request_line(client_pid)], "{server}");
    assert_eq!(server.stderr.lines().count(), 1, "{server}");
}

#[test]
fn a_client_replaces_a_stale_request_and_is_answered() {
    let lab = Lab::new();
    leave_a_stale_request(&lab);

    let client = lab.start("sipc2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let server = lab.start("sipc1", &[] as &[&str]);
    let server_pid = server.pid();
    server.finish().assert_success();
    let client = client.finish();
    assert!(client.status.success(), "{client}");
    assert!(
        client.stderr.contains("replacing a stale request"),
        "{client}"
    );
    assert_eq!(client.lines(), [reply_line(server_pid)]);
}

#[test]
fn a_second_client_while_a_request_waits_fails_at_once() {
    let lab = Lab::new();
    let first = lab.start("sipc2", &[] as &[&str]);
    first.wait_for_stdout("Sent a request.....");
    let second = lab.run("sipc2", &[] as &[&str]);
    second.assert_failure(
        1,
        &format!(
            "sipc2: sending the request (segment {}): another request is waiting (another \
             sipc2?); try again later",
            Key::segment(lab.id())
        ),
    );
    assert!(second.stdout.is_empty());
    let server = lab.start("sipc1", &[] as &[&str]);
    let server_pid = server.pid();
    server.finish().assert_success();
    assert_eq!(first.finish().lines(), [reply_line(server_pid)]);
}

fn both_refuse(lab: &Lab, message: &str) {
    for program in ["sipc1", "sipc2"] {
        let run = lab.run(program, &["--timeout", "5"]);
        run.assert_failure(
            1,
            &format!(
                "{program}: shmget(key {}): {message}",
                Key::segment(lab.id())
            ),
        );
        assert!(run.stdout.is_empty(), "{run}");
    }
}

#[test]
fn a_segment_open_to_others_is_refused_naming_the_id_and_left_alone() {
    let lab = Lab::new();
    let squatter = CPeer::create(&lab, SIPC_SIZE, 0o666);
    squatter.write_text(&c_string("forged"));
    both_refuse(
        &lab,
        "its mode 666 lets other users in (expected 600); use another --id (or IPCLAB_ID)",
    );
    assert_eq!(&squatter.text()[..7], b"forged\0");
    assert_eq!(squatter.area().flag.load(Relaxed), EMPTY);
    squatter.remove();
}

#[test]
fn a_segment_of_another_user_is_refused_naming_the_id() {
    if !nix::unistd::geteuid().is_root() {
        return; // only root can give a segment to another user
    }
    let lab = Lab::new();
    let squatter = CPeer::create(&lab, SIPC_SIZE, 0o600);
    let mut ds = shm::ipc_stat(squatter.id).unwrap();
    ds.shm_perm.uid = 65534;
    shmctl(squatter.id, libc::IPC_SET, Some(&mut ds)).unwrap();
    both_refuse(
        &lab,
        "it belongs to another user (uid 65534, creator 0); use another --id (or IPCLAB_ID)",
    );
    squatter.remove();
}

#[test]
fn a_segment_too_small_is_refused() {
    let lab = Lab::new();
    let small = CPeer::create(&lab, 512, 0o600);
    both_refuse(
        &lab,
        &format!(
            "it exists with fewer than 1024 bytes; remove it (make ipcclean ID={}) or use \
             another --id",
            lab.id()
        ),
    );
    small.remove();
}

/// Says on the real stderr (not captured by the test harness) that a test did not run.
fn skipped(what: &str, why: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {what}: {why}");
}

#[test]
fn a_segment_too_small_of_another_user_is_refused_without_suggesting_ipcrm() {
    if !nix::unistd::geteuid().is_root() {
        let what = "a_segment_too_small_of_another_user_is_refused_without_suggesting_ipcrm";
        return skipped(what, "only root can give a segment to another user");
    }
    let lab = Lab::new();
    let small = CPeer::create(&lab, 512, 0o600);
    let mut ds = shm::ipc_stat(small.id).unwrap();
    ds.shm_perm.uid = 65534;
    shmctl(small.id, libc::IPC_SET, Some(&mut ds)).unwrap();
    both_refuse(
        &lab,
        "it exists with fewer than 1024 bytes, and it belongs to another user (uid 65534, \
         creator 0); use another --id (or IPCLAB_ID)",
    );
    small.remove();
}

#[test]
fn a_segment_larger_than_the_system_allows_gets_a_hint() {
    // A new IPC namespace has limits of its own: lower shmmax there only.
    let what = "a_segment_larger_than_the_system_allows_gets_a_hint";
    let lab = Lab::new();
    let probe = lab.run("unshare", &["-i", "true"]);
    if !probe.status.success() {
        return skipped(what, &format!("no IPC namespace: {}", probe.stderr.trim()));
    }
    for (program, size) in [("sipc1", 1024), ("sipc2", 1024), ("shm", 100000)] {
        let shell = r#"echo 512 >/proc/sys/kernel/shmmax && exec "$0""#;
        let run = lab.run("unshare", &["-i", "sh", "-c", shell, exe(program).unwrap()]);
        let call = match program {
            "shm" => format!("shmget(IPC_PRIVATE, {size} bytes)"),
            _ => format!("shmget(key {})", Key::segment(lab.id())),
        };
        run.assert_failure(
            1,
            &format!(
                "{program}: {call}: EINVAL: Invalid argument: this system allows segments of at \
                 most 512 \
                 bytes (kernel.shmmax); raise the limit (as root: sysctl -w kernel.shmmax={size})"
            ),
        );
    }
}

// ---- garbage in the segment ------------------------------------------------------------------

#[test]
fn a_request_without_nul_is_answered_without_reading_past_the_segment() {
    let lab = Lab::new();
    let client = CPeer::create(&lab, SIPC_SIZE, 0o600);
    client.write_text(&[0xff; SIPC_SIZE - 4]); // no NUL, not UTF-8
    client.area().flag.store(REQUEST, Release);
    let server = lab.start("sipc1", &[] as &[&str]);
    let reply = c_string(&format!("This is a reply from {}.", server.pid()));
    let server = server.finish();
    assert!(server.status.success(), "{server}");
    let complaint = "sipc1: request: text without NUL in its 1020 bytes; answered anyway";
    assert_eq!(server.stderr.trim_end(), complaint, "{server}");
    let shown = r"\377".repeat(SIPC_SIZE - 4);
    assert_eq!(
        server.lines(),
        [format!("Received request: {shown}.....Replied.")]
    );
    assert_eq!(client.area().flag.load(Acquire), EMPTY);
    assert_eq!(client.text()[..reply.len()], reply);
    drop(client); // sipc1 marked it for removal: the last detach frees it
}

#[test]
fn a_flag_left_by_a_process_that_has_gone_is_reported_and_replaced_and_a_garbage_reply_is_shown() {
    let lab = Lab::new();
    let key = Key::segment(lab.id());
    let id = shmget(key, SIPC_SIZE, libc::IPC_CREAT | 0o600).unwrap();
    let left = Attached::attach(id).unwrap();
    left.sipc().unwrap().flag.store(7, Relaxed); // neither 0 nor 1: left by who knows what
    drop(left); // and gone
    let client = lab.start("sipc2", &[] as &[&str]);
    client.wait_for_stdout("Sent a request.....");
    let server = CPeer::create(&lab, SIPC_SIZE, 0o600); // finds the client's segment
    server.wait_for_flag(REQUEST);
    server.write_text(&[b'x'; SIPC_SIZE - 4]); // no NUL anywhere
    server.write_text(b"\x1b[2J\xc3(\n"); // an escape sequence, bad UTF-8, a newline
    server.area().flag.store(EMPTY, Release);
    let client = client.finish();
    assert!(client.status.success(), "{client}");
    assert_eq!(
        client.stderr.lines().collect::<Vec<_>>(),
        [
            format!(
                "sipc2: the flag of segment {key} holds 7, neither 0 (empty) nor 1 (a request), \
                 left by a process that has gone (nobody else is attached); replacing it"
            )
            .as_str(),
            "sipc2: reply: text without NUL in its 1020 bytes"
        ],
        "{client}"
    );
    let expected = format!(r"\33[2J\303(\n{}", "x".repeat(SIPC_SIZE - 4 - 7));
    assert_eq!(
        client.lines(),
        [format!("Sent a request.....Received reply: {expected}")]
    );
    server.remove();
}

#[test]
fn a_flag_neither_0_nor_1_in_use_is_reported_not_overwritten_or_waited_on() {
    let lab = Lab::new();
    let key = Key::segment(lab.id());
    let other = CPeer::create(&lab, SIPC_SIZE, 0o600); // a program still attached
    for value in [2, -1, 7] {
        other.area().flag.store(value, Relaxed);
        for (program, doing) in [
            ("sipc1", "waiting for a request"),
            ("sipc2", "sending the request"),
        ] {
            let run = lab.run(program, &["--timeout", "10"]);
            run.assert_failure(
                1,
                &format!(
                    "{program}: {doing} (segment {key}): the flag of segment {key} holds {value}, \
                     neither 0 (empty) nor 1 (a request); is another program using this key? use \
                     another --id (or IPCLAB_ID)"
                ),
            );
            assert!(run.stdout.is_empty(), "{run}");
            assert_eq!(other.area().flag.load(Relaxed), value, "{run}");
        }
    }
    other.remove();
}

#[test]
fn a_server_resets_a_flag_left_by_a_process_that_has_gone_and_serves() {
    let lab = Lab::new();
    let key = Key::segment(lab.id());
    let id = shmget(key, SIPC_SIZE, libc::IPC_CREAT | 0o600).unwrap();
    Attached::attach(id)
        .unwrap()
        .sipc()
        .unwrap()
        .flag
        .store(-1, Relaxed); // and detached
    let server = lab.start("sipc1", &[] as &[&str]);
    server.wait_for_stderr(&format!(
        "sipc1: the flag of segment {key} holds -1, neither 0 (empty) nor 1 (a request), left \
         by a process that has gone (nobody else is attached); reset to 0"
    ));
    let client = lab.start("sipc2", &[] as &[&str]);
    let client_pid = client.pid();
    client.finish().assert_success();
    let server = server.finish();
    assert!(server.status.success(), "{server}");
    assert_eq!(server.lines(), [request_line(client_pid)], "{server}");
}

#[test]
fn a_segment_of_our_own_with_mode_0700_is_used() {
    // The owner's execute bit lets nobody else in: not a reason to refuse.
    let lab = Lab::new();
    let client = CPeer::create(&lab, SIPC_SIZE, 0o700);
    client.write_text(&c_string("This is a request from 4242."));
    client.area().flag.store(REQUEST, Release);
    let server = lab.start("sipc1", &[] as &[&str]);
    let reply = c_string(&format!("This is a reply from {}.", server.pid()));
    server.finish().assert_success();
    assert_eq!(client.text()[..reply.len()], reply);
    drop(client);

    let lab = Lab::new();
    let server = CPeer::create(&lab, SIPC_SIZE, 0o700);
    let client = lab.start("sipc2", &[] as &[&str]);
    server.wait_for_flag(REQUEST);
    server.write_text(&c_string("This is a reply from 4242."));
    server.area().flag.store(EMPTY, Release);
    let client = client.finish();
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(Pid::from_raw(4242))]);
    server.remove();
}

#[test]
fn a_peers_text_reads_the_same_on_stdout_as_in_a_warning() {
    // C notation for both: `\33` for ESC, as --trace and strace write it.
    let lab = Lab::new();
    let text = "esc\x1b[2J \\ tab\t";
    let client = CPeer::create(&lab, SIPC_SIZE, 0o600);
    client.write_text(&c_string(text));
    client.area().flag.store(REQUEST, Release);
    drop(client); // gone: its request is stale
    let server = lab.start("sipc1", &[] as &[&str]);
    let shown = r"esc\33[2J \\ tab\t";
    server.wait_for_stderr(&format!("sipc1: stale request \"{shown}\" in segment "));
    let client = CPeer::create(&lab, SIPC_SIZE, 0o600); // a live C client with the same text
    client.write_text(&c_string(text));
    client.area().flag.store(REQUEST, Release);
    let server = server.finish();
    assert!(server.status.success(), "{server}");
    assert_eq!(
        server.lines(),
        [format!("Received request: {shown}.....Replied.")]
    );
}

proptest! {
    #[test]
    fn any_bytes_decode_or_are_rejected_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..2100)) {
        match ipclab::layout::text::decode_text(&bytes) {
            Ok(text) => {
                prop_assert!(bytes.contains(&0));
                prop_assert!(!text.chars().any(char::is_control));
            }
            Err(bad) => {
                prop_assert!(!bytes.contains(&0));
                prop_assert_eq!(bad.len, bytes.len());
                prop_assert!(!bad.shown.chars().any(char::is_control));
            }
        }
    }

    #[test]
    fn any_text_that_fits_is_read_back_as_written(text in "[ -~]{0,1015}") {
        let area = Sipc::new();
        area.write_bytes(&[b'#'; SIPC_SIZE - 4]); // garbage after the NUL, up to the end
        area.put(&text, EMPTY).unwrap();
        prop_assert_eq!(area.take().1.unwrap(), text.replace('\\', r"\\")); // C notation
    }

    #[test]
    fn any_text_field_is_read_within_its_1020_bytes(bytes in prop::collection::vec(any::<u8>(), SIPC_SIZE - 4)) {
        let area = Sipc::new();
        area.write_bytes(&bytes);
        prop_assert_eq!(area.text_bytes().to_vec(), bytes.clone());
        prop_assert_eq!(area.take().1, ipclab::layout::text::decode_text(&bytes));
    }
}

// ---- stdout, options, --stat, --trace --------------------------------------------------------

#[test]
fn a_server_whose_stdout_fails_still_answers_and_leaves_nothing() {
    let lab = Lab::new();
    let sipc1 = exe("sipc1").unwrap();
    let server = lab.start("sh", &["-c", r#"exec "$0" >/dev/full"#, sipc1]);
    wait_for_attached(&lab, 1);
    let client = lab.run("sipc2", &[] as &[&str]);
    client.assert_success();
    assert!(client
        .stdout()
        .starts_with("Sent a request.....Received reply: This is a reply from "));
    server.finish().assert_failure(
        1,
        "sipc1: writing to stdout: ENOSPC: No space left on device",
    );
}

#[test]
fn a_server_whose_stdout_blocks_answers_first() {
    // sipc1's stdout is a pipe that is full and that nobody reads yet: printing blocks. The
    // client gets its reply all the same; the lines follow once the pipe is read.
    let lab = Lab::new();
    let pipe = lab.dir().join("stdout.pipe");
    nix::unistd::mkfifo(&pipe, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let ends = nix::fcntl::open(&pipe, flags, nix::sys::stat::Mode::empty()).unwrap();
    for chunk in [4096, 1] {
        while nix::unistd::write(&ends, &vec![b'#'; chunk]).is_ok() {}
    }
    let sipc1 = exe("sipc1").unwrap();
    let server = lab.start("sh", &["-c", r#"exec "$0" >stdout.pipe"#, sipc1]);
    wait_for_attached(&lab, 1);
    let client = lab.start("sipc2", &["--timeout", "10"]);
    let client_pid = client.pid();
    let client = client.finish();
    client.assert_success();
    assert_eq!(client.lines(), [reply_line(server.pid())]);

    let mut read = Vec::new();
    let expected = format!("{}\n", request_line(client_pid));
    wait_until("sipc1's lines in the pipe", || {
        let mut buf = [0u8; 65536];
        while let Ok(n @ 1..) = nix::unistd::read(&ends, &mut buf) {
            read.extend(buf[..n].iter().filter(|&&b| b != b'#'));
        }
        read.len() >= expected.len()
    });
    assert_eq!(String::from_utf8_lossy(&read), expected);
    server.finish().assert_success();
}

#[test]
fn a_client_whose_reader_goes_early_ends_quietly_and_leaves_nothing() {
    let lab = Lab::new();
    let server = lab.start("sipc1", &[] as &[&str]);
    wait_for_attached(&lab, 1);
    let sipc2 = exe("sipc2").unwrap();
    let client = lab.run("sh", &["-c", r#""$0" | head -c1"#, sipc2]);
    client.assert_success();
    assert_eq!(client.stdout(), "S");
    server.finish().assert_success();
}

#[test]
fn bad_options_are_usage_errors() {
    let lab = Lab::new();
    for (program, args) in [
        ("sipc1", vec!["--id", "0x1000"]),
        ("sipc2", vec!["--timeout", "0"]),
        ("sipc2", vec!["--timeout", "-1"]),
        ("sipc1", vec!["--timeout", "soon"]),
        ("shm", vec!["--id", "5"]),
        ("sipc2", vec!["extra"]),
    ] {
        let run = lab.run(program, &args);
        assert_eq!(run.code(), Some(2), "{run}");
        assert!(run.stdout.is_empty(), "{run}");
    }
}

/// The fields of `--stat`'s block after `step` in `out` (see `ipclab::stat`), as (name, value):
/// `shm_perm.key 0x9005` and the like for the `ipc_perm` row, `shm_nattch 1` for the others. The
/// header's snapshot time must be a time of day to the microsecond.
fn stat_fields(out: &str, step: &str) -> Vec<(String, String)> {
    let head = format!("  [shmid_ds after {step}] shmid ");
    let at = out
        .find(&head)
        .unwrap_or_else(|| panic!("no {head:?} in\n{out}"));
    let mut lines = out[at..].lines();
    let header = lines.next().unwrap();
    let time = header.rsplit_once(", at ").unwrap().1;
    assert!(
        is_clock(&time[..8]) && time.len() == 15 && &time[8..9] == ".",
        "{header}"
    );
    let mut fields = Vec::new();
    for row in lines.take(4) {
        let mut perm = None;
        for item in row.trim().split(", ") {
            let words: Vec<&str> = item.split_whitespace().collect();
            let (name, value) = match (words.as_slice(), perm) {
                ([group, name, value], _) => {
                    perm = Some(*group);
                    (format!("{group}.{name}"), *value)
                }
                ([name, value], Some(group)) => (format!("{group}.{name}"), *value),
                ([name, value], None) => (name.to_string(), *value),
                _ => panic!("{item:?} in {row:?}"),
            };
            fields.push((name, value.to_owned()));
        }
    }
    fields
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    &fields.iter().find(|(n, _)| n == name).unwrap().1
}

fn is_clock(text: &str) -> bool {
    text.len() == 8
        && text
            .split(':')
            .all(|p| p.len() == 2 && p.parse::<u8>().is_ok())
}

#[test]
fn stat_prints_the_slides_fields_after_each_step() {
    let lab = Lab::new();
    let server = lab.start("sipc1", &["--stat"]);
    wait_for_attached(&lab, 1);
    let client = lab.start("sipc2", &["--stat"]);
    let (server_pid, client_pid) = (server.pid(), client.pid());
    let (spid, cpid) = (server_pid.to_string(), client_pid.to_string());
    let client = client.finish();
    client.assert_success();
    let server = server.finish();
    server.assert_success();
    let key = Key::segment(lab.id()).to_string();

    let names = [
        "shm_perm.key",
        "shm_perm.uid",
        "shm_perm.cuid",
        "shm_perm.mode",
        "shm_segsz",
        "shm_nattch",
        "shm_cpid",
        "shm_lpid",
        "shm_atime",
        "shm_dtime",
        "shm_ctime",
    ];
    let out = server.stdout();
    let made = stat_fields(&out, "shmget");
    assert_eq!(
        made.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
        names
    );
    let expect = |fields: &[(String, String)], pairs: &[(&str, &str)]| {
        for (name, value) in pairs {
            assert_eq!(field(fields, name), *value, "{name}\n{out}");
        }
    };
    expect(&made, &[("shm_perm.key", &key), ("shm_perm.mode", "0600")]);
    expect(
        &made,
        &[
            ("shm_segsz", "1024"),
            ("shm_nattch", "0"),
            ("shm_cpid", &spid),
        ],
    );
    expect(
        &made,
        &[("shm_lpid", "0"), ("shm_atime", "-"), ("shm_dtime", "-")],
    );
    assert!(is_clock(field(&made, "shm_ctime")), "{out}");
    let attached = stat_fields(&out, "shmat");
    expect(&attached, &[("shm_nattch", "1"), ("shm_lpid", &spid)]);
    assert!(is_clock(field(&attached, "shm_atime")), "{out}");
    let came = stat_fields(&out, "the request came");
    expect(
        &came,
        &[
            ("shm_nattch", "2"),
            ("shm_lpid", &cpid),
            ("shm_cpid", &spid),
        ],
    );
    let replied = stat_fields(&out, "the reply");
    expect(
        &replied,
        &[
            ("shm_perm.key", "IPC_PRIVATE"),
            ("shm_perm.mode", "0600|SHM_DEST"),
        ],
    );
    assert!(out.contains(&request_line(client_pid)), "{out}");

    let out = client.stdout();
    expect(
        &stat_fields(&out, "shmget"),
        &[("shm_nattch", "1"), ("shm_cpid", &spid)],
    );
    expect(
        &stat_fields(&out, "shmat"),
        &[("shm_nattch", "2"), ("shm_lpid", &cpid)],
    );
    expect(&stat_fields(&out, "the request"), &[("shm_nattch", "2")]);
    expect(
        &stat_fields(&out, "the reply"),
        &[("shm_perm.mode", "0600|SHM_DEST")],
    );
    assert!(out.contains(&reply_line(server_pid)), "{out}");
}

/// The calls of `--trace` lines (`[sipc1 4711] shmget(0x9005, …) = 27`) or of strace's
/// (`4711  shmget(0x9005, …) = 27`), as (name, first word of the result).
fn calls(lines: &str, trace: bool) -> Vec<(String, String)> {
    lines
        .lines()
        .filter_map(|line| {
            let call = if trace {
                line.split_once("] ")?.1
            } else {
                line.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
            };
            let name = call.split_once('(')?.0;
            let result = if trace {
                call.split_once(" = ")?.1
            } else {
                call.rsplit_once(" = ")?.1
            };
            Some((name.to_owned(), result.split(' ').next()?.to_owned()))
        })
        .collect()
}

#[test]
fn trace_names_each_call_as_strace_sees_it_with_the_real_values() {
    let lab = Lab::new();
    let syscalls = lab.dir().join("strace.out");
    let strace = |program: &str| {
        let path = exe(program).unwrap();
        let out = syscalls.with_extension(program);
        let list = "trace=shmget,shmat,shmctl,shmdt";
        let args = [
            "-f",
            "-qq",
            "-o",
            out.to_str().unwrap(),
            "-e",
            list,
            path,
            "--trace",
        ];
        (lab.start("strace", &args), out)
    };
    let (server, server_calls) = strace("sipc1");
    wait_for_attached(&lab, 1);
    let (client, client_calls) = strace("sipc2");
    let client = client.finish();
    assert!(client.status.success(), "{client}");
    let server = server.finish();
    assert!(server.status.success(), "{server}");

    for (run, file, program) in [
        (&server, server_calls, "sipc1"),
        (&client, client_calls, "sipc2"),
    ] {
        let traced = calls(&run.stderr, true);
        let seen = calls(&std::fs::read_to_string(file).unwrap(), false);
        assert_eq!(traced, seen, "{program}: --trace and strace differ\n{run}");
        let names: Vec<&str> = traced.iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names.first(), Some(&"shmget"), "{run}");
        assert!(
            names.contains(&"shmat") && names.contains(&"shmdt"),
            "{run}"
        );
    }
    assert!(calls(&server.stderr, true).contains(&("shmctl".into(), "0".into())));
    assert!(server.stderr.contains("shmctl("), "{server}");
    assert!(server.stderr.contains(", IPC_RMID, NULL) = 0"), "{server}");
}
